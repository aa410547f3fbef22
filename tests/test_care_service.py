"""The care service end to end, with real parts: a private Mosquitto, a scenario run by
`dispenser simulate --scenario` that misses doses, the service's workers on a shared
subscription, apprise delivering to a local json:// endpoint, and `dispenser care ack`.
The ladder's clock is driven by the test (escalation never waits 15 real minutes)."""
from __future__ import annotations

import email
import json
import signal
import socket
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from care_support import Hook, care_toml, database_url, hook, postgres_cluster  # noqa: F401 - fixtures
from inprocess import dispenser as run_in_process
from dispenser.care.config import load_care_config
from dispenser.care.database import Database
from dispenser.care.serve import CareService
from ports import free_port
from support import DEMO
from waiting import HANG, wait_until

ROOT = Path(__file__).resolve().parents[1]
DEVICE = "disp-0001"
SCHEDULE = json.loads((DEMO / "schedule.json").read_text())
DRUG_WORDS = sorted({m["id"] for m in SCHEDULE["medications"]} | {m["name"] for m in SCHEDULE["medications"]}
                    | {m["name"].split()[0] for m in SCHEDULE["medications"]})


class Clock:
    """The service's clock, moved by the test."""

    def __init__(self, start: datetime):
        self.at = start

    def __call__(self) -> datetime:
        return self.at

    def advance(self, **delta: float) -> datetime:
        self.at += timedelta(**delta)
        return self.at


def dispenser(*args: object, timeout: float = 120) -> subprocess.CompletedProcess:
    return run_in_process(*args, cwd=ROOT)


def missed_morning(tmp_path: Path, broker) -> tuple[list[dict], Path]:
    """A morning on the contract's schedule with nobody pressing: sertraline (08:00) and
    naltrexone (09:00) are missed. Published as the daemon would; returns its events."""
    (tmp_path / "schedule.json").write_text((DEMO / "schedule.json").read_text())
    scenario = tmp_path / "missed.toml"
    scenario.write_text('start = "2026-11-24T06:00:00"\nuntil = "2026-11-24T12:00:00"\nschedule = "schedule.json"\n'
                        "[stock]\nsertraline = 28\nnaltrexone = 20\nhydroxyzine = 10\n")
    config = tmp_path / "device.toml"
    config.write_text(f'[device]\nid = "{DEVICE}"\n[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\ntls = false\n')
    result = dispenser("simulate", "--scenario", scenario, "--config", config, "--db", tmp_path / "device.db")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["type"] for e in events].count("dose.missed") == 2
    return events, config


def stored(url: str) -> int:
    with Database(url).connect() as conn:
        return conn.execute("SELECT count(*) FROM events")[0][0]


def alert_ids(url: str) -> list[str]:
    with Database(url).connect() as conn:
        return [row[0] for row in conn.execute("SELECT alert_id FROM alerts WHERE kind = 'dose_missed' ORDER BY at")]


def assert_no_drug(message: dict) -> None:
    text = (message["title"] + "\n" + message["message"]).lower()
    assert not [word for word in DRUG_WORDS if word.lower() in text], text


