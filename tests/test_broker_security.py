"""The clinic's broker as shipped in broker/: nobody on the network can stop, fool or
impersonate a dispenser.

Every test here runs Mosquitto with broker/mosquitto.conf itself (tests/broker.py
changes only ports and paths) and accounts made by broker/dynsec.py, as docs/MQTT.md
tells a clinic to: TLS with client certificates, accounts bound to client ids, per-device
and per-caregiver rights, and a packet size limit.
"""
from __future__ import annotations

import fcntl
import json
import os
import queue
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from broker import Clinic, ShippedBroker, make_client_cert, make_tls_files
from dispenser.store import Store
from inprocess import dispenser as run_in_process
from dispenser.sync import MqttSettings, Sync, Topics
from test_sync import append, unique_events
from waiting import HANG, wait_until

A, B = "disp-a", "disp-b"
CARER = "sam"                       # a caregiver given disp-a only
PASSWORDS = {A: "secret-of-disp-a", B: "secret-of-disp-b", CARER: "secret-of-sam-1",
             "clinic": ShippedBroker.CLINIC_PASSWORD}
PREFIX = "pilldispenser"
KIB = 1024


@pytest.fixture(scope="module")
def accounts(tmp_path_factory, tls_files) -> Path:
    """Two devices and a caregiver for disp-a, added once with broker/dynsec.py as the docs say;
    the plugin's file they leave is copied into each test's broker.

    Once a run: xdist's workers and the modules that use this fixture share the file, made by
    the first under a lock in the run's own temporary folder (0.3 s of CPU each time: a broker
    and a dozen mosquitto_ctrl). It holds accounts and roles only, nothing of a broker's TLS."""
    base = tmp_path_factory.getbasetemp()
    run = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # pytest-N/, not older runs'
    made = run / "shipped-accounts.json"
    with open(run / "shipped-accounts.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not made.exists():
            broker = ShippedBroker(tmp_path_factory.mktemp("accounts"), tls_files)
            broker.start()
            try:
                broker.add_device(A, PASSWORDS[A])
                broker.add_device(B, PASSWORDS[B])
                broker.add_caregiver(CARER, PASSWORDS[CARER], A)
            finally:
                broker.stop()
            shutil.copyfile(broker.dynsec_file, run / "shipped-accounts.part")
            os.replace(run / "shipped-accounts.part", made)
    return made


@pytest.fixture
def shipped(tmp_path, tls_files, accounts):
    """A fresh shipped broker (no sessions, nothing retained) with those accounts."""
    broker = ShippedBroker(tmp_path / "broker", tls_files, accounts_from=accounts)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def cert(tls_files, name):
    return make_client_cert(tls_files, name)


@pytest.fixture
def syncs():
    made: list[Sync] = []
    yield made
    for sync in made:
        sync.stop()


@pytest.fixture
def clinics():
    made: list[Clinic] = []
    yield made
    for client in made:
        client.close()


def connect_as(broker, tls_files, clinics, username, *topics, client_id=None, password=None,
               persistent=False, protocol="5", wait=True) -> Clinic:
    """A test client logged in as `username` (its own certificate), subscribed to `topics`."""
    client = Clinic(broker, client_id=client_id or f"{username}-test", username=username,
                    password=password or PASSWORDS.get(username.removesuffix("-sync")),
                    tls=tls_files, client_cert=cert(tls_files, username), persistent=persistent,
                    protocol=protocol)
    clinics.append(client)
    if wait:
        client.connect(*topics)
    return client


@pytest.fixture
def clinic(shipped, tls_files, clinics):
    return connect_as(shipped, tls_files, clinics, "clinic", f"{PREFIX}/+/events", f"{PREFIX}/+/alerts",
                      f"{PREFIX}/+/status", f"{PREFIX}/+/state", client_id="clinic-watch-test")


def settings_for(broker, tls_files, device_id, **overrides) -> MqttSettings:
    client_cert, client_key = cert(tls_files, device_id)
    options = {"host": broker.host, "port": broker.port, "username": device_id,
               "password": PASSWORDS.get(device_id), "tls_ca": str(tls_files.ca),
               "tls_cert": str(client_cert), "tls_key": str(client_key), **overrides}
    return MqttSettings(**options)


def daemon(broker, tls_files, device_id, tmp_path, syncs, received=None, **overrides) -> tuple[Sync, Store]:
    """The device's daemon-side Sync (client id = device id, persistent session, Will)."""
    db = tmp_path / f"{device_id}.db"
    store = Store.open(db, device_id)
    inbox = received if received is not None else []
    sync = Sync(settings_for(broker, tls_files, device_id, **overrides), device_id,
                lambda: Store.open(db, device_id), on_schedule=lambda item: (inbox.append(item.payload), item.done()))
    syncs.append(sync)
    sync.start()
    return sync, store


def refused_connect(broker, tls_files, username, client_id, protocol="5", password=None):
    """Try to log in; the CONNACK's reason code when refused, None when accepted."""
    client = Clinic(broker, client_id=client_id, username=username, password=password or PASSWORDS[username],
                    tls=tls_files, client_cert=cert(tls_files, username), protocol=protocol)
    try:
        client.client.connect_async(broker.host, broker.port, 30)
        client.client.loop_start()
        assert client.wait_for(lambda: client.connected or client.refused is not None, HANG)
        return client.refused
    finally:
        client.close()


def taken_over(broker) -> bool:
    return "already connected, closing old connection" in broker.log()


# --- TLS with client certificates --------------------------------------------------------


def test_a_device_with_its_account_and_certificate_delivers(shipped, clinic, tls_files, tmp_path, syncs):
    sync, store = daemon(shipped, tls_files, A, tmp_path, syncs)
    append(store, 6, alert_every=3)
    sync.notify()
    assert sync.wait_idle(HANG), sync.last_error
    assert store.backlog() == 0
    topics = Topics(PREFIX, A)
    assert clinic.wait_for(lambda: len(unique_events(clinic, topics.events)) == 6, HANG)
    assert clinic.wait_for(lambda: len(unique_events(clinic, topics.alerts)) == 2, HANG)
    assert clinic.wait_for(lambda: clinic.json_on(topics.status) and clinic.json_on(topics.status)[-1]["online"], HANG)


def test_wrong_password_is_refused(shipped, tls_files, tmp_path, syncs):
    sync, store = daemon(shipped, tls_files, A, tmp_path, syncs, password="wrong-password")
    append(store, 1)
    assert not sync.wait_connected(HANG)
    assert "refused" in sync.last_error
    assert store.backlog() == 1


def test_no_client_certificate_no_connection(shipped, tls_files, tmp_path, syncs):
    """The right password alone is not enough: the listener requires a certificate."""
    sync, _ = daemon(shipped, tls_files, A, tmp_path, syncs, tls_cert=None, tls_key=None)
    assert not sync.wait_connected(HANG)
    assert sync.last_error


def test_a_client_certificate_from_another_ca_is_refused(shipped, tls_files, tmp_path, syncs):
    other = make_tls_files(tmp_path / "other-ca")
    other_cert, other_key = make_client_cert(other, A)
    sync, _ = daemon(shipped, tls_files, A, tmp_path, syncs, tls_cert=str(other_cert), tls_key=str(other_key))
    assert not sync.wait_connected(HANG)


def test_a_device_without_the_ca_cannot_connect(shipped, tls_files, tmp_path, syncs):
    other_ca = make_tls_files(tmp_path / "other-ca").ca
    sync, _ = daemon(shipped, tls_files, A, tmp_path, syncs, tls_ca=str(other_ca))
    assert not sync.wait_connected(HANG)
    assert "cannot connect" in sync.last_error


def test_plain_mqtt_to_the_tls_listener_does_not_connect(shipped, tls_files, tmp_path, syncs):
    sync, _ = daemon(shipped, tls_files, A, tmp_path, syncs, tls_ca=None, tls_cert=None, tls_key=None)
    assert not sync.wait_connected(HANG)
    assert "closed" in sync.last_error


def test_no_anonymous_clients(shipped):
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="anon", protocol=MQTTProtocolVersion.MQTTv5)
    answers: queue.Queue = queue.Queue()
    client.on_connect = lambda c, u, flags, rc, p: answers.put(rc)
    client.connect(shipped.host, shipped.local_port)  # even on the local listener
    client.loop_start()
    try:
        assert answers.get(timeout=HANG).is_failure
    finally:
        _close(client)


