"""Config safety: where the log lives, who can read the broker password, who can read
what the dispenser writes. Real processes and files, with a permissive umask (022) as a
login shell has, so only the dispenser's own care makes its files private."""
from __future__ import annotations

import grp
import os
import sqlite3
import stat
import subprocess
from pathlib import Path

import pytest

from inprocess import dispenser

from support import DEMO


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return dispenser(*args, umask=0o022, cwd=cwd)


def one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


MQTT = '[mqtt]\nhost = "127.0.0.1"\nport = 1\nusername = "disp-0001"\npassword = "s3cret-password"\n'


def write_config(path: Path, text: str, file_mode: int) -> Path:
    path.write_text('[device]\nid = "disp-0001"\n' + text)
    path.chmod(file_mode)
    return path


# -- [storage] db --------------------------------------------------------------------------


@pytest.mark.parametrize("db", ["dispenser.db", "state/dispenser.db", "./d.db", "~/d.db"])
def test_a_relative_db_path_is_refused(tmp_path, db):
    """Under the service it would resolve in /run/dispenser, emptied at every restart."""
    config = write_config(tmp_path / "config.toml", f'[storage]\ndb = "{db}"\n', 0o600)
    result = run("status", "--config", str(config), cwd=tmp_path)
    one_line_error(result, "storage.db", "absolute")
    assert not (tmp_path / "dispenser.db").exists() and not (tmp_path / "state").exists()


def test_an_absolute_db_path_is_taken(tmp_path):
    config = write_config(tmp_path / "config.toml", f'[storage]\ndb = "{tmp_path / "d.db"}"\n', 0o600)
    result = run("schedule", "apply", str(DEMO / "schedule.json"), "--config", str(config))
    assert result.returncode == 0, result.stderr


# -- the broker password -------------------------------------------------------------------


@pytest.mark.parametrize("file_mode", [0o644, 0o604, 0o666])
def test_a_password_others_can_read_is_refused(tmp_path, file_mode):
    config = write_config(tmp_path / "config.toml", MQTT, file_mode)
    line = one_line_error(run("status", "--config", str(config)), str(config), "mqtt.password", "chmod 600")
    assert "s3cret" not in line


def test_a_password_a_foreign_group_can_read_is_refused(tmp_path):
    foreign = next((g for g in grp.getgrall() if g.gr_gid != os.getegid() and g.gr_name != "dispenser"), None)
    if foreign is None or os.geteuid() != 0:
        pytest.skip("needs root and a second group to chgrp the file")
    config = write_config(tmp_path / "config.toml", MQTT, 0o640)
    os.chown(config, -1, foreign.gr_gid)
    one_line_error(run("status", "--config", str(config)), f"group {foreign.gr_name}", "chmod 600")


@pytest.mark.parametrize("file_mode", [0o600, 0o400, 0o640])
def test_a_private_password_file_is_accepted(tmp_path, file_mode):
    """0640 with the reader's own group (the installed root:dispenser 0640 for the service)."""
    config = write_config(tmp_path / "config.toml", MQTT + f'[storage]\ndb = "{tmp_path / "d.db"}"\n', file_mode)
    os.chown(config, -1, os.getegid())
    result = run("schedule", "apply", str(DEMO / "schedule.json"), "--config", str(config))
    assert result.returncode == 0, result.stderr


def test_a_readable_config_without_a_password_is_fine(tmp_path):
    config = write_config(tmp_path / "config.toml", f'[storage]\ndb = "{tmp_path / "d.db"}"\n', 0o644)
    result = run("schedule", "apply", str(DEMO / "schedule.json"), "--config", str(config))
    assert result.returncode == 0, result.stderr


# -- files the dispenser creates -------------------------------------------------------------


def test_the_log_and_its_wal_and_shm_are_private(tmp_path):
    db = tmp_path / "state" / "dispenser.db"
    db.parent.mkdir()
    config = write_config(tmp_path / "config.toml", f'[storage]\ndb = "{db}"\n', 0o600)
    result = run("schedule", "apply", str(DEMO / "schedule.json"), "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert mode(db) == 0o600
    # SQLite gives -wal and -shm the database's own mode, whatever the umask of whoever opens it.
    old = os.umask(0o022)
    try:
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS probe (x)")
        conn.commit()
        for suffix in ("-wal", "-shm"):
            assert mode(Path(f"{db}{suffix}")) == 0o600, suffix
        conn.close()
    finally:
        os.umask(old)
    assert not [p for p in db.parent.iterdir() if mode(p) & 0o077]


def test_clinic_keygen_writes_a_private_key(tmp_path):
    result = run("clinic", "keygen", "--out-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert mode(tmp_path / "clinic.key") == 0o600


def test_signed_schedules_are_private_too(tmp_path):
    """Everything a dispenser process creates follows the umask it sets at start (077)."""
    run("clinic", "keygen", "--out-dir", str(tmp_path))
    out = tmp_path / "signed.json"
    result = run("clinic", "sign", str(DEMO / "schedule.json"), "--key", str(tmp_path / "clinic.key"),
                 "--device", "disp-0001", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert mode(out) == 0o600


def test_a_new_log_is_private_whatever_the_umask(tmp_path):
    """Code that opens a Store without the CLI's umask (the care service, a test) still gets 0600."""
    from dispenser.store import Store
    old = os.umask(0o022)
    try:
        store = Store.open(tmp_path / "d.db", "disp-0001")
        store.close()
    finally:
        os.umask(old)
    assert mode(tmp_path / "d.db") == 0o600
