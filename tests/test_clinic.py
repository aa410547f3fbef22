"""The clinic's side and one-shot sync: `dispenser clinic ...` and `dispenser sync`.

The pure part (dedup, lines) is tested directly; the commands run as a person runs
them, `python -m dispenser ...`, against a private Mosquitto per test (tests/broker.py).
"""
from __future__ import annotations

import base64
import json
import signal
import stat
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from broker import Clinic
from dispenser.clinic import SeenIds, Watcher, alert_line, event_line, split_topic, status_line
from dispenser.signing import sign_document, verify_document
from dispenser.store import Store

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = Path(__file__).resolve().parent / "data" / "examples"
DEVICE = "disp-0001"
BASE = f"pilldispenser/{DEVICE}"


def dispenser(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dispenser", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def write_config(path: Path, db: Path, port: int | None = None) -> Path:
    """The config of the brief; no [mqtt] table when `port` is None."""
    text = f'[device]\nid = "{DEVICE}"\n'
    if port is not None:
        text += f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\ntls = false\n'
    text += f'[storage]\ndb = "{db}"\n'
    path.write_text(text)
    return path


def event(seq: int, type_: str = "dose.taken", event_id: str | None = None, **data) -> dict:
    return {"schema": "dispenser.event/1", "event_id": event_id or f"id-{seq}", "device_id": DEVICE,
            "seq": seq, "type": type_, "at": f"2026-11-21T13:00:{seq:02d}.000Z", "data": data}


def alert(seq: int) -> dict:
    return event(seq, "alert.raised", alert_id="a1", kind="dose.unconfirmed", severity="warning",
                 message="Naltrexone was released but not confirmed", events=["id-1"])


def raw(obj: dict) -> bytes:
    return json.dumps(obj).encode()


@pytest.fixture
def simulated_db(tmp_path) -> Path:
    """The first day of the examples, logged offline: 18 events wait in the outbox (one the
    alert that the schedule was applied locally)."""
    db = tmp_path / "device.db"
    offline = write_config(tmp_path / "offline.toml", db)
    result = dispenser("simulate", "--scenario", EXAMPLES / "first-day.toml", "--config", offline, "--db", db)
    assert result.returncode == 0, result.stderr
    return db


def backlog(db: Path) -> int:
    with Store.open(db, DEVICE) as store:
        return store.backlog()


# ------------------------------------------------------------------------ pure logic


def test_seen_ids_forget_the_oldest_beyond_the_limit():
    seen = SeenIds(limit=3)
    assert [seen.add(i) for i in "abca"] == [True, True, True, False]
    assert seen.add("d") and len(seen) == 3
    assert "a" not in seen and seen.add("a")  # forgotten, so new again


def test_an_event_twice_and_an_alert_on_both_topics_are_shown_once_each():
    watcher = Watcher("pilldispenser")
    lines = []
    for topic, payload in [("events", event(1)), ("events", event(1)),
                           ("alerts", alert(2)), ("events", alert(2)), ("alerts", alert(2))]:
        lines += watcher.handle(f"{BASE}/{topic}", raw(payload))
    assert lines == [event_line(event(1)), alert_line(alert(2))]
    assert lines[1] == ("!! ALERT [warning] disp-0001: Naltrexone was released but not confirmed"
                        "  (seq 2, 2026-11-21T13:00:02.000Z)")
    assert watcher.events_shown == 2


def test_event_line_is_seq_at_device_type_summary():
    line = event_line(event(17, medication_id="sertraline", scheduled_at="2026-11-21T13:00:00Z", quantity=1))
    assert line.split() == ["17", "2026-11-21T13:00:17.000Z", DEVICE, "dose.taken",
                            "medication_id=sertraline", "scheduled_at=2026-11-21T13:00:00Z", "quantity=1"]


def test_status_is_shown_when_it_changes_only():
    watcher = Watcher("pilldispenser")
    online = raw({"online": True, "device_id": DEVICE, "since": "2026-11-21T06:00:00Z"})
    shown = [watcher.handle(f"{BASE}/status", payload) for payload in
             (online, online, raw({"online": False}), raw({"online": False}), b"")]
    assert shown == [[f"== {DEVICE} online since 2026-11-21T06:00:00Z"], [], [f"== {DEVICE} OFFLINE"], [], []]
    assert status_line("d", {"online": False, "since": "X"}) == "== d OFFLINE since X"


def test_state_is_shown_when_more_than_its_time_changes():
    watcher = Watcher("pilldispenser")
    state = {"device_id": DEVICE, "at": "2026-11-21T06:00:00Z", "schedule_version": 12, "backlog": 0,
             "next_dose": {"medication_id": "sertraline", "scheduled_at": "2026-11-21T13:00:00Z", "quantity": 1},
             "stock": {"sertraline": {"compartment": 1, "count": 27}}}
    first = watcher.handle(f"{BASE}/state", raw(state))
    assert first == [f".. {DEVICE} state: schedule v12; next sertraline x1 at 2026-11-21T13:00:00Z; "
                     "stock sertraline 27; backlog 0"]
    assert watcher.handle(f"{BASE}/state", raw({**state, "at": "2026-11-21T06:01:00Z"})) == []
    assert len(watcher.handle(f"{BASE}/state", raw({**state, "backlog": 3}))) == 1
    [held] = watcher.handle(f"{BASE}/state", raw({**state, "backlog": 3, "clock_trusted": False}))
    assert held.endswith("; backlog 3; CLOCK NOT SET: doses held")


def test_a_gap_in_seq_is_pointed_out_and_late_arrivals_are_not():
    watcher = Watcher("pilldispenser")
    lines = [line for seq in (5, 6, 9, 7) for line in watcher.handle(f"{BASE}/events", raw(event(seq)))]
    assert lines[2] == f"-- {DEVICE}: seq 7-8 not received (yet)"
    assert len(lines) == 5  # 5, 6, the gap, 9, 7


def test_json_lines_are_the_events_unchanged_and_deduplicated():
    watcher = Watcher("pilldispenser", json_lines=True)
    lines = watcher.handle(f"{BASE}/events", raw(event(1))) + watcher.handle(f"{BASE}/events", raw(event(1)))
    assert [json.loads(line) for line in lines] == [event(1)]
    [status] = watcher.handle(f"{BASE}/status", raw({"online": True}))
    assert json.loads(status) == {"topic": f"{BASE}/status", "payload": {"online": True}}


@pytest.mark.parametrize("topic, payload, expected", [
    ("other/disp-0001/events", b"{}", []),
    (f"{BASE}/schedule/set", b"{}", []),
    (f"{BASE}/events", b"not json", [f"?? {BASE}/events: not JSON (8 bytes)"]),
    (f"{BASE}/events", b"[1]", [f"?? {BASE}/events: not a JSON object"]),
    (f"{BASE}/events", b'{"seq": 1}', [f"?? {BASE}/events: an event without event_id"]),
])
def test_what_cannot_be_read_is_said_or_ignored(topic, payload, expected):
    assert Watcher("pilldispenser").handle(topic, payload) == expected


def test_split_topic():
    assert split_topic("a/b", "a/b/disp-1/alerts") == ("disp-1", "alerts")
    assert split_topic("a/b", "a/b/disp-1/x") is None
    assert split_topic("a/b", "a/bc/disp-1/events") is None


# ------------------------------------------------------------------------ keygen, sign


def test_keygen_writes_a_usable_key_pair_with_safe_modes(tmp_path):
    result = dispenser("clinic", "keygen", "--out-dir", tmp_path)
    assert result.returncode == 0, result.stderr
    private = (tmp_path / "clinic.key").read_text().strip()
    public = (tmp_path / "clinic.pub").read_text().strip()
    assert stat.S_IMODE((tmp_path / "clinic.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "clinic.pub").stat().st_mode) == 0o644
    assert len(base64.b64decode(public, validate=True)) == 32
    assert f'public_key = "{public}"' in result.stdout.splitlines()
    verify_document(sign_document({"version": 1}, private, "k"), public)


def test_keygen_never_overwrites_a_key(tmp_path):
    (tmp_path / "clinic.pub").write_text("an old key\n")
    result = dispenser("clinic", "keygen", "--out-dir", tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "already exists" in result.stderr
    assert not (tmp_path / "clinic.key").exists()
    assert (tmp_path / "clinic.pub").read_text() == "an old key\n"


@pytest.fixture
def keys(tmp_path) -> tuple[Path, str]:
    assert dispenser("clinic", "keygen", "--out-dir", tmp_path).returncode == 0
    return tmp_path / "clinic.key", (tmp_path / "clinic.pub").read_text().strip()


def test_sign_writes_a_signed_copy_the_device_accepts(tmp_path, keys):
    key, public = keys
    source = tmp_path / "schedule.json"
    source.write_text((EXAMPLES / "schedule.json").read_text())
    result = dispenser("clinic", "sign", source, "--key", key, "--key-id", "clinic-2026", "--device", DEVICE)
    assert result.returncode == 0, result.stderr
    assert "version 12" in result.stdout and "clinic-2026" in result.stdout
    signed = json.loads((tmp_path / "schedule.signed.json").read_text())
    verify_document(signed, public)
    assert signed["signature"]["key_id"] == "clinic-2026"
    assert {k: v for k, v in signed.items() if k != "signature"} == {**json.loads(source.read_text()),
                                                                    "device_id": DEVICE}


def test_sign_binds_the_schedule_to_one_device_and_may_set_its_expiry(tmp_path, keys):
    key, public = keys
    out = tmp_path / "out.json"
    unbound = dispenser("clinic", "sign", EXAMPLES / "schedule.json", "--key", key, "--out", out)
    assert unbound.returncode == 2 and unbound.stderr.count("\n") == 1 and "--device" in unbound.stderr
    assert not out.exists()
    result = dispenser("clinic", "sign", EXAMPLES / "schedule.json", "--key", key, "--out", out,
                       "--device", DEVICE, "--expires-in", "48")
    assert result.returncode == 0, result.stderr
    signed = json.loads(out.read_text())
    verify_document(signed, public)
    expires = datetime.fromisoformat(signed["expires_at"].replace("Z", "+00:00"))
    assert timedelta(hours=47) < expires - datetime.now(timezone.utc) <= timedelta(hours=48)
    other = dispenser("clinic", "sign", out, "--key", key, "--device", "disp-0002", "--out", tmp_path / "o.json")
    assert other.returncode == 2 and "disp-0002" in other.stderr and "Traceback" not in other.stderr


def test_sign_refuses_an_invalid_schedule_naming_the_field(tmp_path, keys):
    key, _ = keys
    document = json.loads((EXAMPLES / "schedule.json").read_text())
    document["medications"][0]["dosage"][0]["timing"]["repeat"]["periodUnit"] = "mo"
    source = tmp_path / "bad.json"
    source.write_text(json.dumps(document))
    result = dispenser("clinic", "sign", source, "--key", key, "--out", tmp_path / "out.json")
    assert result.returncode == 2
    assert "medications[0].dosage[0].timing.repeat.periodUnit" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out.json").exists()


def test_sign_refuses_a_file_that_is_not_a_key(tmp_path):
    (tmp_path / "k").write_text("not base64!\n")
    result = dispenser("clinic", "sign", EXAMPLES / "schedule.json", "--key", tmp_path / "k",
                       "--out", tmp_path / "o.json")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "not a clinic key" in result.stderr


# ------------------------------------------------------------------------ push


@pytest.fixture
def signed_schedule(tmp_path, keys) -> Path:
    key, _ = keys
    assert dispenser("clinic", "sign", EXAMPLES / "schedule.json", "--key", key, "--device", DEVICE,
                     "--out", tmp_path / "signed.json").returncode == 0
    return tmp_path / "signed.json"


def test_push_reaches_the_devices_schedule_set(tmp_path, broker, signed_schedule):
    config = write_config(tmp_path / "clinic.toml", tmp_path / "unused.db", broker.port)
    device = Clinic(broker, client_id=DEVICE).connect(f"{BASE}/schedule/set")
    try:
        result = dispenser("clinic", "push", signed_schedule, "--device", DEVICE, "--config", config)
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""  # its own disconnect is no "connection lost"
        assert device.wait_for(lambda: device.on(f"{BASE}/schedule/set"))
        [(topic, payload, retained)] = device.messages
        assert json.loads(payload) == json.loads(signed_schedule.read_text()) and not retained
    finally:
        device.close()


def test_push_refuses_an_unsigned_schedule_unless_told(tmp_path, broker):
    config = write_config(tmp_path / "clinic.toml", tmp_path / "unused.db", broker.port)
    device = Clinic(broker, client_id=DEVICE).connect(f"{BASE}/schedule/set")
    try:
        refused = dispenser("clinic", "push", EXAMPLES / "schedule.json", "--device", DEVICE, "--config", config)
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1
        assert "not signed" in refused.stderr and "--allow-unsigned" in refused.stderr
        allowed = dispenser("clinic", "push", EXAMPLES / "schedule.json", "--device", DEVICE,
                            "--config", config, "--allow-unsigned")
        assert allowed.returncode == 0, allowed.stderr
        assert device.wait_for(lambda: device.messages) and len(device.messages) == 1
    finally:
        device.close()


def test_push_to_a_device_nobody_listens_for_fails(tmp_path, broker, keys):
    config = write_config(tmp_path / "clinic.toml", tmp_path / "unused.db", broker.port)
    signed = tmp_path / "for-9999.json"
    assert dispenser("clinic", "sign", EXAMPLES / "schedule.json", "--key", keys[0], "--device", "disp-9999",
                     "--out", signed).returncode == 0
    result = dispenser("clinic", "push", signed, "--device", "disp-9999", "--config", config)
    assert result.returncode == 1 and "no device is subscribed" in result.stderr


def test_push_refuses_a_schedule_signed_for_another_device(tmp_path, broker, signed_schedule):
    config = write_config(tmp_path / "clinic.toml", tmp_path / "unused.db", broker.port)
    result = dispenser("clinic", "push", signed_schedule, "--device", "disp-9999", "--config", config)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "wrong_device" in result.stderr


def test_push_with_the_broker_down_exits_1_with_one_line(tmp_path, broker, signed_schedule):
    config = write_config(tmp_path / "clinic.toml", tmp_path / "unused.db", broker.port)
    broker.stop()
    result = dispenser("clinic", "push", signed_schedule, "--device", DEVICE, "--config", config)
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "nothing sent" in result.stderr


# ------------------------------------------------------------------------ watch


def test_watch_shows_each_event_once_and_alerts_prominently(tmp_path, broker):
    config = write_config(tmp_path / "clinic.toml", tmp_path / "unused.db", broker.port)
    device = Clinic(broker, client_id=DEVICE).connect()
    try:
        device.publish(f"{BASE}/status", raw({"online": True, "device_id": DEVICE}), retain=True)
        watch = subprocess.Popen([sys.executable, "-m", "dispenser", "clinic", "watch", "--device", DEVICE,
                                  "--config", config, "--count", "3", "--timeout", "30"],
                                 cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            # The retained status comes right after the subscription: from here on it hears everything.
            assert watch.stdout.readline() == f"== {DEVICE} online\n"
            for topic, payload in [("events", event(1)), ("events", event(1)), ("events", alert(2)),
                                   ("alerts", alert(2)), ("events", event(3))]:
                device.publish(f"{BASE}/{topic}", raw(payload))
            out, err = watch.communicate(timeout=40)
        finally:
            watch.kill()
    finally:
        device.close()
    assert watch.returncode == 0, err
    lines = out.splitlines()
    assert lines == [event_line(event(1)), alert_line(alert(2)), event_line(event(3))]
    assert lines[1].startswith("!! ALERT [warning] disp-0001: ")


def test_watch_json_and_timeout(tmp_path, broker):
    config = write_config(tmp_path / "clinic.toml", tmp_path / "unused.db", broker.port)
    device = Clinic(broker, client_id=DEVICE).connect()
    try:
        device.publish(f"{BASE}/events", raw(event(1)), retain=True)  # a retained event: heard at once
        result = dispenser("clinic", "watch", "--json", "--config", config, "--count", "2", "--timeout", "2")
    finally:
        device.close()
    assert result.returncode == 1 and "1 of 2 event(s)" in result.stderr
    assert [json.loads(line) for line in result.stdout.splitlines()] == [event(1)]


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_watch_with_a_session_gets_what_was_published_while_it_was_away(tmp_path, broker, protocol):
    """A caregiver's watcher restarted (or its laptop asleep) must not lose a missed-dose alert."""
    config = write_config(tmp_path / "clinic.toml", tmp_path / "unused.db", broker.port)
    config.write_text(config.read_text().replace("port = ", f'protocol = "{protocol}"\nport = '))
    first = dispenser("clinic", "watch", "--device", DEVICE, "--session", "carer-1", "--config", config,
                      "--timeout", "1")
    assert first.returncode == 0 and first.stdout == "", first.stderr  # subscribed, then away
    device = Clinic(broker, client_id=DEVICE).connect()
    try:
        device.publish(f"{BASE}/events", raw(event(1)))
        device.publish(f"{BASE}/alerts", raw(alert(2)))
    finally:
        device.close()
    without = dispenser("clinic", "watch", "--device", DEVICE, "--config", config, "--count", "1", "--timeout", "1")
    assert without.returncode == 1 and without.stdout == ""  # a clean session heard none of it
    back = dispenser("clinic", "watch", "--device", DEVICE, "--session", "carer-1", "--config", config,
                     "--count", "2", "--timeout", "20")
    assert back.returncode == 0, back.stderr
    assert back.stdout.splitlines() == [event_line(event(1)), alert_line(alert(2))]


def test_watch_refuses_a_session_name_that_is_not_a_plain_word(tmp_path, broker):
    config = write_config(tmp_path / "clinic.toml", tmp_path / "unused.db", broker.port)
    result = dispenser("clinic", "watch", "--session", "a/b", "--config", config, "--timeout", "1")
    assert result.returncode == 2 and "--session" in result.stderr


# ------------------------------------------------------------------------ sync


def test_sync_once_drains_a_simulated_day_to_the_broker(tmp_path, broker, simulated_db):
    config = write_config(tmp_path / "device.toml", simulated_db, broker.port)
    clinic = Clinic(broker).connect(f"{BASE}/events", f"{BASE}/alerts")
    try:
        result = dispenser("sync", "--once", "--config", config)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("sent 18 event(s) to 127.0.0.1:")
        assert clinic.wait_for(lambda: len(clinic.on(f"{BASE}/events")) >= 18)
        events = clinic.json_on(f"{BASE}/events")
        alerts = clinic.json_on(f"{BASE}/alerts")
    finally:
        clinic.close()
    assert [e["seq"] for e in events] == list(range(1, 19))
    assert len({e["event_id"] for e in events}) == 18
    assert alerts == [e for e in events if e["type"] == "alert.raised"] and alerts
    status = dispenser("status", "--config", config)
    assert "outbox        0 event(s) waiting to be sent" in status.stdout
    again = dispenser("sync", "--once", "--config", config)
    assert again.returncode == 0 and again.stdout.startswith("sent 0 event(s)")


def test_sync_once_with_the_broker_down_exits_1_and_keeps_the_backlog(tmp_path, broker, simulated_db):
    config = write_config(tmp_path / "device.toml", simulated_db, broker.port)
    broker.stop()
    result = dispenser("sync", "--once", "--timeout", "5", "--config", config)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "18 event(s) still wait in the outbox" in result.stderr
    assert "Traceback" not in result.stderr
    assert backlog(simulated_db) == 18
    status = dispenser("status", "--config", config)
    assert "outbox        18 event(s) waiting to be sent" in status.stdout


def test_sync_without_mqtt_is_a_config_problem(tmp_path, simulated_db):
    config = write_config(tmp_path / "offline.toml", simulated_db)
    result = dispenser("sync", "--once", "--config", config)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "[mqtt]" in result.stderr


def test_sync_without_once_keeps_pushing_until_ctrl_c(tmp_path, broker, simulated_db):
    config = write_config(tmp_path / "device.toml", simulated_db, broker.port)
    clinic = Clinic(broker).connect(f"{BASE}/events")
    pusher = subprocess.Popen([sys.executable, "-m", "dispenser", "sync", "--config", config], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert clinic.wait_for(lambda: len(clinic.on(f"{BASE}/events")) >= 18, 20)
        assert wait_until(lambda: backlog(simulated_db) == 0)
        pusher.send_signal(signal.SIGINT)
        out, err = pusher.communicate(timeout=20)
    finally:
        pusher.kill()
        clinic.close()
    assert pusher.returncode == 0, err
    assert out.splitlines()[-1] == "stopped; sent 18 event(s)"


def wait_until(predicate, timeout: float = 10.0) -> bool:
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False
