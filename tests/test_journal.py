"""The daemon's system log: one line per decision, systemd's priorities under the journal,
nothing personal. The real daemon process, and the listener alone."""
from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone

import pytest

from inprocess import dispenser as run_in_process
from support import as_needed, daily, schedule
from waiting import wait_until

from dispenser.journal import EventLines, configure, under_journal


def wait_for(path, needle: str, proc, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while needle not in path.read_text():
        assert time.monotonic() < deadline and proc.poll() is None, path.read_text()
        time.sleep(0.05)
    return path.read_text()


@pytest.fixture
def journal_env(tmp_path):
    """A stderr file and the environment systemd gives a service whose stderr is the journal."""
    err = tmp_path / "journal"
    handle = open(err, "w")
    info = os.fstat(handle.fileno())
    env = dict(os.environ, JOURNAL_STREAM=f"{info.st_dev}:{info.st_ino}", INVOCATION_ID="0" * 32)
    yield err, handle, env
    handle.close()


def test_the_daemon_under_systemd_writes_priority_prefixed_lines(tmp_path, journal_env, broker_factory):
    err, handle, env = journal_env
    # A broker that refuses the daemon's password: the sync's trouble is a warning, said once
    # however often it retries (paho tries again after 1 s, then 2 s; the broker logs each).
    broker = broker_factory(users={"someone-else": "not-this-one"})
    config = tmp_path / "config.toml"
    config.write_text(f'[hardware]\nbackend = "sim"\n[storage]\ndb = "{tmp_path / "d.db"}"\n'
                      f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\ntls = false\n'
                      f'username = "disp-0001"\npassword = "a-wrong-password"\n')
    config.chmod(0o600)
    daemon = subprocess.Popen([sys.executable, "-m", "dispenser", "run", "--config", str(config)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=handle, env=env)
    try:
        wait_for(err, "device.started", daemon)
        assert wait_until(lambda: broker.log().count("not authorised") >= 3), broker.log()  # twice again
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=20) == 0, err.read_text()
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    lines = err.read_text().splitlines()
    assert lines and all(re.match(r"<[0-7]>\S", line) for line in lines), lines
    assert any(line.startswith("<6>device.started seq=1 software=") for line in lines), lines
    assert [line for line in lines if "refused" in line] == ["<4>broker refused the connection: Not authorized"]
    assert lines[-1] == "<6>device.stopped seq=2"
    assert not any(re.search(r"\d\d:\d\d:\d\d", line) for line in lines)  # the journal stamps the time


def test_the_live_simulator_logs_each_decision_in_plain_lines_at_the_chosen_level(tmp_path):
    now = datetime.now(timezone.utc)
    document = schedule(daily("sertraline", 2, [now.strftime("%H:%M")]), as_needed("hydroxyzine", 3, every_h=6),
                        timezone="UTC")
    document["medications"][0]["name"] = "Sertraline 50 mg"
    (tmp_path / "s.json").write_text(json.dumps(document))
    config = tmp_path / "config.toml"
    config.write_text(f'[hardware]\nbackend = "sim"\ndwell_ms = 50\n[storage]\ndb = "{tmp_path / "d.db"}"\n'
                      f'[checkin]\nenabled = true\n')
    # The set-up in this process (tests/inprocess.py): only the simulator's lines are under test.
    assert run_in_process("schedule", "apply", str(tmp_path / "s.json"), "--config", str(config)).returncode == 0
    assert run_in_process("refill", "sertraline", "1", "--config", str(config)).returncode == 0
    assert run_in_process("refill", "hydroxyzine", "5", "--config", str(config)).returncode == 0
    # JOURNAL_STREAM that is not our stderr (output sent on elsewhere): no prefixes.
    env = dict(os.environ, JOURNAL_STREAM="1:1")
    # Released, confirmed, the check-in answered (two holds), then as-needed: given, refused.
    result = subprocess.run([sys.executable, "-m", "dispenser", "simulate", "--config", str(config),
                             "--log-level", "debug"], input="press\npress\nhold\nhold\nhold\nhold\nquit\n",
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    plain = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR) \S")
    assert lines and all(plain.match(line) for line in lines), lines
    said = " ".join(line.split(" ", 3)[3] for line in lines)
    assert re.search(r"\bdevice\.started seq=\d+", said)
    assert re.search(r"\bdose\.released seq=\d+ compartment=2 quantity=1\b", said)
    assert re.search(r"\bdose\.taken seq=\d+ compartment=2\b", said)
    assert re.search(r"\bprn\.released seq=\d+ compartment=3 quantity=1\b", said)
    assert re.search(r"\bprn\.denied seq=\d+ compartment=3 reason=interval\b", said)
    assert re.search(r"WARNING stock\.empty seq=\d+ compartment=2", result.stderr)
    assert re.search(r"DEBUG checkin\.recorded seq=\d+$", result.stderr, re.MULTILINE)
    assert "device.stopped" in lines[-1]
    for private in ("sertraline", "Sertraline", "hydroxyzine", "mood"):
        assert private not in result.stderr

    quiet = subprocess.run([sys.executable, "-m", "dispenser", "simulate", "--config", str(config),
                            "--log-level", "warning"], input="hold\nquit\n", capture_output=True, text=True,
                           timeout=60, env=env)
    assert quiet.returncode == 0, quiet.stderr
    assert "prn.denied" not in quiet.stderr and "device.started" not in quiet.stderr


def test_a_config_error_under_systemd_is_an_error_line(tmp_path, journal_env):
    err, handle, env = journal_env
    config = tmp_path / "config.toml"
    config.write_text('[hardware]\nbackend = "sim"\n[storage]\ndb = "relative.db"\n')
    result = subprocess.run([sys.executable, "-m", "dispenser", "run", "--config", str(config)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=handle, env=env, timeout=60)
    assert result.returncode == 2
    lines = err.read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("<3>dispenser: ") and "storage.db" in lines[0], lines


def test_the_level_comes_from_the_config(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(f'[hardware]\nbackend = "sim"\n[storage]\ndb = "{tmp_path / "d.db"}"\n'
                      f'[logging]\nlevel = "warning"\n')
    # In this process (tests/inprocess.py): the level's choice is under test, not the process's stderr.
    result = run_in_process("simulate", "--config", config, input="quit\n")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    config.write_text(config.read_text().replace('"warning"', '"loud"'))
    bad = run_in_process("run", "--config", config)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "logging.level" in bad.stderr


# -- the listener and the formatter alone --------------------------------------------------------


class FakeEngine:
    class view:
        @staticmethod
        def medication(medication_id):
            return type("Stock", (), {"compartment": 4})() if medication_id == "quetiapine" else None


@pytest.mark.parametrize("event, level, line", [
    ({"type": "dose.released", "seq": 7, "data": {"medication_id": "sertraline", "compartment": 1, "quantity": 2,
                                                   "scheduled_at": "2026-11-24T13:00:00Z"}},
     logging.INFO, "dose.released seq=7 compartment=1 quantity=2"),
    ({"type": "dose.missed", "seq": 8, "data": {"medication_id": "sertraline", "compartment": 1, "quantity": 1,
                                                 "while": "device_off"}},
     logging.WARNING, "dose.missed seq=8 compartment=1 quantity=1 while=device_off"),
    ({"type": "prn.denied", "seq": 9, "data": {"medication_id": "quetiapine", "reason": "interval",
                                                "next_allowed_at": "2026-11-25T00:00:00Z"}},
     logging.INFO, "prn.denied seq=9 compartment=4 reason=interval"),
    ({"type": "dose.held", "seq": 10, "data": {"medication_id": "x", "compartment": 2, "quantity": 1,
                                                "reason": "separation"}},
     logging.WARNING, "dose.held seq=10 compartment=2 quantity=1 reason=separation"),
    ({"type": "schedule.applied", "seq": 11, "data": {"version": 12, "source": "mqtt", "signed": True,
                                                       "digest": "ab" * 32}},
     logging.INFO, "schedule.applied seq=11 version=12 source=mqtt signed=true"),
    ({"type": "schedule.rejected", "seq": 12, "data": {"version": 13, "source": "mqtt", "reason": "bad_signature",
                                                        "problems": ["medications[0].name: Lithium"]}},
     logging.WARNING, "schedule.rejected seq=12 reason=bad_signature version=13 source=mqtt problems=1"),
    ({"type": "alert.raised", "seq": 13, "data": {"kind": "dose_missed", "severity": "warning", "events": ["e"],
                                                   "message": "The 08:00 dose of Sertraline was missed."}},
     logging.WARNING, "alert.raised seq=13 kind=dose_missed severity=warning about=1"),
    ({"type": "alert.raised", "seq": 14, "data": {"kind": "release_failed", "severity": "critical", "message": "m"}},
     logging.ERROR, "alert.raised seq=14 kind=release_failed severity=critical"),
    ({"type": "dose.release_failed", "seq": 15, "data": {"medication_id": "x", "compartment": 3, "quantity": 1,
                                                          "error": "OSError: servo"}},
     logging.ERROR, "dose.release_failed seq=15 compartment=3 quantity=1"),
    ({"type": "device.fault", "seq": 16, "data": {"component": "lcd", "error": "OSError: [Errno 121]"}},
     logging.WARNING, "device.fault seq=16 component=lcd"),
    ({"type": "checkin.recorded", "seq": 17, "data": {"mood": 2, "side_effects": "nausea", "medications": ["x"]}},
     logging.DEBUG, "checkin.recorded seq=17"),
])
def test_one_line_per_event_with_nothing_personal(event, level, line):
    lines = EventLines(FakeEngine())
    assert lines.level(event) == level
    assert lines.line(event) == line


def test_a_broken_event_never_raises_into_the_engine(caplog):
    EventLines(None)([{"type": "dose.released"}, {"seq": 3, "data": None}, {"type": "x", "data": {"compartment": []}}])


def test_under_journal_only_when_the_stream_is_ours(tmp_path):
    with open(tmp_path / "err", "w") as handle:
        info = os.fstat(handle.fileno())
        assert under_journal({"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"}, handle)
        assert not under_journal({"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino + 1}"}, handle)
        assert not under_journal({"JOURNAL_STREAM": "nonsense"}, handle)
        assert not under_journal({"INVOCATION_ID": "1"}, handle)


def test_configure_prefixes_every_line_of_a_traceback_and_drops_repeats(tmp_path, monkeypatch):
    handle = open(tmp_path / "err", "w")
    info = os.fstat(handle.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino}")
    root = logging.getLogger("dispenser")
    saved = (list(root.handlers), root.level, root.propagate)
    try:
        configure("info", stream=handle)
        log = logging.getLogger("dispenser.sync")
        log.warning("cannot connect to h:1")
        log.warning("cannot connect to h:1")
        log.info("connected to h:1")
        log.debug("not shown at info")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("on_schedule failed")
        handle.flush()
        lines = (tmp_path / "err").read_text().splitlines()
        assert lines[:3] == ["<4>cannot connect to h:1", "<6>connected to h:1", "<3>on_schedule failed"]
        assert all(line.startswith("<3>") for line in lines[3:]) and "<3>ValueError: boom" in lines
    finally:
        root.handlers[:], root.level, root.propagate = saved[0], saved[1], saved[2]
        handle.close()


def test_configure_without_systemd_is_plain():
    out = io.StringIO()
    root = logging.getLogger("dispenser")
    saved = (list(root.handlers), root.level, root.propagate)
    try:
        configure("warning", stream=out)
        logging.getLogger("dispenser.events").info("hidden")
        logging.getLogger("dispenser.events").warning("dose.missed seq=3 compartment=1")
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d WARNING dose\.missed seq=3 compartment=1\n",
                            out.getvalue())
    finally:
        root.handlers[:], root.level, root.propagate = saved[0], saved[1], saved[2]
