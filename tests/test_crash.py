"""The real daemon process, killed between the release intent and the end of the servo move."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timezone

from inprocess import dispenser as run_in_process
from support import daily, schedule
from waiting import HANG


def dispenser(*args, **kwargs):
    """A one-shot command, in this process (tests/inprocess.py); the daemon below is a real process."""
    return run_in_process(*args, **kwargs)


def open_intents(db) -> list[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return [row[0] for row in conn.execute("SELECT event_id FROM releases WHERE outcome IS NULL")]


def events(db) -> list[dict]:
    out = dispenser("log", "--json", "--db", str(db))
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_sigkill_during_a_release_is_uncertain_at_the_next_start_and_never_repeated(tmp_path):
    now = datetime.now(timezone.utc)
    document = schedule(daily("a", 1, [now.strftime("%H:%M")]), timezone="UTC")  # its window is open now
    (tmp_path / "s.json").write_text(json.dumps(document))
    config = tmp_path / "config.toml"
    db = tmp_path / "d.db"
    # A slow servo (3 s a move) leaves time to kill the daemon in the middle of the release.
    config.write_text(f'[hardware]\nbackend = "sim"\ndwell_ms = 3000\n[storage]\ndb = "{db}"\n')
    assert dispenser("schedule", "apply", str(tmp_path / "s.json"), "--config", str(config)).returncode == 0
    assert dispenser("refill", "a", "5", "--config", str(config)).returncode == 0

    daemon = subprocess.Popen([sys.executable, "-m", "dispenser", "simulate", "--config", str(config)],
                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        daemon.stdin.write("press\n")
        daemon.stdin.flush()
        deadline = time.monotonic() + HANG
        while not open_intents(db):
            assert time.monotonic() < deadline, "the release intent never appeared"
            assert daemon.poll() is None, daemon.stderr.read()
            time.sleep(0.02)
        os.kill(daemon.pid, signal.SIGKILL)  # the servo is open: the pill may or may not have dropped
    finally:
        daemon.kill()
        daemon.wait()

    released = [e for e in events(db) if e["type"] == "dose.released"]
    assert len(released) == 1

    again = subprocess.run([sys.executable, "-m", "dispenser", "simulate", "--config", str(config)],
                           input="press\npress\npress\nquit\n", capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    log = events(db)
    uncertain = [e for e in log if e["type"] == "dose.release_uncertain"]
    assert len(uncertain) == 1 and uncertain[0]["data"]["release_event_id"] == released[0]["event_id"]
    assert [e for e in log if e["type"] == "dose.released"] == released  # never released again
    assert open_intents(db) == []
    assert dispenser("log", "verify", "--db", str(db)).returncode == 0
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
