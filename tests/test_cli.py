"""The `dispenser` command as a person or a script uses it: real files; the commands run in this
process (tests/inprocess.py), the installed console script once as a real process."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from inprocess import dispenser
from support import DEMO


def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return dispenser(*args, **kwargs)


@pytest.fixture
def device(tmp_path):
    """A config and a database with the demo schedule applied and stocked."""
    db = tmp_path / "state" / "dispenser.db"
    config = tmp_path / "config.toml"
    config.write_text(f'[device]\nid = "disp-0042"\ntimezone = "America/New_York"\n'
                      f'[hardware]\nbackend = "sim"\ncompartments = 8\n[storage]\ndb = "{db}"\n')
    result = run("schedule", "apply", str(DEMO / "schedule.json"), "--config", str(config))
    assert result.returncode == 0, result.stderr
    return config, db


def one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]


# -- schedule --------------------------------------------------------------------------------


def test_schedule_validate_accepts_the_contract_example():
    result = run("schedule", "validate", str(DEMO / "schedule.json"))
    assert result.returncode == 0 and "valid, version 12" in result.stdout


def test_schedule_validate_names_each_problem_with_its_path(tmp_path):
    document = json.loads((DEMO / "schedule.json").read_text())
    document["medications"][1]["dosage"][0]["timing"]["repeat"]["periodUnit"] = "mo"
    document["medications"][0]["compartment"] = 0
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    result = run("schedule", "validate", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert any(line.startswith('medications[1].dosage[0].timing.repeat.periodUnit: "mo"') for line in lines)
    assert any(line.startswith("medications[0].compartment") for line in lines)
    assert len(lines) == 2


@pytest.mark.parametrize("content, needle", [(None, "no such file"), ("{not json", "JSON")])
def test_schedule_validate_missing_or_broken_file(tmp_path, content, needle):
    path = tmp_path / "s.json"
    if content is not None:
        path.write_text(content)
    one_line_error(run("schedule", "validate", str(path)), needle)


def test_schedule_show_json_matches_the_contract_shape():
    result = run("schedule", "show", "--file", str(DEMO / "schedule.json"), "--from", "2026-11-24T00:00:00",
                 "--days", "1", "--json")
    assert result.returncode == 0, result.stderr
    doses = json.loads(result.stdout)
    assert doses == [
        {"medication_id": "sertraline", "scheduled_at": "2026-11-24T13:00:00Z", "quantity": 1,
         "window_start": "2026-11-24T12:30:00Z", "window_end": "2026-11-24T15:00:00Z"},
        {"medication_id": "naltrexone", "scheduled_at": "2026-11-24T14:00:00Z", "quantity": 1,
         "window_start": "2026-11-24T13:30:00Z", "window_end": "2026-11-24T16:00:00Z"},
    ]


def test_schedule_show_counts_local_days_across_a_dst_change():
    """7 days from the Saturday before the fall-back Sunday still end at the same local time."""
    result = run("schedule", "show", "--file", str(DEMO / "schedule.json"), "--from", "2026-10-31T08:30:00",
                 "--days", "7", "--json")
    doses = json.loads(result.stdout)
    sertraline = [d["scheduled_at"] for d in doses if d["medication_id"] == "sertraline"]
    # [Oct 31 08:30 EDT, Nov 7 08:30 EST): 08:00 on Nov 1 (EST from 02:00 that day) to Nov 7
    assert sertraline == [f"2026-11-0{day}T13:00:00Z" for day in range(1, 8)]


def test_schedule_show_at_the_edges_of_time_answers_in_one_line():
    far = run("schedule", "show", "--file", str(DEMO / "schedule.json"), "--from", "9999-12-31T00:00:00")
    one_line_error(far, "reach past the year 9999")
    early = run("schedule", "show", "--file", str(DEMO / "schedule.json"), "--from", "0001-01-01T00:00:00")
    assert early.returncode == 0 and early.stdout == "no doses in that time\n", early.stderr


def test_schedule_validate_names_both_overlapping_entries(tmp_path):
    document = json.loads((DEMO / "schedule.json").read_text())
    document["medications"][1]["dosage"][0]["timing"]["repeat"]["boundsPeriod"]["end"] = "2026-11-27"
    (tmp_path / "v1.json").write_text(json.dumps(document))
    result = run("schedule", "validate", str(tmp_path / "v1.json"))
    assert result.returncode == 2 and result.stderr.strip() == (
        "medications[1].dosage[1].timing.repeat.boundsPeriod: overlaps medications[1].dosage[0] (2026-11-27)")


def test_schedule_apply_refuses_a_stale_version_and_changes_nothing(device):
    config, db = device
    before = run("log", "--json", "--config", str(config)).stdout
    result = run("schedule", "apply", str(DEMO / "schedule.json"), "--config", str(config))
    one_line_error(result, "stale_version")
    after = run("log", "--json", "--config", str(config)).stdout.splitlines()
    assert after[: len(before.splitlines())] == before.splitlines()
    assert json.loads(after[-1])["type"] == "schedule.rejected"  # the refusal itself is logged


def test_schedule_apply_of_an_invalid_file_writes_nothing(device, tmp_path):
    config, db = device
    count = len(run("log", "--json", "--config", str(config)).stdout.splitlines())
    path = tmp_path / "bad.json"
    path.write_text('{"schema": "dispenser.schedule/1"}')
    result = run("schedule", "apply", str(path), "--config", str(config))
    assert result.returncode == 2
    assert len(run("log", "--json", "--config", str(config)).stdout.splitlines()) == count


# -- refill, log, report, status -----------------------------------------------------------------------


def test_refill_sets_the_count_and_status_shows_it(device):
    config, _ = device
    result = run("refill", "sertraline", "30", "--config", str(config))
    assert result.returncode == 0 and "compartment 1" in result.stdout
    status = run("status", "--config", str(config))
    assert status.returncode == 0
    assert "compartment 1: sertraline 30" in status.stdout
    assert "version 12" in status.stdout
    assert "clock         trusted as set" in status.stdout  # the simulator believes its host's clock


@pytest.mark.parametrize("args, needle", [
    (("refill", "aspirin", "3"), "not in the schedule"),
    (("refill", "sertraline", "-1"), "COUNT"),
])
def test_refill_bad_input(device, args, needle):
    config, _ = device
    one_line_error(run(*args, "--config", str(config)), needle)


def test_log_json_is_the_event_stream_and_verify_passes(device):
    config, _ = device
    run("refill", "sertraline", "30", "--config", str(config))
    lines = run("log", "--json", "--config", str(config)).stdout.splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert {e["device_id"] for e in events} == {"disp-0042"}
    verify = run("log", "verify", "--config", str(config))
    assert verify.returncode == 0 and f"{len(events)} events" in verify.stdout


@pytest.mark.parametrize("column, value", [("data", '{"medication_id":"x"}'), ("hash", "0" * 64),
                                           ("prev_hash", "f" * 64), ("at", "2020-01-01T00:00:00.000Z")])
def test_log_verify_names_the_first_tampered_row(device, column, value):
    config, db = device
    run("refill", "sertraline", "30", "--config", str(config))
    run("refill", "naltrexone", "30", "--config", str(config))
    raw = sqlite3.connect(db)
    triggers = [row[0] for row in raw.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")]
    for name in triggers:  # a tamperer with the file can drop the guards; the chain still tells
        raw.execute(f"DROP TRIGGER {name}")
    raw.execute(f"UPDATE events SET {column} = ? WHERE seq = 3", [value])
    raw.commit()
    raw.close()
    result = run("log", "verify", "--config", str(config))
    assert result.returncode != 0
    assert "seq 3" in result.stderr


def test_report_counts_a_scenario(tmp_path):
    db = tmp_path / "d.db"
    (tmp_path / "schedule.json").write_text((DEMO / "schedule.json").read_text())
    # The worked example, moved to a day in the past so that "the last N days" holds it.
    text = (DEMO / "first-day.toml").read_text().replace("2026-11-25", "2026-11-22").replace(
        "2026-11-24", "2026-11-21")
    (tmp_path / "past.toml").write_text(text)
    assert run("simulate", "--scenario", str(tmp_path / "past.toml"), "--db", str(db)).returncode == 0
    result = run("report", "--db", str(db), "--days", "3660", "--json")
    assert result.returncode == 0, result.stderr
    report = {m["medication_id"]: m for m in json.loads(result.stdout)["medications"]}
    assert report["sertraline"]["on_time"] == 1 and report["sertraline"]["days_all_taken"] == 1.0
    assert report["naltrexone"]["unconfirmed"] == 1 and report["naltrexone"]["days_all_taken"] == 0.0
    assert "pdc" not in report["sertraline"]
    assert report["hydroxyzine"]["prn_released"] == 1 and report["hydroxyzine"]["prn_denied"] == 1


def test_report_says_which_misses_the_dispenser_could_not_have_given(tmp_path):
    db = tmp_path / "d.db"
    (tmp_path / "schedule.json").write_text((DEMO / "schedule.json").read_text())
    (tmp_path / "off.toml").write_text(
        'start = "2026-11-01T06:00:00"\nuntil = "2026-11-01T12:00:00"\nschedule = "schedule.json"\n'
        '[stock]\nsertraline = 28\nnaltrexone = 2\n'
        '[[step]]\nat = "2026-11-01T08:30:00"\ndo = "power_cut"\nfor_min = 180\n')  # off 08:30-11:30
    assert run("simulate", "--scenario", str(tmp_path / "off.toml"), "--db", str(db)).returncode == 0
    result = run("report", "--db", str(db), "--days", "3660")
    assert result.returncode == 0, result.stderr
    [line] = [line for line in result.stdout.splitlines() if line.startswith("sertraline")]
    assert line.endswith("1 missed while the dispenser was off or waiting for the time")
    data = json.loads(run("report", "--db", str(db), "--days", "3660", "--json").stdout)
    missed = {m["medication_id"]: (m["missed"], m["missed_unavailable"]) for m in data["medications"]}
    assert missed["sertraline"] == (1, 1)  # its 08:00 window [07:30, 10:00) closed while off


# -- configuration and the database ---------------------------------------------------------------------


@pytest.mark.parametrize("content, needle", [
    ("[device\n", "not valid TOML"),
    ('[devise]\nid = "x"\n', "unknown table [devise]"),
    ('[device]\nid = "x"\ntimezone = "Mars/Olympus"\n', "device.timezone"),
    ('[hardware]\ncompartments = 0\n', "hardware.compartments"),
    ('[mqtt]\nhots = "x"\n', "mqtt.hots"),
])
def test_a_bad_config_is_one_line(tmp_path, content, needle):
    config = tmp_path / "config.toml"
    config.write_text(content)
    one_line_error(run("status", "--config", str(config)), needle)


def test_a_missing_config_file_is_one_line(tmp_path):
    one_line_error(run("status", "--config", str(tmp_path / "nope.toml")), "no such file")


@pytest.mark.parametrize("content", [b"not a database at all" * 100, b""])
def test_a_corrupt_database_is_refused_and_left_alone(tmp_path, content):
    db = tmp_path / "d.db"
    db.write_bytes(content)
    config = tmp_path / "config.toml"
    config.write_text(f'[storage]\ndb = "{db}"\n')
    result = run("refill", "sertraline", "3", "--config", str(config))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert db.read_bytes() == content


def test_python_dash_m_and_the_console_script_are_the_same_command():
    script = Path(sys.executable).parent / "dispenser"
    result = subprocess.run([str(script), "schedule", "validate", str(DEMO / "schedule.json")],
                            capture_output=True, text=True)
    assert result.returncode == 0


def test_schedule_apply_tells_the_clinic_and_refuses_an_expired_file_in_one_line(device, tmp_path):
    config, _ = device
    document = json.loads((DEMO / "schedule.json").read_text())
    highest = tmp_path / "highest.json"
    highest.write_text(json.dumps({**document, "version": 2 ** 63 - 1}))
    result = run("schedule", "apply", str(highest), "--config", str(config))
    assert result.returncode == 0 and "the clinic is told" in result.stdout, result.stderr
    log = [json.loads(line) for line in run("log", "--json", "--config", str(config)).stdout.splitlines()]
    applied = [e["data"] for e in log if e["type"] == "schedule.applied"]
    assert [(a["version"], a["signed"]) for a in applied] == [(12, False), (2 ** 63 - 1, False)]
    alerts = [e["data"] for e in log if e["type"] == "alert.raised" and e["data"]["kind"] == "schedule_applied_locally"]
    assert len(alerts) == 2 and applied[1]["digest"] in alerts[1]["message"]
    expired = tmp_path / "expired.json"
    expired.write_text(json.dumps({**document, "version": 13, "expires_at": "2020-01-01T00:00:00Z"}))
    one_line_error(run("schedule", "apply", str(expired), "--config", str(config)), "expired")


@pytest.mark.parametrize("command", ["validate", "apply"])
def test_a_schedule_with_a_duplicated_key_is_refused_in_one_line(tmp_path, command):
    """A decoy first, the real value last: readers disagree on which counts, so neither does."""
    text = (DEMO / "schedule.json").read_text()
    path = tmp_path / "decoy.json"
    path.write_text(text.replace('"version"', '"version": 99, "version"', 1))
    config = tmp_path / "config.toml"
    config.write_text(f'[storage]\ndb = "{tmp_path / "d.db"}"\n')
    result = run("schedule", command, str(path), "--config", str(config))
    one_line_error(result, str(path), "not valid JSON", 'the key "version" is given twice')


def test_a_one_shot_command_logs_at_the_time_counted_since_this_boot_s_first_sync(tmp_path):
    """The daemon found the wall clock stepped 8 h ahead after NTP first set it (its anchor is in
    the log's meta): `schedule apply` and `status` go by the counted time too, or the log would
    run 8 h ahead and hold every dose until the true time caught up."""
    from datetime import datetime, timezone
    from dispenser.clocktrust import StoreMemory, boot_id, steady_seconds
    from dispenser.store import Store
    if boot_id() is None:
        pytest.skip("no kernel boot id here")
    db, marker = tmp_path / "d.db", tmp_path / "synchronized"
    marker.touch()
    config = tmp_path / "config.toml"
    config.write_text(f'[device]\nid = "disp-0042"\n[storage]\ndb = "{db}"\n'
                      f'[clock]\ntrust = "synchronized"\nmarker = "{marker}"\n')
    store = Store.open(str(db), "disp-0042")
    offset = datetime.now(timezone.utc).timestamp() - steady_seconds() - 8 * 3600  # the wall clock is 8 h ahead
    StoreMemory(store).remember({"offset": offset, "steady": steady_seconds() - 100, "believed": offset,
                                 "reported": None})
    store.close()
    result = run("schedule", "apply", str(DEMO / "schedule.json"), "--config", str(config))
    assert result.returncode == 0, result.stderr
    [applied] = [e for e in Store.open(str(db), "disp-0042").events() if e["type"] == "schedule.applied"]
    at = datetime.fromisoformat(applied["at"].replace("Z", "+00:00"))
    assert abs((datetime.now(timezone.utc) - at).total_seconds() - 8 * 3600) < 120
    status = run("status", "--config", str(config))
    assert "stepped 28800 s ahead and is not believed" in status.stdout, status.stdout + status.stderr
