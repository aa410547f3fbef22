"""The whole chain leaves the start-up path: checked by `log verify` and, after READY, by the
daemon's background check (chaincheck.py), hashing the stored text without re-encoding it."""
from __future__ import annotations

import sqlite3

import pytest
from hypothesis import given, settings, strategies as st

from dispenser.chaincheck import ChainCheck
from dispenser.engine import Engine
from dispenser.events import verify_chain
from dispenser.store import Store, StoreError, verify_rows
from harness.simulation import Simulation
from daemon_thread import daemon_on_thread, log_end
from depth import size
from waiting import wait_until

DEVICE = "disp-sim"


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """A real log of simulated days (schedule changes, cuts, clock jumps), on a file: 10 days,
    609 events (20 days with --deep, tests/depth.py); with verify_rows planted not to compare
    the stored hash, the 40 edits below still fail on the shorter log."""
    path = tmp_path_factory.mktemp("chain") / "sim.db"
    Simulation(12, size(quick=10, deep_size=20), db=str(path)).run()
    return path


def tampered_copy(source, target, seq: int, column: str, value) -> None:
    target.write_bytes(source.read_bytes())
    raw = sqlite3.connect(target)
    for (name,) in raw.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        raw.execute(f"DROP TRIGGER {name}")  # a tamperer with the file can drop the guards
    raw.execute(f"UPDATE events SET {column} = ? WHERE seq = ?", [value, seq])
    raw.commit()
    raw.close()


def reencoded_verdict(path) -> tuple:
    """The verdict of verify_chain over events parsed and re-encoded, as before."""
    import json
    raw = sqlite3.connect(path)
    rows = raw.execute("SELECT seq, event_id, schema, type, at, data, prev_hash, hash FROM events ORDER BY seq")
    events = []
    for seq, event_id, schema, type_, at, data, prev_hash, hash_ in rows:
        try:
            parsed = json.loads(data)
        except ValueError:
            raw.close()
            prior = verify_chain(events)
            return prior if not prior[0] else (False, seq, "data is not valid JSON")
        events.append({"schema": schema, "event_id": event_id, "device_id": DEVICE, "seq": seq, "type": type_,
                       "at": at, "data": parsed, "prev_hash": prev_hash, "hash": hash_})
    raw.close()
    return verify_chain(events)


def test_an_intact_log_verifies_as_stored(simulated):
    with Store.open(simulated, DEVICE) as store:
        ok, seq, reason = store.verify()
        assert ok and seq is None and reason == f"{store.event_count()} events, chain intact"


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.data())
def test_hashing_as_stored_gives_the_verdicts_of_re_encoding(simulated, tmp_path_factory, data):
    """Any one column of any row changed: the same (ok, seq, reason) as parsing and re-encoding
    every event, including an edit that only changes the JSON's spelling (still intact)."""
    raw = sqlite3.connect(simulated)
    last = raw.execute("SELECT max(seq) FROM events").fetchone()[0]
    raw.close()
    seq = data.draw(st.integers(1, last), "seq")
    column, value = data.draw(st.sampled_from([
        ("data", '{"medication_id":"x"}'), ("data", "{not json"), ("hash", "0" * 64), ("prev_hash", "f" * 64),
        ("at", "2020-01-01T00:00:00.000Z"), ("at", "2999-01-01T00:00:00.000Z"), ("type", "dose.taken"),
        ("event_id", "someone-else"), ("seq", last + 7), ("schema", "dispenser.event/2"),
        ("data", None),  # spelled differently below
    ]), "change")
    path = tmp_path_factory.mktemp("t") / "t.db"
    if value is None:  # the same JSON with a space: not a change to what the event says
        original = sqlite3.connect(simulated).execute("SELECT data FROM events WHERE seq = ?", [seq]).fetchone()[0]
        value = original.replace(":", ": ", 1) if ":" in original else original + " "
    tampered_copy(simulated, path, seq, column, value)
    conn = sqlite3.connect(path)
    assert verify_rows(conn, DEVICE) == reencoded_verdict(path), (seq, column, value)
    conn.close()


def test_a_start_folds_only_the_tail_and_the_background_check_finds_an_old_edit(simulated, tmp_path):
    """An event edited before the snapshot: the start does not read it (and starts); the
    daemon's background check finds it after READY and logs a device.fault with an alert."""
    path = tmp_path / "d.db"
    path.write_bytes(simulated.read_bytes())
    with Store.open(path, DEVICE) as store:
        Engine(store, 8, "UTC").stop(log_end(store))  # a stop writes a snapshot at the head
        assert store.snapshot().seq == store.event_count()
    tampered_copy(path, path, 5, "data", '{"medication_id":"x"}')
    with daemon_on_thread(path, DEVICE) as running:
        assert wait_until(lambda: any(e["type"] == "device.fault" for e in _events(path)))
    assert running.engine is not None and running.daemon is not None
    assert running.engine.snapshot_note.startswith("seq")  # it started without reading seq 5
    faults = [e for e in _events(path) if e["type"] == "device.fault"]
    assert faults[0]["data"]["component"] == "log" and "seq 5" in faults[0]["data"]["error"]
    alerts = [e for e in _events(path) if e["type"] == "alert.raised" and faults[0]["event_id"] in e["data"].get("events", ())]
    assert alerts and alerts[0]["data"]["kind"] == "device_fault"
    assert running.notifier.notes == ["ready"] and running.daemon.chain_check.result[:2] == (False, 5)
    with Store.open(path, DEVICE) as store:
        assert store.verify()[:2] == (False, 5)  # and `log verify` names it


def test_the_background_check_of_an_intact_log_reports_nothing(simulated, tmp_path):
    path = tmp_path / "d.db"
    path.write_bytes(simulated.read_bytes())
    put = []
    check = ChainCheck(str(path), DEVICE, put.append, pause_s=0)
    check.start().join()
    assert check.result[0] and put == []


def test_a_background_check_that_cannot_open_the_file_alarms_no_one(tmp_path):
    put = []
    result = ChainCheck(str(tmp_path / "gone.db"), DEVICE, put.append).run()
    assert result[0] and "not checked" in result[2] and put == []


def test_an_edit_in_the_tail_still_stops_the_start_in_one_line(simulated, tmp_path):
    path = tmp_path / "d.db"
    path.write_bytes(simulated.read_bytes())
    with Store.open(path, DEVICE) as store:
        last = store.event_count()
        raw = store.db
        raw.execute("DELETE FROM snapshot")
        raw.conn.commit()
    tampered_copy(path, path, last - 2, "data", '{"medication_id":"x"}')
    with Store.open(path, DEVICE) as store:
        with pytest.raises(StoreError, match=f"the log is damaged at seq {last - 2}; not starting on it"):
            Engine(store, 8, "UTC")


def _events(path) -> list[dict]:
    with Store.open(path, DEVICE) as store:
        return list(store.events())


