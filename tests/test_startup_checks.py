"""What leaves the start-up path and what stays: the whole file's check after READY (a damaged
file found there is a `device.fault` with its alert), and the read-only engine of `status`."""
from __future__ import annotations

import io
import sqlite3
from contextlib import redirect_stdout
from datetime import timedelta

import pytest

import dispenser.engine as engine_module
import dispenser.opening as opening
from dispenser import cli
from dispenser.engine import Engine, ReadOnlyEngine
from dispenser.store import Store, StoreError
from harness.simulation import Simulation
from daemon_thread import daemon_on_thread, log_end
from waiting import wait_until

DEVICE = "disp-sim"


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """A real log of a few simulated weeks, stopped cleanly (its snapshot at the head)."""
    path = tmp_path_factory.mktemp("startup") / "sim.db"
    Simulation(12, 20, db=str(path)).run()
    with Store.open(path, DEVICE) as store:
        Engine(store, 8, "UTC").stop(log_end(store))
        assert store.snapshot().seq == store.event_count()
    return path


def _page_of(data: bytes, needle: bytes) -> int:
    page = int.from_bytes(data[16:18], "big")
    return data.index(needle) // page


def _tail(path, after_seq: int) -> list[tuple]:
    """The events after `after_seq`, read without touching the damaged page (by primary key)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT seq, event_id, type, data FROM events WHERE seq > ? ORDER BY seq",
                            [after_seq]).fetchall()
    finally:
        conn.close()


def test_a_damaged_page_the_start_does_not_read_is_a_fault_with_an_alert_after_ready(simulated, tmp_path):
    """The page of an old event made unreadable: the daemon starts (it reads the snapshot and
    the tail), then its background check reads the whole file and the clinic hears of it."""
    import json
    path = tmp_path / "d.db"
    data = bytearray(simulated.read_bytes())
    with sqlite3.connect(simulated) as conn:
        old_hash = conn.execute("SELECT hash FROM events WHERE seq = 5").fetchone()[0]
        head = conn.execute("SELECT max(seq) FROM events").fetchone()[0]
    page = int.from_bytes(data[16:18], "big")
    number = _page_of(bytes(data), old_hash.encode())
    assert number > 1
    data[number * page] = 0x00  # not a b-tree page any more: SQLite refuses it when it reads it
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="database is damaged"):
        Store.open(path, DEVICE)  # a command before the daemon: refused in one line, as before
    with daemon_on_thread(path, DEVICE, check_later=True, after=timedelta(minutes=1)) as running:
        assert wait_until(lambda: any(row[2] == "device.fault" for row in _tail(path, head)))
    assert running.engine is not None and running.daemon is not None
    assert running.engine.snapshot_note == f"seq {head}"  # it started without reading seq 5's page
    assert running.notifier.notes == ["ready"]
    result = running.daemon.chain_check.result
    assert result[:2] == (False, None) and result[2].startswith("database is damaged (")
    events = [(seq, event_id, kind, json.loads(text)) for seq, event_id, kind, text in _tail(path, head)]
    [fault] = [e for e in events if e[2] == "device.fault"]
    assert fault[3] == {"component": "log", "error": result[2]}
    alerts = [e[3] for e in events if e[2] == "alert.raised" and fault[1] in e[3].get("events", ())]
    assert [a["kind"] for a in alerts] == ["device_fault"]
    with pytest.raises(StoreError, match="database is damaged"):
        Store.open(path, DEVICE)  # not recorded as checked: `status` in this boot still refuses it


# --- the read-only engine ------------------------------------------------------------------------


def test_a_read_only_engine_never_copies_the_fold_and_sees_what_a_full_one_sees(simulated, tmp_path, monkeypatch):
    path = tmp_path / "d.db"
    path.write_bytes(simulated.read_bytes())
    with Store.open(path, DEVICE) as store:
        now = log_end(store) + timedelta(hours=3)
        full = Engine(store, 8, "UTC").look(now)
        copies: list = []
        real_copy = engine_module._copy_state
        monkeypatch.setattr(engine_module, "_copy_state", lambda state: (copies.append(1), real_copy(state))[1])
        reader = Engine(store, 8, "UTC", read_only=True)
        assert reader.look(now) == full and copies == []
        assert reader.rules.state is reader._folded  # one state: nothing kept for a snapshot
        Engine(store, 8, "UTC")
        assert copies == [1]  # the engine that decides still keeps its copy


def test_a_read_only_engine_refuses_every_input_and_writes_nothing(simulated, tmp_path):
    path = tmp_path / "d.db"
    path.write_bytes(simulated.read_bytes())
    with Store.open(path, DEVICE) as store:
        now = log_end(store) + timedelta(hours=3)
        reader = Engine(store, 8, "UTC", read_only=True)
        before = (store.event_count(), store.snapshot())
        for act in (lambda: reader.start(now), lambda: reader.press(now), lambda: reader.tick(now),
                    lambda: reader.stop(now), lambda: reader.refill(now, "a", 3),
                    lambda: reader.fault(now, "log", "x"), lambda: reader.apply_schedule(now, {"version": 1})):
            with pytest.raises(ReadOnlyEngine, match="only reads"):
                act()
        assert (store.event_count(), store.snapshot()) == before


def test_status_prints_the_same_with_the_read_only_engine(simulated, tmp_path, monkeypatch):
    path = tmp_path / "d.db"
    path.write_bytes(simulated.read_bytes())
    config = tmp_path / "c.toml"
    config.write_text(f'[device]\nid = "{DEVICE}"\ntimezone = "UTC"\n[hardware]\nbackend = "sim"\n'
                      f'compartments = 8\n[clock]\ntrust = "always"\n')
    with Store.open(path, DEVICE) as store:
        moment = log_end(store) + timedelta(hours=3)
    monkeypatch.setattr(opening, "trusted_now", lambda trust: moment)

    def status() -> str:
        out = io.StringIO()
        with redirect_stdout(out):
            assert cli.main(["status", "--config", str(config), "--db", str(path)]) == 0
        return out.getvalue()

    built: list[bool] = []
    real_open = opening.open_engine

    def spy(config, store, *, simulated=False, read_only=False):
        built.append(read_only)
        return real_open(config, store, simulated=simulated, read_only=read_only)
    monkeypatch.setattr(opening, "open_engine", spy)
    read_only = status()
    monkeypatch.setattr(opening, "open_engine", lambda config, store, **kw: real_open(config, store))
    assert built == [True] and status() == read_only
    assert "schedule      version" in read_only and "stock" in read_only
