"""What a start, `status`, `report` and the clinic's state document read: their window of
the log, not the whole of it (the indexes they use, the snapshot, quick_check once a boot)."""
from __future__ import annotations

import random
from datetime import timedelta

import pytest

import dispenser.chaincheck as chaincheck
import dispenser.clocktrust as clocktrust
import dispenser.store as store_module
from dispenser.chaincheck import ChainCheck
from dispenser.engine import Engine
from dispenser.report import REACH, adherence, checkin_trend, window_events
from dispenser.store import Store
from dispenser.timeutil import parse_utc
from harness.simulation import Simulation
from support import Rig, daily, schedule

DEVICE = "disp-sim"


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """A few simulated weeks on a file: changes, power cuts, clock jumps, as-needed doses."""
    path = tmp_path_factory.mktemp("q") / "sim.db"
    result = Simulation(14, 30, db=str(path)).run()
    return path, result


def as_data(reports: dict) -> dict:
    return {key: (report.as_dict(), dict(report.days)) for key, report in reports.items()}


def test_a_report_from_its_window_is_the_report_from_the_whole_log(simulated):
    path, result = simulated
    with Store.open(path, DEVICE) as store:
        events = list(store.events())
        first, last = parse_utc(events[0]["at"]), parse_utc(events[-1]["at"])
        rng = random.Random(14)
        tz = __import__("zoneinfo").ZoneInfo("UTC")
        for _ in range(25):
            start = first + (last - first) * rng.random() - timedelta(days=1)
            end = start + timedelta(days=rng.choice([1, 3, 7, 30]))
            window = window_events(store, start)
            assert len(window) < len(events) or start - REACH <= first
            assert as_data(adherence(window, start, end, tz)) == as_data(adherence(events, start, end, tz))
            assert checkin_trend(window, start, end) == checkin_trend(events, start, end)


def test_the_first_seq_at_a_moment_is_found_by_the_index(simulated):
    path, _ = simulated
    with Store.open(path, DEVICE) as store:
        events = list(store.events())
        rng = random.Random(3)
        moments = [parse_utc(e["at"]) for e in rng.sample(events, 30)]
        moments += [parse_utc(events[0]["at"]) - timedelta(days=1), parse_utc(events[-1]["at"]) + timedelta(days=1)]
        for moment in moments:
            expected = next((e["seq"] for e in events if parse_utc(e["at"]) >= moment), len(events) + 1)
            assert store.first_seq_at(moment) == expected
        plan = store.db.execute("EXPLAIN QUERY PLAN SELECT seq FROM events WHERE at >= ? ORDER BY at, seq LIMIT 1",
                                ["2026"]).fetchall()
        assert "INDEX events_at" in str(plan)


def test_open_release_intents_are_found_without_reading_the_log(simulated):
    path, _ = simulated
    with Store.open(path, DEVICE) as store:
        plan = str(store.db.execute(
            "EXPLAIN QUERY PLAN SELECT e.seq FROM releases r CROSS JOIN events e ON e.event_id = r.event_id "
            "WHERE r.outcome IS NULL ORDER BY e.seq").fetchall())
        assert "releases_open" in plan and "SCAN e" not in plan
        open_ids = {row[0] for row in store.db.execute("SELECT event_id FROM releases WHERE outcome IS NULL")}
        assert {e["event_id"] for e in store.open_releases()} == open_ids


def test_a_start_after_a_stop_folds_nothing_but_what_came_after(simulated, tmp_path):
    path = tmp_path / "d.db"
    path.write_bytes(simulated[0].read_bytes())
    with Store.open(path, DEVICE) as store:
        whole = Engine(store, 8, "UTC")  # the simulation's last snapshot, and its tail
        whole.stop(parse_utc(store.last_event()["at"]))
        assert Engine(store, 8, "UTC").tail_folded == 0
        assert Engine(store, 8, "UTC", snapshots=False).tail_folded == store.event_count()