# --- client ids bound to accounts: no takeover --------------------------------------------


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_device_cannot_take_over_another_devices_session(shipped, clinic, tls_files, tmp_path, syncs, protocol):
    """The bug: disp-a, with its own password, connects as `disp-b`, knocks disp-b's daemon
    off again and again and resumes its session, swallowing a queued schedule."""
    received: list[bytes] = []
    sync_b, _ = daemon(shipped, tls_files, B, tmp_path, syncs, received)
    assert sync_b.wait_connected(HANG), sync_b.last_error
    for _ in range(3):
        assert refused_connect(shipped, tls_files, A, B, protocol) is not None
    assert sync_b.connected and sync_b.last_error is None
    # disp-b off (its session stays); a schedule is queued for it; disp-a tries again.
    sync_b.stop()
    assert clinic.publish(Topics(PREFIX, B).schedule_set, b'{"signed": "schedule"}') == 0  # queued, not 0x10
    assert refused_connect(shipped, tls_files, A, B, protocol) is not None
    sync_again, _ = daemon(shipped, tls_files, B, tmp_path, syncs, received)
    assert wait_until(lambda: received == [b'{"signed": "schedule"}']), shipped.log()  # polled, as below
    assert not taken_over(shipped)
    statuses = lambda: [payload["online"] for payload in clinic.json_on(Topics(PREFIX, B).status)]  # noqa: E731
    assert clinic.wait_for(lambda: len(statuses()) >= 3, HANG)
    time.sleep(0.2)
    assert statuses() == [True, False, True], "disp-b's status must show only its own stop"


