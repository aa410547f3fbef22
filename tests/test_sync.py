"""The device's MQTT link against a real Mosquitto (contract section 4).

Each test starts its own broker on a free port (tests/broker.py). Nothing sleeps for a
fixed time: tests wait on conditions (a message arrived, the outbox is empty) with
generous timeouts that are only reached when something is broken.
"""
from __future__ import annotations

import json
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import paho.mqtt.client as paho_client
import pytest

from broker import Clinic, free_port
from waiting import HANG, finishes
from dispenser.events import Draft
from dispenser.store import Store
from dispenser.sync import MAX_SCHEDULE_BYTES, MqttSettings, Sync, Topics

DEVICE = "disp-0001"
T0 = datetime(2026, 11, 21, 6, 0, tzinfo=timezone.utc)
TOPICS = Topics("pilldispenser", DEVICE)
ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- helpers

@pytest.fixture
def db(tmp_path) -> Path:
    path = tmp_path / "d.db"
    Store.open(path, DEVICE).close()
    return path


@pytest.fixture
def store(db):
    """The daemon's side of the database: it appends; each Sync opens its own Store."""
    with Store.open(db, DEVICE) as opened:
        yield opened


@pytest.fixture
def make_sync(db):
    """make(broker_or_settings, **options) -> a started Sync; all stopped after the test."""
    made: list[Sync] = []

    def make(target, *, start=True, outbox="default", **options) -> Sync:
        settings = target if isinstance(target, MqttSettings) else settings_for(target)
        outbox = opener(db) if outbox == "default" else outbox
        sync = Sync(settings, options.pop("device_id", DEVICE), outbox, **options)
        made.append(sync)
        if start:
            sync.start()
        return sync

    yield make
    for sync in made:
        sync.stop()


@pytest.fixture
def clinics():
    made: list[Clinic] = []

    def make(broker, *topics, **options) -> Clinic:
        clinic = Clinic(broker, client_id=f"clinic-{len(made)}", **options)
        made.append(clinic)
        return clinic.connect(*topics)

    yield make
    for clinic in made:
        clinic.close()


def opener(db: Path):
    return lambda: Store.open(db, DEVICE)


def into(received: "queue.Queue[bytes]"):
    """An on_schedule that keeps each payload and answers it at once (its PUBACK goes then)."""
    def take(item) -> None:
        received.put(item.payload)
        item.done()
    return take


def settings_for(broker, **options) -> MqttSettings:
    return MqttSettings(host=broker.host, port=broker.port, **options)


def append(store: Store, count: int, alert_every: int = 0) -> list[dict]:
    """Log `count` events; every `alert_every`-th one an alert.raised."""
    drafts = []
    for n in range(1, count + 1):
        if alert_every and n % alert_every == 0:
            drafts.append(Draft("alert.raised", {"alert_id": f"a{n}", "kind": "dose.missed", "severity": "high",
                                                 "message": "missed", "events": []}))
        else:
            drafts.append(Draft("dose.due", {"n": n}))
    return store.append(drafts, T0)


def unique_events(clinic: Clinic, topic: str = TOPICS.events) -> list[dict]:
    """What the clinic keeps: the first copy of each event_id, in arrival order."""
    seen, kept = set(), []
    for event in clinic.json_on(topic):
        if event["event_id"] not in seen:
            seen.add(event["event_id"])
            kept.append(event)
    return kept


def status_now(broker, clinics) -> dict:
    """The retained status, as a clinic connecting now sees it.

    A status the device publishes while this clinic subscribes reaches it live, without the
    retain flag (on a loaded machine, `wait_connected` can return before the broker has the
    "online" of that connection); a clinic connecting after that gets it retained: look again.
    """
    for _ in range(3):
        clinic = clinics(broker, TOPICS.status)
        assert clinic.wait_for(lambda: clinic.on(TOPICS.status), HANG), "no retained status"
        statuses = [m for m in clinic.messages if m[0] == TOPICS.status]
        if len(statuses) == 1 and statuses[0][2]:
            break
    [(topic, payload, retained)] = statuses
    assert retained
    return json.loads(payload)


# --------------------------------------------------------------------------- events