def test_a_missed_dose_reaches_the_people_then_the_clinic_until_someone_acks(tmp_path, broker, hook, database_url):
    path = care_toml(tmp_path / "care.toml", database_url=database_url, port=broker.port,
                     notify=[hook.url("people")], clinic_notify=[hook.url("clinic")])
    config = load_care_config(str(path))
    clock = Clock(datetime(2026, 11, 24, 18, 0, tzinfo=timezone.utc))      # 13:00 in New York
    service = CareService(config, workers=2, now=clock, timer=False)
    service.start()
    try:
        assert service.wait_ready(HANG)
        events, _ = missed_morning(tmp_path, broker)
        assert wait_until(lambda: stored(database_url) == len(events))
        assert sorted(w.handled for w in service.workers)[0] > 0          # the broker shared them out
        assert sum(w.handled for w in service.workers) == len(events)     # each once to the group
        with Database(database_url).connect() as conn:                     # two workers, one chain: nothing amiss
            assert conn.execute("SELECT count(*) FROM alerts WHERE audience = 'clinic'") == [(0,)]
            assert conn.execute("SELECT gap_since, stored FROM devices") == [(None, len(events))]

        assert service.round(clock.advance(seconds=5)) == []             # the burst may not be over
        [people] = service.round(clock.advance(seconds=10))
        [message] = hook.on("people")
        print(message["message"])
        assert message["title"].startswith("Sam: ") and "alerts" in message["title"]   # one message for the burst
        assert message["message"].count("a dose was missed: warning") == 2
        assert "Tue 24 Nov 10:00 (America/New_York)" in message["message"]   # sertraline's window closed
        assert_no_drug(message)
        missed = alert_ids(database_url)
        assert len(missed) == 2 and all(f"dispenser care ack {a}" in message["message"] for a in missed)

        assert service.round(clock.advance(minutes=14)) == [] and hook.on("clinic") == []
        result = dispenser("care", "ack", missed[0], "--by", "Alex", "--config", path)
        assert result.returncode == 0, result.stderr
        assert "acknowledged by Alex" in result.stdout
        [clinic] = service.round(clock.advance(minutes=1))
        escalated_ids = [a.alert_id for a in clinic.alerts]
        assert missed[1] in escalated_ids and missed[0] not in escalated_ids   # the acknowledged one stops
        [escalated] = hook.on("clinic")
        assert "Not acknowledged by Sam's people within 15 minutes" in escalated["message"]
        assert missed[0] not in escalated["message"] and missed[1] in escalated["message"]
        assert_no_drug(escalated)

        for alert_id in escalated_ids:
            assert dispenser("care", "ack", alert_id, "--config", path).returncode == 0
        assert service.round(clock.advance(hours=3)) == []
        assert len(hook.on("people")) == 1 and len(hook.on("clinic")) == 1
        status = json.loads(dispenser("care", "status", "--json", "--config", path).stdout)
        [device] = status["devices"]
        assert device["patient"] == "Sam" and device["last_event"]["seq"] == len(events)
        assert missed[0] not in [a["alert_id"] for a in device["open_alerts"]]
    finally:
        service.stop()


def test_a_device_back_after_days_is_told_in_one_message(tmp_path, broker, hook):
    """Three days with nobody pressing while the broker is away; then the backlog arrives
    at once (the workers reconnect and subscribe again by themselves): one message."""
    url = f"sqlite:///{tmp_path / 'care.db'}"
    config = load_care_config(str(care_toml(tmp_path / "care.toml", database_url=url, port=broker.port,
                                            notify=[hook.url("people")])))
    clock = Clock(datetime(2026, 11, 27, 18, 0, tzinfo=timezone.utc))
    service = CareService(config, workers=2, now=clock, timer=False)
    service.start()
    try:
        assert service.wait_ready(HANG)
        broker.stop()
        (tmp_path / "schedule.json").write_text((DEMO / "schedule.json").read_text())
        scenario = tmp_path / "days.toml"
        scenario.write_text('start = "2026-11-24T06:00:00"\nuntil = "2026-11-27T06:00:00"\nschedule = "schedule.json"\n'
                            "[stock]\nsertraline = 28\nnaltrexone = 20\nhydroxyzine = 10\n")
        device = tmp_path / "device.toml"
        device.write_text(f'[device]\nid = "{DEVICE}"\n[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\ntls = false\n')
        result = dispenser("simulate", "--scenario", scenario, "--config", device, "--db", tmp_path / "device.db")
        assert result.returncode == 0, result.stderr
        events = result.stdout.splitlines()
        assert sum('"dose_missed"' in line for line in events) >= 6
        broker.start()
        assert service.wait_ready(HANG)
        sync = dispenser("sync", "--once", "--config", device, "--db", tmp_path / "device.db")
        assert sync.returncode == 0, sync.stderr
        assert wait_until(lambda: stored(url) == len(events))
        assert service.round(clock.advance(seconds=config.alerts.batch_s)) != []
        [message] = hook.on("people")
        raised = sum('"alert.raised"' in line for line in events)
        assert message["title"].startswith(f"Sam: {raised} alerts") and "a dose was missed" in message["message"]
        assert_no_drug(message)
    finally:
        service.stop()


def test_events_published_while_the_service_is_away_arrive_when_it_is_back(tmp_path, broker, hook):
    url = f"sqlite:///{tmp_path / 'care.db'}"
    config = load_care_config(str(care_toml(tmp_path / "care.toml", database_url=url, port=broker.port)))
    first = CareService(config, workers=2, timer=False)
    first.start()
    assert first.wait_ready(HANG)
    first.stop()                                   # persistent sessions: the broker keeps their share
    events, _ = missed_morning(tmp_path, broker)
    again = CareService(config, workers=2, timer=False)
    again.start()
    try:
        assert wait_until(lambda: stored(url) == len(events))
        with Database(url).connect() as conn:
            assert conn.execute("SELECT min(seq), max(seq), count(DISTINCT seq) FROM events") == \
                [(1, len(events), len(events))]
    finally:
        again.stop()