def test_a_device_cannot_take_over_a_caregivers_watch_session(shipped, tls_files, clinics):
    carer = connect_as(shipped, tls_files, clinics, CARER, f"{PREFIX}/{A}/alerts",
                       client_id=f"clinic-watch-{CARER}", persistent=True)
    assert refused_connect(shipped, tls_files, A, f"clinic-watch-{CARER}") is not None
    assert refused_connect(shipped, tls_files, B, f"clinic-watch-{CARER}", "3.1.1") is not None
    assert carer.connected and not taken_over(shipped)


def test_a_caregiver_cannot_take_over_a_device(shipped, tls_files, tmp_path, syncs):
    sync_a, _ = daemon(shipped, tls_files, A, tmp_path, syncs)
    assert sync_a.wait_connected(HANG)
    assert refused_connect(shipped, tls_files, CARER, A) is not None
    assert refused_connect(shipped, tls_files, CARER, "clinic-watch-someone-else") is not None
    assert sync_a.connected and sync_a.last_error is None and not taken_over(shipped)


def test_one_shot_sync_never_disturbs_the_daemon(shipped, clinic, tls_files, tmp_path, syncs):
    """`dispenser sync --once`, the real command (in this process: tests/inprocess.py), beside
    the running daemon of the same device."""
    sync_a, store = daemon(shipped, tls_files, A, tmp_path, syncs)
    assert sync_a.wait_connected(HANG)
    store.close()
    client_cert, client_key = cert(tls_files, A)
    config = tmp_path / "config.toml"
    config.write_text(
        f'[device]\nid = "{A}"\n[storage]\ndb = "{tmp_path / "a-once.db"}"\n'
        f'[mqtt]\nhost = "{shipped.host}"\nport = {shipped.port}\nusername = "{A}"\npassword = "{PASSWORDS[A]}"\n'
        f'tls_ca = "{tls_files.ca}"\ntls_cert = "{client_cert}"\ntls_key = "{client_key}"\n')
    config.chmod(0o600)
    once_store = Store.open(tmp_path / "a-once.db", A)
    append(once_store, 3)
    once_store.close()
    result = run_in_process("sync", "--once", "--timeout", "10", "--config", config)
    assert result.returncode == 0, result.stdout + result.stderr + shipped.log()
    assert clinic.wait_for(lambda: len(unique_events(clinic, Topics(PREFIX, A).events)) == 3, HANG)
    assert f"as {A}-sync" in shipped.log() or f"{A}-sync" in shipped.log()
    assert sync_a.connected and sync_a.last_error is None and not taken_over(shipped)