def test_every_event_arrives_once_in_seq_order_and_is_marked_sent(broker, store, make_sync, clinics):
    clinic = clinics(broker, f"pilldispenser/{DEVICE}/events", TOPICS.alerts)
    events = append(store, 300, alert_every=7)
    sync = make_sync(broker)
    assert sync.wait_idle(HANG), sync.last_error
    assert store.backlog() == 0
    assert clinic.wait_for(lambda: len(unique_events(clinic)) == 300, HANG)
    got = unique_events(clinic)
    assert [e["seq"] for e in got] == list(range(1, 301))
    assert got == events, "what arrives is the logged event, hash chain included"


def test_alerts_go_to_events_and_alerts(broker, store, make_sync, clinics):
    clinic = clinics(broker, TOPICS.events, TOPICS.alerts)
    events = append(store, 10, alert_every=3)
    sync = make_sync(broker)
    assert sync.wait_idle(HANG)
    alerts = [e for e in events if e["type"] == "alert.raised"]
    assert clinic.wait_for(lambda: len(unique_events(clinic, TOPICS.alerts)) == len(alerts), HANG)
    assert clinic.wait_for(lambda: len(unique_events(clinic)) == len(events), HANG)
    assert unique_events(clinic, TOPICS.alerts) == alerts
    assert unique_events(clinic) == events


def test_notify_wakes_the_drain(broker, store, make_sync, clinics):
    clinic = clinics(broker, TOPICS.events)
    sync = make_sync(broker)
    assert sync.wait_connected(HANG)
    for round_ in range(1, 4):
        append(store, 5)
        sync.notify()
        assert sync.wait_idle(HANG)
        assert clinic.wait_for(lambda: len(unique_events(clinic)) == 5 * round_, HANG)
    assert store.backlog() == 0


def test_broker_down_events_wait_then_all_arrive(broker_factory, store, make_sync, clinics):
    broker = broker_factory(persistence=True)  # the clinic's session survives the restart
    clinic = clinics(broker, TOPICS.events, persistent=True)
    sync = make_sync(broker)
    append(store, 5)
    sync.notify()
    assert sync.wait_idle(HANG)

    broker.stop()
    append(store, 40, alert_every=10)
    sync.notify()
    assert store.backlog() == 40, "nothing is acknowledged without a broker"
    assert not sync.wait_idle(0.3)
    assert store.backlog() == 40

    broker.start()
    assert sync.wait_idle(HANG), sync.last_error
    assert store.backlog() == 0
    assert clinic.wait_for(lambda: len(unique_events(clinic)) == 45, HANG)
    assert [e["seq"] for e in unique_events(clinic)] == list(range(1, 46))


def test_unsent_rows_go_after_a_restart(broker, store, make_sync, clinics):
    append(store, 10)
    nowhere = MqttSettings(host="127.0.0.1", port=free_port())
    first = make_sync(nowhere)
    assert not first.wait_connected(HANG)
    first.stop()
    assert store.backlog() == 10

    clinic = clinics(broker, TOPICS.events)
    second = make_sync(broker)  # a new process: same database, new Sync
    assert second.wait_idle(HANG)
    assert clinic.wait_for(lambda: len(unique_events(clinic)) == 10, HANG)
    assert [e["seq"] for e in unique_events(clinic)] == list(range(1, 11))
    assert store.backlog() == 0


def test_no_broker_at_all_neither_blocks_nor_raises(store, make_sync):
    append(store, 3)

    def start_and_use() -> Sync:
        sync = make_sync(MqttSettings(host="127.0.0.1", port=free_port()))
        sync.notify()
        sync.publish_state({"backlog": 3})
        return sync

    sync = finishes(start_and_use)  # paho retries for ever: waiting for a connection would never return
    assert not sync.wait_connected(HANG)
    assert "cannot connect" in sync.last_error
    finishes(lambda: sync.stop(timeout=10 * HANG))  # never connected: no offline status to wait for
    assert store.backlog() == 3


