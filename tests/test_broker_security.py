"""A clinic broker as docs/MQTT.md sets it up: TLS, a password file, a per-device ACL.

The ACL is read from docs/MQTT.md itself, so the documented file is the tested one.
"""
from __future__ import annotations

import queue
import re
from pathlib import Path

import pytest

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from broker import Clinic, make_tls_files
from dispenser.store import Store
from dispenser.sync import MqttSettings, Sync, Topics
from test_sync import append, unique_events

DOCS = Path(__file__).resolve().parents[1] / "docs" / "MQTT.md"
A, B = "disp-a", "disp-b"
USERS = {A: "secret-a", B: "secret-b", "clinic": "secret-clinic"}


def documented_acl() -> str:
    """The fenced block of docs/MQTT.md that starts with `# /etc/mosquitto/acl`."""
    blocks = re.findall(r"```[a-z]*\n(.*?)```", DOCS.read_text(), re.S)
    [acl] = [block for block in blocks if block.startswith("# /etc/mosquitto/acl")]
    return acl


@pytest.fixture
def secure(broker_factory, tls_files):
    """TLS only, passwords, the documented ACL."""
    return broker_factory(users=USERS, acl=documented_acl(), tls=tls_files)


@pytest.fixture
def syncs():
    made: list[Sync] = []
    yield made
    for sync in made:
        sync.stop()


@pytest.fixture
def clinic(secure, tls_files):
    client = Clinic(secure, username="clinic", password=USERS["clinic"], tls=tls_files)
    client.connect("pilldispenser/+/events", "pilldispenser/+/alerts", "pilldispenser/+/status")
    yield client
    client.close()


def device(secure, device_id, tmp_path, syncs, **settings) -> tuple[Sync, Store]:
    db = tmp_path / f"{device_id}.db"
    store = Store.open(db, device_id)
    options = {"host": secure.host, "port": secure.port, "username": device_id,
               "password": USERS.get(device_id), **settings}
    sync = Sync(MqttSettings(**options), device_id, lambda: Store.open(db, device_id),
                on_schedule=lambda payload: None)
    syncs.append(sync)
    sync.start()
    return sync, store


def test_right_credentials_over_tls(secure, clinic, tls_files, tmp_path, syncs):
    sync, store = device(secure, A, tmp_path, syncs, tls_ca=str(tls_files.ca))
    append(store, 6, alert_every=3)
    sync.notify()
    assert sync.wait_idle(10), sync.last_error
    assert store.backlog() == 0
    topics = Topics("pilldispenser", A)
    assert clinic.wait_for(lambda: len(unique_events(clinic, topics.events)) == 6, 5)
    assert clinic.wait_for(lambda: len(unique_events(clinic, topics.alerts)) == 2, 5)
    assert clinic.json_on(topics.status)[-1]["online"] is True


def test_wrong_password_is_refused(secure, tls_files, tmp_path, syncs):
    sync, store = device(secure, A, tmp_path, syncs, tls_ca=str(tls_files.ca), password="wrong")
    append(store, 1)
    assert not sync.wait_connected(5)
    assert "refused" in sync.last_error and ("Bad user name or password" in sync.last_error
                                            or "Not authorized" in sync.last_error)
    assert store.backlog() == 1


def test_a_client_without_the_ca_cannot_connect(secure, tmp_path, syncs):
    other_ca = make_tls_files(tmp_path / "other-ca").ca
    sync, _ = device(secure, A, tmp_path, syncs, tls_ca=str(other_ca))
    assert not sync.wait_connected(5), "the TLS handshake must fail"
    assert "cannot connect" in sync.last_error


def test_plain_mqtt_to_the_tls_listener_does_not_connect(secure, tmp_path, syncs):
    sync, _ = device(secure, A, tmp_path, syncs)
    assert not sync.wait_connected(5)
    assert "closed" in sync.last_error