def test_one_shot_simulate_account_never_disturbs_the_daemon(shipped, tls_files, tmp_path, syncs):
    from dispenser.runner import build_sync
    from dispenser.config import Config
    sync_a, _ = daemon(shipped, tls_files, A, tmp_path, syncs)
    assert sync_a.wait_connected(HANG)
    settings = settings_for(shipped, tls_files, A)
    config = Config(device_id=A, mqtt={key: value for key, value in vars(settings).items() if value is not None})
    one_shot = build_sync(config, lambda item: None, ":memory:", suffix="simulate", subscribe=False)
    syncs.append(one_shot)
    assert one_shot.client_id == f"{A}-simulate" and one_shot.settings.username == f"{A}-simulate"
    one_shot.start()
    assert one_shot.wait_connected(HANG), one_shot.last_error
    assert sync_a.connected and sync_a.last_error is None and not taken_over(shipped)


def test_a_one_shot_account_is_bound_to_its_own_client_id(shipped, tls_files, tmp_path, syncs):
    sync_a, _ = daemon(shipped, tls_files, A, tmp_path, syncs)
    assert sync_a.wait_connected(HANG)
    assert refused_connect(shipped, tls_files, f"{A}-sync", A, password=PASSWORDS[A]) is not None
    assert refused_connect(shipped, tls_files, f"{A}-sync", f"{B}-sync", password=PASSWORDS[A]) is not None
    assert sync_a.connected and not taken_over(shipped)


# --- what each account may read and write ---------------------------------------------------


def _raw(shipped, tls_files, name, client_id=None, protocol="5"):
    """A bare paho client logged in as `name`, to try what its role forbids."""
    events: queue.Queue = queue.Queue()
    v5 = protocol == "5"
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or name,
                         protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311)
    client.username_pw_set(name, PASSWORDS[name])
    client_cert, client_key = cert(tls_files, name)
    client.tls_set(ca_certs=str(tls_files.ca), certfile=str(client_cert), keyfile=str(client_key))
    client.on_connect = lambda c, u, flags, rc, p: events.put(("connect", rc))
    client.on_subscribe = lambda c, u, mid, rcs, p: events.put(("suback", rcs))
    client.on_publish = lambda c, u, mid, rc, p: events.put(("puback", rc))
    client.on_message = lambda c, u, m: events.put(("message", m.topic, bytes(m.payload)))
    client.connect(shipped.host, shipped.port)
    client.loop_start()
    kind, reason = events.get(timeout=HANG)
    assert kind == "connect" and not reason.is_failure, reason
    return client, events


def _close(client):
    """Disconnect, then stop the network thread: the DISCONNECT wakes it (stopped first, it
    sleeps out paho's one-second select before it looks)."""
    client.disconnect()
    client.loop_stop()


def test_a_device_cannot_read_another_devices_schedules(shipped, clinic, tls_files):
    client, events = _raw(shipped, tls_files, A)
    try:
        client.subscribe([(Topics(PREFIX, B).schedule_set, 1), (f"{PREFIX}/+/schedule/set", 1),
                          (f"{PREFIX}/{B}/events", 1), (Topics(PREFIX, A).schedule_set, 1)])
        kind, codes = events.get(timeout=HANG)
        assert kind == "suback"
        assert [code.is_failure for code in codes] == [True, True, True, False]
        clinic.publish(Topics(PREFIX, B).schedule_set, b"for B")
        clinic.publish(Topics(PREFIX, A).schedule_set, b"for A")
        assert events.get(timeout=HANG) == ("message", Topics(PREFIX, A).schedule_set, b"for A")
        time.sleep(0.2)
        assert events.empty()
    finally:
        _close(client)