def test_the_last_will_says_offline_and_after_offline_after_min_the_people_hear(tmp_path, broker, hook):
    url = f"sqlite:///{tmp_path / 'care.db'}"
    config = load_care_config(str(care_toml(tmp_path / "care.toml", database_url=url, port=broker.port,
                                            notify=[hook.url("people")])))
    clock = Clock(datetime(2026, 11, 24, 18, 0, tzinfo=timezone.utc))
    service = CareService(config, workers=1, now=clock, timer=False)
    service.start()
    try:
        assert service.wait_ready(HANG)
        device = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=DEVICE, protocol=MQTTProtocolVersion.MQTTv5)
        device.will_set(f"pilldispenser/{DEVICE}/status", json.dumps({"online": False}), qos=1, retain=True)
        device.connect(broker.host, broker.port, keepalive=30)
        device.loop_start()
        device.publish(f"pilldispenser/{DEVICE}/status", json.dumps({"online": True}), qos=1, retain=True).wait_for_publish(HANG)
        assert wait_until(lambda: online(url) == 1)
        device.socket().shutdown(socket.SHUT_RDWR)   # the connection dies without a DISCONNECT
        device.loop_stop()
        assert wait_until(lambda: online(url) == 0)
        assert service.round(clock.advance(minutes=29)) == []
        assert service.round(clock.advance(minutes=1)) == []               # raised; its burst may not be over
        [send] = service.round(clock.advance(seconds=config.alerts.batch_s))
        assert send.alerts[0].kind == "device_offline"
        [message] = hook.on("people")
        assert "Sam: the dispenser is offline (warning)" == message["title"]
        assert service.round(clock.advance(minutes=1)) == []              # one alert, not one per round
    finally:
        service.stop()


class Mailbox:
    """A local SMTP server (aiosmtpd): every message apprise's mailto:// sends, parsed."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller
        self.messages: list[email.message.Message] = []
        box = self

        class Handler:
            async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
                box.messages.append(email.message_from_bytes(envelope.content))   # type: ignore[attr-defined]
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def url(self, to: str) -> str:
        return f"mailto://127.0.0.1:{self.port}?from=care@example.org&to={to}&mode=insecure"

    def close(self) -> None:
        self.controller.stop()


def test_a_missed_dose_arrives_by_e_mail_through_mailto(tmp_path, broker):
    mailbox = Mailbox()
    url = f"sqlite:///{tmp_path / 'care.db'}"
    config = load_care_config(str(care_toml(tmp_path / "care.toml", database_url=url, port=broker.port,
                                            notify=[mailbox.url("family@example.org")])))
    clock = Clock(datetime(2026, 11, 24, 18, 0, tzinfo=timezone.utc))
    service = CareService(config, workers=1, now=clock, timer=False)
    service.start()
    try:
        assert service.wait_ready(HANG)
        events, _ = missed_morning(tmp_path, broker)
        assert wait_until(lambda: stored(url) == len(events))
        assert len(service.round(clock.advance(minutes=1))) == 1
        [mail] = mailbox.messages
        assert mail["To"] == "family@example.org" and mail["Subject"].startswith("Sam: ")
        body = mail.get_payload(decode=True).decode()
        assert body.count("a dose was missed: warning") == 2 and "dispenser care ack" in body
        assert_no_drug({"title": mail["Subject"], "message": body})
    finally:
        service.stop()
        mailbox.close()


def online(url: str) -> int | None:
    with Database(url).connect() as conn:
        rows = conn.execute("SELECT online FROM devices")
    return rows[0][0] if rows else None


def test_care_serve_delivers_a_missed_dose_within_a_minute_and_stops_on_sigterm(tmp_path, broker, hook):
    url = f"sqlite:///{tmp_path / 'care.db'}"
    path = care_toml(tmp_path / "care.toml", database_url=url, port=broker.port, notify=[hook.url("people")],
                     extra="[alerts]\nbatch_s = 1\ntick_s = 1\n")
    log = tmp_path / "serve.log"
    with open(log, "w") as stderr:
        serve = subprocess.Popen([sys.executable, "-m", "dispenser", "care", "serve", "--config", str(path),
                                  "--workers", "2"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        assert wait_until(lambda: "2 workers subscribed" in log.read_text() or serve.poll() is not None)
        assert serve.poll() is None
        missed_morning(tmp_path, broker)
        assert wait_until(lambda: len(hook.on("people")) >= 1)
        message = hook.on("people")[0]
        assert "Sam" in message["title"] and "a dose was missed" in message["message"]
        assert_no_drug(message)
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=HANG)
    assert serve.returncode == 0, log.read_text()
    assert "Traceback" not in log.read_text()
