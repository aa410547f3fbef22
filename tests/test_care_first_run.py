"""The care commands on a first run, as a newcomer meets them: `care status` or `care ack`
before `care serve` ever ran say so in one line and make no database (the default one is
under /var/lib); acknowledging an alert someone already acknowledged says who did, and
that nothing changed."""
from __future__ import annotations

from care_support import AT0, care_toml, chained, ingest_events, taken
from dispenser.care.config import load_care_config
from dispenser.care.database import Database
from dispenser.events import Draft
from test_care_cli import dispenser, one_line_error


def test_status_and_ack_before_any_database_say_so_and_make_none(tmp_path):
    db = tmp_path / "not-yet" / "care.db"
    path = care_toml(tmp_path / "care.toml", database_url=f"sqlite:///{db}")
    for command in (["status"], ["status", "--json"], ["ack", "a-1"]):
        one_line_error(dispenser("care", *command, "--config", path), f"{db}: no care database there",
                       "care serve")
    assert not db.parent.exists()
    assert dispenser("care", "link", "disp-0001", "--config", path).returncode == 0   # a link may come first
    assert dispenser("care", "status", "--config", path).returncode == 0


def test_acknowledging_again_names_the_first_acknowledgement_and_changes_nothing(tmp_path):
    path = care_toml(tmp_path / "care.toml", database_url=f"sqlite:///{tmp_path / 'care.db'}")
    config = load_care_config(str(path))
    raised = chained("disp-0001", taken(1) + [Draft(
        "alert.raised", {"alert_id": "a-1", "kind": "dose_missed", "severity": "warning", "message": "m", "events": []})])
    with Database(config.database_url).connect() as conn:
        assert set(ingest_events(conn, config, raised, AT0)) == {"stored"}
    first = dispenser("care", "ack", "a-1", "--by", "Alex", "--config", path)
    assert first.returncode == 0 and "a-1: acknowledged by Alex at " in first.stdout
    assert "its escalation has stopped" in first.stdout
    again = dispenser("care", "ack", "a-1", "--by", "Kim", "--config", path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("a-1: already acknowledged by Alex at ") and "nothing changed" in again.stdout
    with Database(config.database_url).connect() as conn:
        assert conn.execute("SELECT acked_by FROM alerts WHERE alert_id = 'a-1'") == [("Alex",)]


def test_user_add_at_a_terminal_given_no_password_says_so_in_one_line(tmp_path):
    """Ctrl-D at the password prompt (an end of file on the terminal) is one line, not a traceback."""
    import os
    import pty
    import subprocess
    import sys
    from test_care_cli import ROOT
    path = care_toml(tmp_path / "care.toml", database_url=f"sqlite:///{tmp_path / 'care.db'}")
    controller, terminal = pty.openpty()
    try:
        # A session of its own, no controlling terminal: getpass reads the pty on stdin.
        child = subprocess.Popen([sys.executable, "-m", "dispenser", "care", "user", "add", "ana", "--config",
                                  str(path)], cwd=ROOT, stdin=terminal, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, start_new_session=True)
        assert child.stderr is not None
        prompt = b""
        while b"password: " not in prompt:        # getpass flushes what was typed before it asked
            chunk = os.read(child.stderr.fileno(), 1024)
            assert chunk, prompt
            prompt += chunk
        os.write(controller, b"\x04")
        out, rest = child.communicate(timeout=120)
        err = (prompt + rest).decode()
    finally:
        os.close(controller)
        os.close(terminal)
    assert child.returncode == 2, (out, err)
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "dispenser: no password given: nothing changed"