@pytest.mark.parametrize("topic", [f"{PREFIX}/{B}/events", f"{PREFIX}/{B}/status", f"{PREFIX}/{A}/schedule/set",
                                   f"{PREFIX}/{B}/schedule/set", "other/topic"])
def test_a_device_writes_only_its_own_topics(shipped, clinic, tls_files, topic):
    client, events = _raw(shipped, tls_files, A)
    try:
        client.publish(topic, b'{"event_id": "forged"}', qos=1)
        kind, reason = events.get(timeout=HANG)
        assert kind == "puback" and reason.is_failure, reason  # 0x87 Not authorized
    finally:
        _close(client)
    assert clinic.on(f"{PREFIX}/{B}/events") == [] and clinic.on(f"{PREFIX}/{B}/status") == []


def test_a_caregiver_reads_alerts_and_status_of_its_devices_only(shipped, clinic, tls_files, tmp_path, syncs,
                                                                   clinics):
    """What `dispenser clinic watch` subscribes to is granted; only the given devices'
    alerts and status are ever delivered."""
    carer = connect_as(shipped, tls_files, clinics, CARER, f"{PREFIX}/+/events", f"{PREFIX}/+/alerts",
                       f"{PREFIX}/+/status", f"{PREFIX}/+/state", client_id=f"clinic-watch-{CARER}", persistent=True)
    for device in (A, B):
        sync, store = daemon(shipped, tls_files, device, tmp_path, syncs)
        append(store, 4, alert_every=2)
        sync.publish_state({"next": "x"})
        sync.notify()
        assert sync.wait_idle(HANG), sync.last_error
    assert clinic.wait_for(lambda: len(unique_events(clinic, Topics(PREFIX, B).alerts)) == 2, HANG)
    assert clinic.wait_for(lambda: clinic.on(Topics(PREFIX, B).state), HANG)
    assert carer.wait_for(lambda: len(carer.on(Topics(PREFIX, A).alerts)) == 2, HANG)
    assert carer.wait_for(lambda: carer.on(Topics(PREFIX, A).status), HANG)
    topics = {topic for topic, _, _ in carer.messages}
    assert topics == {Topics(PREFIX, A).alerts, Topics(PREFIX, A).status}, topics


def test_a_caregiver_writes_nothing(shipped, clinic, tls_files):
    client, events = _raw(shipped, tls_files, CARER, client_id=f"clinic-watch-{CARER}")
    try:
        for topic in (Topics(PREFIX, A).schedule_set, Topics(PREFIX, A).alerts, Topics(PREFIX, A).status):
            client.publish(topic, b"{}", qos=1)
            kind, reason = events.get(timeout=HANG)
            assert kind == "puback" and reason.is_failure, (topic, reason)
            if not client.is_connected():
                break
    finally:
        _close(client)


# --- size limit -------------------------------------------------------------------------------


def test_an_oversized_message_never_reaches_a_311_device(shipped, clinic, tls_files, tmp_path, syncs, clinics):
    """MQTT 3.1.1 cannot announce a packet limit: the broker's max_packet_size protects it."""
    received: list[bytes] = []
    sync_a, _ = daemon(shipped, tls_files, A, tmp_path, syncs, received, protocol="3.1.1")
    assert sync_a.wait_connected(HANG)
    sender = connect_as(shipped, tls_files, clinics, "clinic", client_id="clinic-push-big")
    sender.client.reconnect_delay_set(60, 60)   # paho would send it again on reconnecting
    sender.client.publish(Topics(PREFIX, A).schedule_set, b"x" * (300 * KIB), qos=1)
    assert sender.wait_for(lambda: not sender.connected, HANG), "the sender of a 300 KiB packet is disconnected"
    just_over_a_schedule = b"y" * (64 * KIB + 1)     # still arrives: the device refuses it (too_large)
    assert clinic.publish(Topics(PREFIX, A).schedule_set, just_over_a_schedule) == 0
    assert clinic.publish(Topics(PREFIX, A).schedule_set, b"small") == 0
    # Polled: Sync.wait_for re-checks only when the sync's own state changes, and a message
    # handed to the test's callback is no such change (it waited the whole HANG now and then).
    assert wait_until(lambda: len(received) == 2)
    assert received == [None, b"small"]  # over 64 KiB: handed over as its size alone, never its bytes
    assert sync_a.connected