def _raw_device(secure, tls_files, name: str):
    """A bare paho client logged in as device `name`, to try what the ACL forbids."""
    events: queue.Queue = queue.Queue()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{name}-raw", protocol=MQTTProtocolVersion.MQTTv5)
    client.username_pw_set(name, USERS[name])
    client.tls_set(ca_certs=str(tls_files.ca))
    client.on_connect = lambda c, u, flags, rc, p: events.put(("connect", rc))
    client.on_subscribe = lambda c, u, mid, rcs, p: events.put(("suback", rcs))
    client.on_publish = lambda c, u, mid, rc, p: events.put(("puback", rc))
    client.on_message = lambda c, u, m: events.put(("message", m.topic, bytes(m.payload)))
    client.connect(secure.host, secure.port)
    client.loop_start()
    kind, reason = events.get(timeout=5)
    assert kind == "connect" and not reason.is_failure
    return client, events


def test_acl_a_device_cannot_read_another_devices_schedules(secure, clinic, tls_files):
    client, events = _raw_device(secure, tls_files, A)
    try:
        client.subscribe([(Topics("pilldispenser", B).schedule_set, 1), (Topics("pilldispenser", A).schedule_set, 1)])
        assert events.get(timeout=5)[0] == "suback"  # Mosquitto grants it and filters on delivery
        clinic.publish(Topics("pilldispenser", B).schedule_set, b"for B")
        clinic.publish(Topics("pilldispenser", A).schedule_set, b"for A")
        assert events.get(timeout=5) == ("message", Topics("pilldispenser", A).schedule_set, b"for A")
        assert events.empty()
    finally:
        client.loop_stop()
        client.disconnect()


def test_acl_a_device_cannot_publish_as_another(secure, clinic, tls_files):
    client, events = _raw_device(secure, tls_files, A)
    try:
        client.publish(Topics("pilldispenser", B).events, b'{"event_id": "forged"}', qos=1)
        kind, reason = events.get(timeout=5)
        assert kind == "puback" and reason.is_failure, reason  # 0x87 Not authorized
    finally:
        client.loop_stop()
        client.disconnect()
    # Refused when received, so nothing can follow; the clinic's own message shows the way is clear.
    sentinel = Topics("pilldispenser", "clinic").events  # the clinic may write only there
    clinic.publish(sentinel, b'{"event_id": "sentinel"}')
    assert clinic.wait_for(lambda: clinic.on(sentinel), 5)
    assert clinic.on(Topics("pilldispenser", B).events) == []


def test_refused_rows_stay_in_the_outbox(broker_factory, tmp_path, syncs):
    """A device whose user may not write events keeps them, and says why."""
    no_events = "pattern write pilldispenser/%u/status\npattern read pilldispenser/%u/schedule/set\n"
    broker = broker_factory(users=USERS, acl=no_events)
    db = tmp_path / "a.db"
    store = Store.open(db, A)
    append(store, 3)
    settings = MqttSettings(host=broker.host, port=broker.port, username=A, password=USERS[A])
    sync = Sync(settings, A, lambda: Store.open(db, A), on_schedule=lambda payload: None)
    syncs.append(sync)
    sync.start()
    assert sync.wait_for(lambda s: s.last_refusal is not None, 5)
    assert "Not authorized" in sync.last_refusal
    assert store.backlog() == 3


def test_an_alert_stays_unsent_until_both_topics_take_it(broker_factory, tmp_path, syncs, request):
    """Here the ACL lets the device write events but not alerts."""
    no_alerts = ("user clinic\ntopic read pilldispenser/+/events\n"
                 "pattern write pilldispenser/%u/events\npattern write pilldispenser/%u/status\n"
                 "pattern read pilldispenser/%u/schedule/set\n")
    broker = broker_factory(users=USERS, acl=no_alerts)
    reader = Clinic(broker, username="clinic", password=USERS["clinic"]).connect("pilldispenser/+/events")
    request.addfinalizer(reader.close)  # someone reads the events: a row nobody reads (0x10) stays unsent
    db = tmp_path / "a.db"
    store = Store.open(db, A)
    [first, alert] = append(store, 2, alert_every=2)
    settings = MqttSettings(host=broker.host, port=broker.port, username=A, password=USERS[A])
    sync = Sync(settings, A, lambda: Store.open(db, A), on_schedule=lambda payload: None)
    syncs.append(sync)
    sync.start()
    assert sync.wait_for(lambda s: s.last_refusal is not None, 5)
    assert f"seq {alert['seq']} not accepted: Not authorized" in sync.last_refusal
    assert sync.wait_for(lambda s: store.backlog() == 1, 5)
    assert [seq for seq, _ in store.unsent(10)] == [alert["seq"]]