def test_quick_check_reads_the_file_once_per_boot_and_never_before_ready(tmp_path, monkeypatch):
    path = tmp_path / "d.db"
    Store.open(path, DEVICE).close()
    checks = []  # (who, whether the whole file was read)
    real_identity, real_whole = store_module._check_identity, chaincheck.whole_file_problem
    monkeypatch.setattr(store_module, "_check_identity",
                        lambda db, p, device, quick=True: (checks.append(("open", quick)), real_identity(db, p, device, quick))[1])
    monkeypatch.setattr(chaincheck, "whole_file_problem", lambda conn: (checks.append(("after READY", True)), real_whole(conn))[1])

    def daemon_starts() -> None:
        """The daemon's start: its log and its sync's connection, READY, then the background check."""
        Store.open(path, DEVICE, check_later=True).close()
        Store.open_outbox(path, DEVICE, check_later=True).close()
        assert ChainCheck(str(path), DEVICE, lambda item: None, pause_s=0, whole_file=True).run()[0]

    monkeypatch.setattr(clocktrust, "boot_id", lambda path=None: "boot-1")
    Store.open(path, DEVICE).close()                 # a command before the daemon: checked
    daemon_starts()                                  # the first start this boot: checked after READY, recorded
    daemon_starts()                                  # a restart in the same boot: not again
    Store.open(path, DEVICE).close()                 # `dispenser status`
    assert checks == [("open", True), ("open", False), ("open", False), ("after READY", True),
                      ("open", False), ("open", False), ("open", False)]
    monkeypatch.setattr(clocktrust, "boot_id", lambda path=None: "boot-2")
    del checks[:]
    daemon_starts()                                  # after a reboot: checked again, after READY
    monkeypatch.setattr(clocktrust, "boot_id", lambda path=None: None)
    Store.open(path, DEVICE).close()                 # no boot id (not Linux): always checked
    daemon_starts()
    assert checks == [("open", False), ("open", False), ("after READY", True),
                      ("open", True), ("open", False), ("open", False), ("after READY", True)]


def test_a_damaged_file_is_reported_after_ready_and_refused_by_the_commands_of_the_boot(tmp_path, monkeypatch):
    path = tmp_path / "d.db"
    monkeypatch.setattr(clocktrust, "boot_id", lambda path=None: "boot-1")
    Store.open(path, DEVICE).close()
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    data[2 * page:3 * page] = b"\xa5" * page
    path.write_bytes(bytes(data))
    monkeypatch.setattr(clocktrust, "boot_id", lambda path=None: "boot-2")
    reported: list = []
    try:
        Store.open(path, DEVICE, check_later=True).close()  # the page may be one the start reads: refused
    except store_module.StoreError:
        pass
    result = ChainCheck(str(path), DEVICE, reported.append, pause_s=0, whole_file=True).run()
    assert result[:2] == (False, None) and result[2].startswith("database is damaged (")
    assert [(item.seq, item.reason) for item in reported] == [(None, result[2])]
    with pytest.raises(store_module.StoreError, match="database is damaged"):
        Store.open(path, DEVICE)  # a failed check is not recorded: `status` in this boot still refuses it


def test_parsed_schedules_of_the_past_are_not_kept(tmp_path):
    rig = Rig(schedule(daily("a", 1, ["08:00"])), "2026-11-20 07:00", stock={"a": 30}, db=str(tmp_path / "d.db"))
    for version in range(2, 12):
        document = schedule(daily("a", 1, [f"{7 + version % 3:02d}:00"]), version=version)
        assert rig.engine.apply_schedule(rig.at(f"2026-11-{19 + version} 12:00"), document, "local").feedback == "applied"
    rig.engine.stop(rig.at("2026-12-01 13:00"))
    assert len(rig.engine._schedules) <= 2
    assert len(Engine(rig.store, 8, "America/New_York")._schedules) == 1


def test_log_since_reads_from_its_first_seq_and_prints_what_it_printed(simulated, tmp_path, capsys):
    import json

    from dispenser import cli
    path, _ = simulated
    config = tmp_path / "config.toml"
    config.write_text(f'[device]\nid = "{DEVICE}"\n')
    with Store.open(path, DEVICE) as store:
        events = list(store.events())
    for moment in (events[0]["at"], events[len(events) // 2]["at"], events[-1]["at"], "2000-01-01T00:00:00Z"):
        assert cli.main(["log", "--since", moment, "--json", "--config", str(config), "--db", str(path)]) == 0
        printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert printed == [e for e in events if parse_utc(e["at"]) >= parse_utc(moment)]