def test_the_shipped_limit_is_256_kib():
    text = (Path(__file__).resolve().parents[1] / "broker" / "mosquitto.conf").read_text()
    assert "max_packet_size 262144" in text.splitlines()


# --- the tool and the files -----------------------------------------------------------------


def test_removed_device_can_no_longer_connect(shipped, tls_files):
    assert refused_connect(shipped, tls_files, B, B) is None
    shipped.dynsec("remove-device", B)
    assert refused_connect(shipped, tls_files, B, B) is not None


def test_init_writes_a_private_file_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "dynamic-security.json"
    env = dict(os.environ, DYNSEC_ADMIN_PASSWORD="admin-password-1", DYNSEC_CLINIC_PASSWORD="clinic-password-1")
    tool = Path(__file__).resolve().parents[1] / "broker" / "dynsec.py"
    first = subprocess.run([sys.executable, str(tool), "init", str(out)], env=env, capture_output=True, text=True,
                           stdin=subprocess.DEVNULL)
    assert first.returncode == 0, first.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    document = json.loads(out.read_text())
    assert document["defaultACLAccess"] == {"publishClientSend": False, "publishClientReceive": False,
                                            "subscribe": False, "unsubscribe": True}
    assert "admin-password-1" not in out.read_text()
    again = subprocess.run([sys.executable, str(tool), "init", str(out)], env=env, capture_output=True, text=True,
                           stdin=subprocess.DEVNULL)
    assert again.returncode != 0 and "exists" in again.stderr


def test_refused_rows_stay_in_the_outbox(broker_factory, tmp_path, syncs):
    """A device whose user may not write events keeps them, and says why."""
    no_events = "pattern write pilldispenser/%u/status\npattern read pilldispenser/%u/schedule/set\n"
    broker = broker_factory(users={A: PASSWORDS[A]}, acl=no_events)
    db = tmp_path / "a.db"
    store = Store.open(db, A)
    append(store, 3)
    settings = MqttSettings(host=broker.host, port=broker.port, username=A, password=PASSWORDS[A])
    sync = Sync(settings, A, lambda: Store.open(db, A), on_schedule=lambda payload: None)
    syncs.append(sync)
    sync.start()
    assert sync.wait_for(lambda s: s.last_refusal is not None, HANG)
    assert "Not authorized" in sync.last_refusal
    assert store.backlog() == 3


def test_an_alert_stays_unsent_until_both_topics_take_it(broker_factory, tmp_path, syncs, request):
    """Here the ACL lets the device write events but not alerts."""
    no_alerts = ("user clinic\ntopic read pilldispenser/+/events\n"
                 "pattern write pilldispenser/%u/events\npattern write pilldispenser/%u/status\n"
                 "pattern read pilldispenser/%u/schedule/set\n")
    broker = broker_factory(users={A: PASSWORDS[A], "clinic": PASSWORDS["clinic"]}, acl=no_alerts)
    reader = Clinic(broker, username="clinic", password=PASSWORDS["clinic"]).connect("pilldispenser/+/events")
    request.addfinalizer(reader.close)  # someone reads the events: a row nobody reads (0x10) stays unsent
    db = tmp_path / "a.db"
    store = Store.open(db, A)
    [first, alert] = append(store, 2, alert_every=2)
    settings = MqttSettings(host=broker.host, port=broker.port, username=A, password=PASSWORDS[A])
    sync = Sync(settings, A, lambda: Store.open(db, A), on_schedule=lambda payload: None)
    syncs.append(sync)
    sync.start()
    assert sync.wait_for(lambda s: s.last_refusal is not None, HANG)
    assert f"seq {alert['seq']} not accepted: Not authorized" in sync.last_refusal
    assert sync.wait_for(lambda s: store.backlog() == 1, HANG)
    assert [seq for seq, _ in store.unsent(10)] == [alert["seq"]]