def test_stop_does_not_sit_out_the_wait_before_the_next_attempt(store, make_sync, monkeypatch):
    """A sync that never reached its broker stops at once. paho waits between attempts in
    1 s sleeps and looked at loop_stop() only between them: ~1 s for every such stop(). Here
    paho's sleep never ends on its own, so a stop that waits for it would never return."""
    released = threading.Event()

    class SleepWithoutEnd:
        def __getattr__(self, name: str):
            return getattr(time, name)

        @staticmethod
        def sleep(seconds: float) -> None:
            released.wait(10 * HANG)

    append(store, 2)
    monkeypatch.setattr(paho_client, "time", SleepWithoutEnd())
    try:
        sync = make_sync(MqttSettings(host="127.0.0.1", port=free_port()))
        assert not sync.wait_connected(HANG)  # an attempt failed: the wait before the next one
        finishes(lambda: sync.stop(timeout=10 * HANG))
        assert store.backlog() == 2  # the outbox as it was: nothing marked sent
    finally:
        released.set()


def test_unresolvable_host_does_not_block_start(store, make_sync, monkeypatch):
    """The name is looked up on paho's thread: start() returns while a DNS server keeps silent."""
    answer = threading.Event()
    real_getaddrinfo = socket.getaddrinfo

    def silent_dns(host, *args, **kwargs):
        if host == "no-such-host.invalid":
            answer.wait(10 * HANG)
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", silent_dns)
    try:
        sync = finishes(lambda: make_sync(MqttSettings(host="no-such-host.invalid")))
    finally:
        answer.set()
    assert not sync.wait_connected(HANG)


# --------------------------------------------------------------------------- status

def test_status_online_after_connect_offline_after_clean_stop(broker, make_sync, clinics):
    sync = make_sync(broker, on_schedule=lambda payload: None, now=lambda: T0)
    assert sync.wait_connected(HANG)
    assert status_now(broker, clinics) == {"online": True, "device_id": DEVICE, "since": "2026-11-21T06:00:00Z"}
    sync.stop()
    assert status_now(broker, clinics)["online"] is False


DEVICE_PROCESS = r"""
import sys, time
from dispenser.store import Store
from dispenser.sync import MqttSettings, Sync
host, port, db = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sync = Sync(MqttSettings(host=host, port=port, keepalive=2), "disp-0001",
            lambda: Store.open(db, "disp-0001"), lambda payload: None)
sync.start()
print("ready" if sync.wait_connected(60) else "failed", flush=True)
time.sleep(120)
"""


