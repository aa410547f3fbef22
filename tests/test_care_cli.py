"""`dispenser care status / ack / link` and their bad input: one line on stderr, exit 2,
nothing changed, never a traceback. Without the `care` extra, one line saying how to get it."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from care_support import AT0, care_toml, chained, ingest_events, taken
from inprocess import dispenser as run_in_process
from dispenser.care.database import Database
from dispenser.care.config import load_care_config
from dispenser.events import Draft

ROOT = Path(__file__).resolve().parents[1]


def dispenser(*args: object, code: str | None = None) -> subprocess.CompletedProcess:
    """In this process (tests/inprocess.py); with `code`, a process of its own that runs it first."""
    if code is None:
        return run_in_process(*args, cwd=ROOT)
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture
def config_path(tmp_path) -> Path:
    return care_toml(tmp_path / "care.toml", database_url=f"sqlite:///{tmp_path / 'care.db'}")


def one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2, result.stdout
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in result.stderr


def test_without_the_care_extra_every_care_command_says_how_to_install_it(config_path):
    blocked = ("import sys; sys.modules['apprise'] = None; sys.argv[0] = 'dispenser'; "
               "from dispenser.cli import main; sys.exit(main(sys.argv[1:]))")
    for action in (["status"], ["serve"], ["ack", "x"], ["link", "disp-0001"]):
        result = dispenser("care", *action, "--config", config_path, code=blocked)
        one_line_error(result, "pip install 'dispenser[care]'", "apprise")
    assert dispenser("schedule", "validate", ROOT / "dispenser/demo/schedule.json", code=blocked).returncode == 0


def test_the_daemon_and_the_parser_import_nothing_of_the_care_service():
    code = ("import sys; from dispenser import runner, daemon, sync; from dispenser.cli import build_parser; "
            "build_parser(); heavy = [m for m in ('apprise', 'psycopg', 'dispenser.care.serve', "
            "'dispenser.care.database', 'dispenser.care.ingest') if m in sys.modules]; print(heavy)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stderr


@pytest.mark.parametrize("text, words", [
    ("[[patient]]\ndevice = 'd'\nname = 'S'\nnotfy = []\n", ["patient[0].notfy: unknown key"]),
    ("[database]\nurl = 'mysql://x'\n", ["database.url"]),
    ("[mqtt]\nport = 1883\n", ["mqtt.host: required"]),
    ("not toml = = =\n", ["not valid TOML"]),
])
def test_a_bad_config_is_one_line_naming_the_key(tmp_path, text, words):
    path = tmp_path / "care.toml"
    path.write_text(text)
    one_line_error(dispenser("care", "status", "--config", path), str(path), *words)


def test_bad_input_to_the_commands(tmp_path, config_path):
    one_line_error(dispenser("care", "status", "--config", tmp_path / "none.toml"), "no such file")
    one_line_error(dispenser("care", "serve", "--config", config_path), "no [mqtt] table")
    Database(load_care_config(str(config_path)).database_url)       # made, as `care serve` makes it
    one_line_error(dispenser("care", "ack", "nope", "--config", config_path), "no alert 'nope'")
    one_line_error(dispenser("care", "link", "disp-9999", "--config", config_path), "no [[patient]] device")
    with_mqtt = care_toml(tmp_path / "m.toml", database_url=f"sqlite:///{tmp_path / 'm.db'}", port=1,
                          notify=["nosuchscheme://x"])
    one_line_error(dispenser("care", "serve", "--config", with_mqtt), "apprise cannot use the URL nosuchscheme://")
    tls = tmp_path / "tls.toml"
    tls.write_text(f'[mqtt]\nhost = "127.0.0.1"\ntls_ca = "{tmp_path / "no-ca.pem"}"\n'
                   f'[database]\nurl = "sqlite:///{tmp_path / "t.db"}"\n')
    one_line_error(dispenser("care", "serve", "--config", tls), "mqtt.tls_ca: no such file")
    one_line_error(dispenser("care", "serve", "--workers", "0", "--config",
                             care_toml(tmp_path / "w.toml", database_url=f"sqlite:///{tmp_path / 'w.db'}", port=1)),
                   "--workers must be from 1 to 64")


def test_status_lists_devices_and_open_alerts_and_ack_closes_one(config_path):
    config = load_care_config(str(config_path))
    raised = chained("disp-0001", taken(2) + [Draft(
        "alert.raised", {"alert_id": "a-1", "kind": "dose_missed", "severity": "warning", "message": "m", "events": []})])
    with Database(config.database_url).connect() as conn:
        ingest_events(conn, config, raised, AT0)
    text = dispenser("care", "status", "--config", config_path)
    assert text.returncode == 0, text.stderr
    assert "disp-0001 (Sam): heard 2026-11-24T14:00:00.000Z; last event seq 3 alert.raised" in text.stdout
    assert "a-1  warning  dose_missed" in text.stdout and "told: nobody yet" in text.stdout
    first = dispenser("care", "ack", "a-1", "--by", "Alex", "--config", config_path)
    assert first.returncode == 0 and "acknowledged by Alex" in first.stdout
    again = dispenser("care", "ack", "a-1", "--by", "Kim", "--config", config_path)
    assert again.returncode == 0 and "acknowledged by Alex" in again.stdout     # the first ack stands
    status = json.loads(dispenser("care", "status", "--json", "--config", config_path).stdout)
    assert status["devices"][0]["open_alerts"] == []


def test_link_prints_a_url_with_a_token_that_can_be_revoked(config_path):
    first = dispenser("care", "link", "disp-0001", "--config", config_path)
    second = dispenser("care", "link", "disp-0001", "--config", config_path)
    assert first.returncode == 0, first.stderr
    url = first.stdout.strip()
    assert url.startswith("https://care.example.org/family/") and len(url.rsplit("/", 1)[1]) >= 32
    assert url != second.stdout.strip()
    revoked = dispenser("care", "link", "disp-0001", "--revoke", "--config", config_path)
    assert revoked.stdout.strip() == "disp-0001: 2 links revoked"
    with Database(load_care_config(str(config_path)).database_url).connect() as conn:
        assert conn.execute("SELECT count(*) FROM links WHERE revoked IS NULL") == [(0,)]