def test_a_caregiver_follows_its_device_with_clinic_watch(shipped, tls_files, tmp_path, syncs):
    """The real `dispenser clinic watch --session NAME`, as the caregiver's account: the
    device's alerts and status arrive, its other events and the other device never do."""
    import threading
    client_cert, client_key = cert(tls_files, CARER)
    config = tmp_path / "carer.toml"
    config.write_text(
        f'[mqtt]\nhost = "localhost"\nport = {shipped.port}\nusername = "{CARER}"\npassword = "{PASSWORDS[CARER]}"\n'
        f'tls_ca = "{tls_files.ca}"\ntls_cert = "{client_cert}"\ntls_key = "{client_key}"\n')
    config.chmod(0o600)
    devices = {device: daemon(shipped, tls_files, device, tmp_path, syncs) for device in (A, B)}
    for sync, _ in devices.values():
        assert sync.wait_connected(HANG), sync.last_error   # each has retained {"online": true}
    watch = subprocess.Popen([sys.executable, "-m", "dispenser", "clinic", "watch", "--session", CARER,
                              "--count", "2", "--timeout", "30", "--config", str(config)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(watch.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + HANG
        while not any(f"{A} online" in line for line in lines):   # the retained status: subscribed
            assert time.monotonic() < deadline and watch.poll() is None, (lines, watch.stderr.read())
            time.sleep(0.05)
        for sync, store in devices.values():
            append(store, 4, alert_every=2)   # dose.due, alert, dose.due, alert
            sync.notify()
            assert sync.wait_idle(HANG), sync.last_error
        assert watch.wait(timeout=40) == 0, (lines, watch.stderr.read())
        reader.join(5)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
    out = "".join(lines)
    assert out.count("!! ALERT") == 2, out
    assert B not in out and "dose.due" not in out, out


def test_the_clinic_pushes_a_schedule_with_the_real_command(shipped, tls_files, tmp_path, syncs):
    from support import DEMO
    received: list[bytes] = []
    sync_a, _ = daemon(shipped, tls_files, A, tmp_path, syncs, received)
    assert sync_a.wait_connected(HANG)
    client_cert, client_key = cert(tls_files, "clinic")
    config = tmp_path / "clinic.toml"
    config.write_text(
        f'[mqtt]\nhost = "localhost"\nport = {shipped.port}\nusername = "clinic"\npassword = "{PASSWORDS["clinic"]}"\n'
        f'tls_ca = "{tls_files.ca}"\ntls_cert = "{client_cert}"\ntls_key = "{client_key}"\n')
    config.chmod(0o600)
    result = run_in_process("clinic", "push", DEMO / "schedule.json", "--device", A, "--allow-unsigned",
                            "--config", config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert wait_until(lambda: len(received) == 1)  # polled, as in the oversized message's test
    assert json.loads(received[0])["version"] == json.loads((DEMO / "schedule.json").read_text())["version"]


@pytest.mark.parametrize("args", [["add-device", "clinic-watch-sam"], ["add-caregiver", "clinic", A],
                                  ["add-device", "disp/1"], ["add-device", "disp+"], ["add-caregiver", "sam", "#"]])
def test_dynsec_refuses_names_that_would_collide_or_break_topics(args):
    """A device called clinic-watch-sam would be bound to the caregiver's client id."""
    tool = Path(__file__).resolve().parents[1] / "broker" / "dynsec.py"
    result = subprocess.run([sys.executable, str(tool), "--port", "1", *args], capture_output=True, text=True,
                            stdin=subprocess.DEVNULL, env=dict(os.environ, DYNSEC_ADMIN_PASSWORD="x" * 12))
    assert result.returncode != 0 and "use letters" in result.stderr