def test_last_will_says_offline_when_the_device_dies(broker, db, clinics):
    clinic = clinics(broker, TOPICS.status)
    device = subprocess.Popen([sys.executable, "-c", DEVICE_PROCESS, broker.host, str(broker.port), str(db)],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert device.stdout.readline().strip() == "ready"
        assert clinic.wait_for(lambda: clinic.json_on(TOPICS.status), HANG)
        assert clinic.json_on(TOPICS.status)[-1]["online"] is True
        device.send_signal(signal.SIGKILL)
        device.wait(HANG)
        assert clinic.wait_for(lambda: clinic.json_on(TOPICS.status)[-1] == {"online": False}, HANG)
    finally:
        device.kill()
        device.wait()
    assert status_now(broker, clinics) == {"online": False}, "the Last Will is retained"


def test_state_is_retained_and_the_newest_offline_state_goes_on_connect(broker, make_sync, clinics):
    sync = make_sync(broker)
    assert sync.wait_idle(HANG)
    broker.stop()
    sync.notify()  # idle no more until it reconnects and finds the outbox empty again
    sync.publish_state({"backlog": 1})
    sync.publish_state({"backlog": 2})
    broker.start()  # without persistence: only the state kept by the device can reach it
    assert sync.wait_idle(HANG)
    clinic = clinics(broker, TOPICS.state)
    assert clinic.wait_for(lambda: clinic.json_on(TOPICS.state) == [{"backlog": 2}], HANG)
    sync.publish_state({"backlog": 0})
    assert clinic.wait_for(lambda: clinic.json_on(TOPICS.state)[-1] == {"backlog": 0}, HANG)


# ------------------------------------------------------------------------- schedules

def test_schedule_set_reaches_on_schedule(broker, make_sync, clinics):
    received: queue.Queue[bytes] = queue.Queue()
    sync = make_sync(broker, on_schedule=into(received))
    assert sync.wait_connected(HANG)
    document = json.dumps({"schema": "dispenser.schedule/1", "version": 3, "name": "café"}).encode()
    clinic = clinics(broker)
    assert not clinic.publish(TOPICS.schedule_set, document).is_failure
    assert received.get(timeout=HANG) == document


def test_schedule_sent_while_offline_arrives_later(broker, make_sync, clinics):
    received: queue.Queue[bytes] = queue.Queue()
    first = make_sync(broker, on_schedule=into(received))
    assert first.wait_connected(HANG)
    first.stop()  # the persistent session stays on the broker

    clinic = clinics(broker)
    reason = clinic.publish(TOPICS.schedule_set, b'{"version": 4}')
    assert reason.value == 0, f"the broker queued it for the device's session, not {reason}"

    second = make_sync(broker, on_schedule=into(received))
    assert received.get(timeout=HANG) == b'{"version": 4}'
    assert second.wait_connected(HANG)


def test_over_64_kib_is_handed_over_raw_and_huge_ones_never_arrive(broker, make_sync, clinics):
    received: queue.Queue[bytes] = queue.Queue()
    sync = make_sync(broker, on_schedule=into(received))
    assert sync.wait_connected(HANG)
    clinic = clinics(broker)
    huge = b"{" + b" " * 200_000 + b"}"
    just_over = b"x" * (MAX_SCHEDULE_BYTES + 1)  # within the packet size slack: for the caller to refuse
    for payload in (huge, just_over, b'{"version": 5}'):
        clinic.publish(TOPICS.schedule_set, payload)
    assert received.get(timeout=HANG) is None, "Mosquitto drops what exceeds our Maximum Packet Size; " \
        "the one just over arrives as its size alone"
    assert received.get(timeout=HANG) == b'{"version": 5}'
    assert received.empty(), "the huge one came before the small one, so it was dropped"


def test_a_failing_on_schedule_does_not_stop_the_link(broker, store, make_sync, clinics):
    calls: queue.Queue[bytes] = queue.Queue()

    def explode(item) -> None:
        calls.put(item.payload)
        item.done()
        raise RuntimeError("boom")

    sync = make_sync(broker, on_schedule=explode)
    assert sync.wait_connected(HANG)
    clinic = clinics(broker, TOPICS.events)
    clinic.publish(TOPICS.schedule_set, b"1")
    clinic.publish(TOPICS.schedule_set, b"2")
    assert calls.get(timeout=HANG) == b"1" and calls.get(timeout=HANG) == b"2"
    append(store, 1)
    sync.notify()
    assert sync.wait_idle(HANG)


# -------------------------------------------------------------------- one-shot sync

def test_drain_once_sends_everything_as_a_separate_client_without_a_will(broker_factory, store, make_sync, clinics):
    broker = broker_factory(extra="log_type debug")
    daemon = make_sync(broker, on_schedule=lambda payload: None)
    assert daemon.wait_connected(HANG)
    clinic = clinics(broker, TOPICS.events, TOPICS.status)
    append(store, 25, alert_every=5)
    once = make_sync(broker, start=False, client_suffix="sync")
    assert once.client_id == f"{DEVICE}-sync"
    assert once.drain_once(HANG)
    assert store.backlog() == 0
    assert clinic.wait_for(lambda: len(unique_events(clinic)) == 25, HANG)
    log = broker.log()
    connected = log.split(f"as {DEVICE}-sync")[1].splitlines()[1]
    assert "No will message specified" in connected
    assert daemon.connected, "the daemon's session was not taken over"
    assert [s["online"] for s in clinic.json_on(TOPICS.status)] == [True]


def test_drain_once_without_a_broker_returns_false_quickly(store, make_sync):
    append(store, 2)
    once = make_sync(MqttSettings(host="127.0.0.1", port=free_port()), start=False, client_suffix="sync")
    # False on the failed connection attempt, not at the end of its own timeout (far beyond HANG).
    assert finishes(lambda: once.drain_once(10 * HANG)) is False
    assert store.backlog() == 2


# ------------------------------------------------------------------------ MQTT 3.1.1

def test_mqtt_311_smoke(broker, store, make_sync, clinics):
    clinic = clinics(broker, TOPICS.events, TOPICS.alerts, TOPICS.status)
    received: queue.Queue[bytes] = queue.Queue()
    append(store, 12, alert_every=4)
    sync = make_sync(settings_for(broker, protocol="3.1.1"), on_schedule=into(received))
    assert sync.wait_idle(HANG)
    assert clinic.wait_for(lambda: len(unique_events(clinic)) == 12, HANG)
    assert [e["seq"] for e in unique_events(clinic)] == list(range(1, 13))
    assert clinic.wait_for(lambda: len(unique_events(clinic, TOPICS.alerts)) == 3, HANG)
    assert clinic.json_on(TOPICS.status)[-1]["online"] is True
    big = b"x" * (MAX_SCHEDULE_BYTES * 2)  # no Maximum Packet Size in 3.1.1: it arrives, but not its bytes
    clinic.publish(TOPICS.schedule_set, big)
    assert received.get(timeout=HANG) is None
    sync.stop()
    assert clinic.wait_for(lambda: clinic.json_on(TOPICS.status)[-1]["online"] is False, HANG)


# -------------------------------------------------------------------------- settings

def test_settings_from_config(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    settings = MqttSettings.from_config({"host": "mqtt.clinic", "port": 8883, "username": "disp-0001",
                                         "password": "pw", "tls_ca": str(ca), "protocol": "3.1.1"})
    assert (settings.host, settings.port, settings.protocol, settings.tls) == ("mqtt.clinic", 8883, "3.1.1", True)
    defaults = MqttSettings.from_config({"host": "h"})
    assert (defaults.port, defaults.topic_prefix, defaults.protocol, defaults.keepalive, defaults.tls) == \
        (1883, "pilldispenser", "5", 30, True), "from a config file, TLS unless it says tls = false"
    assert MqttSettings.from_config({"host": "h", "tls": False}).tls is False


@pytest.mark.parametrize("table, message", [
    ({}, "mqtt.host: required"),
    ({"host": ""}, "mqtt.host: must be a non-empty string"),
    ({"host": "h", "port": "1883"}, "mqtt.port: must be an integer from 1 to 65535, got '1883'"),
    ({"host": "h", "port": 0}, "mqtt.port"),
    ({"host": "h", "port": True}, "mqtt.port"),
    ({"host": "h", "protocol": "3"}, 'mqtt.protocol: must be "5" or "3.1.1"'),
    ({"host": "h", "keepalive": 0}, "mqtt.keepalive"),
    ({"host": "h", "topic_prefix": "a/#"}, "mqtt.topic_prefix"),
    ({"host": "h", "topic_prefix": "/a"}, "mqtt.topic_prefix"),
    ({"host": "h", "tls": "no"}, "mqtt.tls: must be true or false"),
    ({"host": "h", "tls": False, "tls_ca": "/etc/ca.pem"}, "mqtt.tls: false (plain MQTT) contradicts"),
    ({"host": "h", "password": "pw"}, "mqtt.password: needs mqtt.username"),
    ({"host": "h", "tsl_ca": "x"}, "mqtt.tsl_ca: unknown key"),
])
def test_bad_settings_are_one_line_value_errors(table, message):
    with pytest.raises(ValueError) as caught:
        MqttSettings.from_config(table)
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("device_id", ["", "a/b", "a+", "#"])
def test_device_ids_that_would_break_topics_are_refused(device_id):
    with pytest.raises(ValueError, match="MQTT topic"):
        Topics("pilldispenser", device_id)


def test_topics():
    assert [TOPICS.events, TOPICS.alerts, TOPICS.status, TOPICS.state, TOPICS.schedule_set] == [
        f"pilldispenser/{DEVICE}/{name}" for name in ("events", "alerts", "status", "state", "schedule/set")]


def test_no_outbox_still_gives_status_and_schedules(broker, make_sync, clinics):
    received: queue.Queue[bytes] = queue.Queue()
    sync = make_sync(broker, outbox=None, on_schedule=into(received))
    assert sync.wait_connected(HANG)
    clinics(broker).publish(TOPICS.schedule_set, b"{}")
    assert received.get(timeout=HANG) == b"{}"


def test_a_store_opened_on_another_thread_is_reported_not_silently_stuck(broker, db, make_sync):
    """SQLite connections are per thread: pass a factory. A Store object fails visibly."""
    wrong = Store.open(db, DEVICE)
    sync = make_sync(broker, outbox=wrong)
    assert sync.wait_for(lambda s: "cannot read the outbox" in (s.last_error or ""), HANG)
    assert "thread" in sync.last_error
    wrong.close()
