"""The device's MQTT side on a hostile network, against a real Mosquitto (contract 4, v2).

Each test here failed on the code before it: a payload that crashed the daemon, a
schedule acknowledged before it was handled and lost with the crash, a retained
schedule answered at every start, events "sent" to nobody (PUBACK 0x10), a flood that
kept the button waiting, TLS files that kept the daemon from starting.

What they test is the daemon's MQTT side, so `dispenser run` runs on a thread of this process
(tests/daemon_thread.py: the same build and loop; an exception that would end the process
ends the thread, and fails the test); the 64 MB test keeps a real process, for its memory, and
the half daemon killed mid-answer is one.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from inprocess import dispenser as run_in_process
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from broker import Clinic, free_port
from daemon_thread import RunThread
from dispenser.signing import generate_keypair, sign_document
from dispenser.store import Store
from dispenser.sync import MqttSettings, Sync, Topics
from test_daemon_mqtt import BASE, DEVICE, answer, for_device
from test_sync import append
from waiting import HANG, wait_until

ROOT = Path(__file__).resolve().parents[1]
TOPICS = Topics("pilldispenser", DEVICE)
T0 = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)


def write_config(tmp_path: Path, broker, public: str, mqtt_extra: str = "tls = false\n",
                 name: str = "config.toml") -> Path:
    """A simulated device on the test's broker that trusts the clinic's key."""
    config = tmp_path / name
    config.write_text(
        f'[device]\nid = "{DEVICE}"\ntimezone = "America/New_York"\n[hardware]\nbackend = "sim"\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nkeepalive = 5\n{mqtt_extra}'
        f'[clinic]\npublic_key = "{public}"\n[storage]\ndb = "{tmp_path / "d.db"}"\n')
    return config


def start_daemon(config: Path, clinic: Clinic | None = None) -> subprocess.Popen:
    """`dispenser run`; with a clinic, returns once it has said online since the call."""
    seen = len(clinic.on(f"{BASE}/status")) if clinic else 0
    daemon = subprocess.Popen([sys.executable, "-m", "dispenser", "run", "--config", str(config)], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if clinic is not None:
        online = clinic.wait_for(lambda: any(json.loads(p).get("online")
                                             for p in clinic.on(f"{BASE}/status")[seen:]), 20)
        assert online, daemon.stderr.read() if daemon.poll() is not None else "the daemon never came online"
    return daemon


def start_in_process(config: Path, clinic: Clinic) -> RunThread:
    """`dispenser run` on a thread here (tests/daemon_thread.py), for what its MQTT side does
    rather than its process; returns once it has said online since the call."""
    seen = len(clinic.on(f"{BASE}/status"))
    daemon = RunThread(config).start()
    online = clinic.wait_for(lambda: any(json.loads(p).get("online") for p in clinic.on(f"{BASE}/status")[seen:])
                             or not daemon.alive(), 20)
    assert online and daemon.alive(), repr(daemon.error) if not daemon.alive() else "the daemon never came online"
    return daemon


def stop(daemon: subprocess.Popen) -> int:
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
        return daemon.wait(20)
    return daemon.returncode


def logged(db: Path, *types: str) -> list[dict]:
    with Store.open(db, DEVICE) as store:
        return [e for e in store.events() if not types or e["type"] in types]


def dispenser(*args: object) -> subprocess.CompletedProcess:
    return run_in_process(*args, cwd=ROOT)


# ------------------------------------------------------------- 1. nothing ends the daemon

def test_a_version_of_4401_digits_is_refused_and_the_schedule_behind_it_applied(tmp_path, broker):
    private, public = generate_keypair()
    clinic = Clinic(broker).connect(f"{BASE}/#")
    # In-process: an exception that ends the daemon's loop ends its thread, as it ended the process.
    daemon = start_in_process(write_config(tmp_path, broker, public), clinic)
    try:
        bomb = b'{"version": ' + b"9" * 4401 + b"}"  # past Python's integer-string limit: ValueError
        signed = json.dumps(sign_document(for_device(), private, "clinic-2026"))
        assert not clinic.publish(f"{BASE}/schedule/set", bomb).is_failure
        assert not clinic.publish(f"{BASE}/schedule/set", signed).is_failure
        got = [(e["type"], e["data"].get("reason")) for e in answer(clinic, 2)]
        assert got == [("schedule.rejected", "invalid_json"), ("schedule.applied", None)]
        assert daemon.alive(), repr(daemon.error)
    finally:
        assert daemon.stop() is None
        clinic.close()


HALF_A_DAEMON = r"""
import sys, time
from dispenser.sync import MqttSettings, Sync
host, port = sys.argv[1], int(sys.argv[2])
sync = Sync(MqttSettings(host=host, port=port), "disp-0001", None,
            lambda item: print("received", item.size, flush=True))   # never done(): dies first
sync.start()
print("ready" if sync.wait_connected(10) else "failed", flush=True)
time.sleep(120)
"""


def test_a_schedule_received_but_not_yet_answered_when_the_daemon_dies_comes_again(tmp_path, broker):
    """Acknowledged to the broker only once its answer is logged: a crash in between loses nothing."""
    private, public = generate_keypair()
    clinic = Clinic(broker).connect(f"{BASE}/#")
    dying = subprocess.Popen([sys.executable, "-c", HALF_A_DAEMON, broker.host, str(broker.port)], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert dying.stdout.readline().strip() == "ready"
        signed = json.dumps(sign_document(for_device(), private, "clinic-2026"))
        assert not clinic.publish(f"{BASE}/schedule/set", signed).is_failure
        assert dying.stdout.readline().startswith("received"), "handed over, not answered"
        dying.send_signal(signal.SIGKILL)  # the crash: after receipt, before the answer is in the log
        dying.wait(5)
    finally:
        dying.kill()
        dying.wait()
    # The daemon's next start (in-process: what its session brings back is under test)
    daemon = start_in_process(write_config(tmp_path, broker, public), clinic)  # same client id, same session
    try:
        [applied] = answer(clinic, 1)
        assert (applied["type"], applied["data"]["version"]) == ("schedule.applied", 12)
    finally:
        assert daemon.stop() is None
        clinic.close()


# ------------------------------------------------------------ 2. retained schedule/set

@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_retained_schedule_set_is_ignored_at_every_start(tmp_path, broker, protocol):
    private, public = generate_keypair()
    config = write_config(tmp_path, broker, public, f'tls = false\nprotocol = "{protocol}"\n')
    clinic = Clinic(broker).connect(f"{BASE}/#")
    try:
        signed = json.dumps(sign_document(for_device(), private, "clinic-2026"))
        assert not clinic.publish(f"{BASE}/schedule/set", signed, retain=True).is_failure
        for start in (1, 2):  # two starts of the daemon, in-process: what its sync subscribes to
            daemon = start_in_process(config, clinic)
            try:  # a message after the retained one: its answer shows the retained one was passed over
                assert not clinic.publish(f"{BASE}/schedule/set", b"{not json").is_failure
                answers = answer(clinic, start)
            finally:
                assert daemon.stop() is None
            assert [(e["type"], e["data"]["reason"]) for e in answers] == \
                [("schedule.rejected", "invalid_json")] * start
        db = tmp_path / "d.db"
        assert not logged(db, "schedule.applied")
        # one alert per start, each about the junk sent then (the rate limit lives in memory)
        assert len([e for e in logged(db, "alert.raised") if e["data"]["kind"] == "schedule_rejected"]) == 2
    finally:
        clinic.close()


# ------------------------------------------------------- 3. "no matching subscribers"

@pytest.fixture
def outbox(tmp_path):
    db = tmp_path / "out.db"
    with Store.open(db, DEVICE) as store:
        yield db, store


def test_an_alert_nobody_received_stays_unsent_until_someone_subscribes(broker, outbox):
    db, store = outbox
    [due, alert] = append(store, 2, alert_every=2)
    sync = Sync(MqttSettings(host=broker.host, port=broker.port), DEVICE, lambda: Store.open(db, DEVICE),
                client_suffix="test", retry_after=0.3)
    sync.start()
    clinic = None
    try:
        assert sync.wait_for(lambda s: s.undelivered is not None, 10), sync.last_error
        assert "No matching subscribers" in sync.undelivered
        assert not sync.wait_idle(1.0), "0x10: the broker threw it away; it is not sent"
        assert store.backlog() == 2
        clinic = Clinic(broker, client_id="caregiver").connect(TOPICS.events, TOPICS.alerts)
        assert sync.wait_idle(20), sync.last_error  # the back-off retries; now someone reads it
        assert store.backlog() == 0
        assert clinic.wait_for(lambda: [e["event_id"] for e in clinic.json_on(TOPICS.alerts)] == [alert["event_id"]], 5)
    finally:
        sync.stop()
        if clinic:
            clinic.close()


def test_an_event_nobody_reads_does_not_hold_back_the_alerts_behind_it(broker, outbox):
    """A caregiver follows the alerts only: the events before an alert find nobody (0x10) and
    wait in the outbox, and the alert still goes at once; they go when someone reads events."""
    db, store = outbox
    caregiver = Clinic(broker, client_id="caregiver").connect(TOPICS.alerts)
    sync = Sync(MqttSettings(host=broker.host, port=broker.port), DEVICE, lambda: Store.open(db, DEVICE),
                client_suffix="test", retry_after=60)  # no retry during the test but the one a delivery brings
    sync.start()
    clinic = None
    try:
        assert sync.wait_connected(10)
        [first] = append(store, 1)
        sync.notify()
        assert sync.wait_for(lambda s: s.undelivered is not None, 10)
        [_, alert] = append(store, 2, alert_every=2)
        sync.notify()
        assert caregiver.wait_for(lambda: [e["seq"] for e in caregiver.json_on(TOPICS.alerts)] == [alert["seq"]], 5)
        assert sync.wait_for(lambda s: [seq for seq, _ in store.unsent(10)] == [first["seq"], alert["seq"] - 1], 10)
        clinic = Clinic(broker, client_id="clinic-service").connect(TOPICS.events)
        append(store, 1)
        sync.notify()  # delivered: someone reads events now, so what waited goes at once
        assert sync.wait_idle(10), sync.last_error
        assert clinic.wait_for(lambda: {e["seq"] for e in clinic.json_on(TOPICS.events)} >= {first["seq"]}, 5)
    finally:
        sync.stop()
        caregiver.close()
        if clinic:
            clinic.close()


def test_nothing_published_while_a_persistent_clinic_was_away_is_lost(broker, outbox):
    db, store = outbox
    clinic = Clinic(broker, client_id="clinic-service", persistent=True).connect(TOPICS.events, TOPICS.alerts)
    clinic.close()  # away; its session (and subscriptions) stay on the broker
    sent = append(store, 12, alert_every=4)
    sync = Sync(MqttSettings(host=broker.host, port=broker.port), DEVICE, lambda: Store.open(db, DEVICE),
                client_suffix="test", retry_after=0.3)
    sync.start()
    try:
        assert sync.wait_idle(10) and sync.undelivered is None
        back = Clinic(broker, client_id="clinic-service", persistent=True).connect()
        try:
            assert back.wait_for(lambda: len({e["event_id"] for e in back.json_on(TOPICS.events)}) == 12, 10)
            alerts = {e["event_id"] for e in sent if e["type"] == "alert.raised"}
            assert back.wait_for(lambda: {e["event_id"] for e in back.json_on(TOPICS.alerts)} == alerts, 10)
        finally:
            back.close()
    finally:
        sync.stop()


def test_sync_once_with_nobody_subscribed_exits_non_zero_and_keeps_the_events(tmp_path, broker, outbox):
    db, store = outbox
    append(store, 3, alert_every=3)
    config = tmp_path / "sync.toml"
    config.write_text(f'[device]\nid = "{DEVICE}"\n[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
                      f'tls = false\n[storage]\ndb = "{db}"\n')
    began = time.monotonic()
    result = dispenser("sync", "--once", "--config", config, "--timeout", "180")
    assert result.returncode == 1, result.stdout
    assert "not delivered" in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr
    # Said on the broker's refusal, not at the timeout: a margin no load on a test machine reaches.
    assert time.monotonic() - began < 90, "it says so at once, not at the timeout"
    assert store.backlog() == 3


# ------------------------------------------------------------------------- 4. floods

def test_a_flood_of_unsigned_schedules_leaves_the_button_answered_and_the_log_bounded(tmp_path, broker):
    """The real Daemon class, its Sync and simulated hardware in this process; a real Mosquitto."""
    from dispenser.config import load_config
    from dispenser.runner import build_daemon, run_daemon
    _, public = generate_keypair()
    config = load_config(str(write_config(tmp_path, broker, public)))
    answered, built, holder = threading.Event(), threading.Event(), []
    delivered = {"now": 0, "at_answer": -1}   # schedule messages handed to the daemon's queue

    def on_events(evs: list[dict]) -> None:
        if any(e["type"] in ("prn.released", "prn.denied") for e in evs):
            delivered["at_answer"] = delivered["now"]
            answered.set()

    def live() -> None:  # SQLite objects belong to their thread: build and run on the daemon's own
        daemon = build_daemon(config, None, simulated=True, demo=True)
        daemon.engine.listeners.append(on_events)
        holder.append(daemon)
        built.set()
        run_daemon(daemon)

    runner = threading.Thread(target=live, daemon=True)
    runner.start()
    assert built.wait(20)
    daemon = holder[0]
    flood = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="flood", protocol=MQTTProtocolVersion.MQTTv5)
    flood.max_inflight_messages_set(1000)
    flood.max_queued_messages_set(0)
    try:
        assert daemon.sync.wait_connected(10)
        flood.connect(broker.host, broker.port)
        flood.loop_start()
        count = 3000
        infos = [flood.publish(TOPICS.schedule_set, json.dumps({"version": n, "pad": "x" * 2000}), qos=1)
                 for n in range(count)]
        inbox = daemon.sync.inbox
        deliver = inbox._deliver

        def counted(item) -> None:
            delivered["now"] += 1
            deliver(item)
        inbox._deliver = counted
        # Polled: Sync.wait_for is woken only by the sync's own state, not by the inbox's count
        # (as in tests/test_broker_security.py).
        assert wait_until(lambda: inbox.received > 50, 20)
        before = delivered["now"]
        daemon.put("hold")  # the as-needed button, mid-flood
        assert answered.wait(HANG), "the hold was not answered"
        # Answered at once: behind at most the schedule being handled and the newest waiting
        # (the inbox holds two), never behind the flood's thousands: counted, not timed.
        assert delivered["at_answer"] - before <= 2, (before, delivered)
        for info in infos:
            info.wait_for_publish(30)
        assert wait_until(lambda: inbox.received >= count), inbox.received
        assert inbox.received == count, inbox.received
    finally:
        flood.disconnect()   # then stop its thread: the DISCONNECT wakes it at once
        flood.loop_stop()
        daemon.put("stop")
        runner.join(30)
    with Store.open(config.db_path, DEVICE) as store:
        kinds = [e["type"] for e in store.events()]
        rejected = [e for e in store.events() if e["type"] == "schedule.rejected"]
        alerts = [e for e in store.events() if e["type"] == "alert.raised" and e["data"]["kind"] == "schedule_rejected"]
    assert 1 <= len(rejected) <= 6, len(rejected)   # a burst of 5, then one a minute
    assert len(alerts) == 1
    assert len(kinds) < 40, kinds


# ---------------------------------------------------------------------- 5. size limits

@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_one_megabyte_schedule_set(tmp_path, broker, protocol):
    """MQTT 5: the device's Maximum Packet Size keeps it at the broker. 3.1.1: refused by its size."""
    _, public = generate_keypair()
    clinic = Clinic(broker).connect(f"{BASE}/#")
    # In-process: the sync's limits are under test (the 64 MB test below keeps the process, for its memory).
    daemon = start_in_process(write_config(tmp_path, broker, public, f'tls = false\nprotocol = "{protocol}"\n'),
                              clinic)
    try:
        assert not clinic.publish(f"{BASE}/schedule/set", b"[" * (1024 * 1024)).is_failure
        assert not clinic.publish(f"{BASE}/schedule/set", b"{not json").is_failure
        if protocol == "5":
            assert [e["data"]["reason"] for e in answer(clinic, 1)] == ["invalid_json"]
            assert "Dropping too large outgoing PUBLISH" in broker.log()
        else:
            [too_large, invalid] = answer(clinic, 2)
            assert (too_large["data"]["reason"], invalid["data"]["reason"]) == ("too_large", "invalid_json")
            assert "1048576 bytes" in too_large["data"]["problems"][0]
        assert daemon.alive(), repr(daemon.error)
    finally:
        assert daemon.stop() is None
        clinic.close()


# ------------------------------------------------------------------------ 6. bad TLS

@pytest.fixture(scope="module")
def other_key(tmp_path_factory) -> Path:
    key = tmp_path_factory.mktemp("key") / "other.key"
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-out", str(key)], check=True, capture_output=True)
    return key


@pytest.mark.parametrize("damage", ["key_mismatch", "truncated_ca", "missing_ca"])
def test_bad_tls_files_leave_the_daemon_dispensing_offline_and_say_why(tmp_path, tls_files, other_key, damage):
    truncated = tmp_path / "truncated.pem"
    truncated.write_text(tls_files.ca.read_text()[:200])
    tls = {"key_mismatch": f'tls_ca = "{tls_files.ca}"\ntls_cert = "{tls_files.cert}"\ntls_key = "{other_key}"\n',
           "truncated_ca": f'tls_ca = "{truncated}"\n',
           "missing_ca": f'tls_ca = "{tmp_path / "no-such-ca.pem"}"\n'}[damage]

    class Nowhere:
        host, port = "127.0.0.1", free_port()

    _, public = generate_keypair()
    config = write_config(tmp_path, Nowhere, public, tls)
    daemon = RunThread(config).start()  # what the daemon does with the files, not its process: in-process
    db = tmp_path / "d.db"
    try:
        wait_until(lambda: not daemon.alive() or (db.exists() and bool(logged(db, "device.fault"))),
                   interval=0.05)
        assert daemon.alive(), repr(daemon.error)
        [fault] = logged(db, "device.fault")
        assert fault["data"]["component"] == "mqtt"
        assert "cannot use the TLS files" in fault["data"]["error"] and "\n" not in fault["data"]["error"]
        assert logged(db, "device.started")
        status = dispenser("status", "--config", config)
        assert status.returncode == 0 and "cannot use the TLS files" in status.stdout, status.stdout
    finally:
        assert daemon.stop() is None


def test_plain_mqtt_only_when_the_config_says_so_and_status_tells(tmp_path, broker):
    _, public = generate_keypair()
    plain = write_config(tmp_path, broker, public, "tls = false\n")
    Store.open(tmp_path / "d.db", DEVICE).close()  # a log to look at
    status = dispenser("status", "--config", plain)
    assert "plain MQTT, no TLS" in status.stdout, status.stdout + status.stderr
    unsaid = write_config(tmp_path, broker, public, "", name="unsaid.toml")  # TLS to a plain listener
    clinic = Clinic(broker).connect(f"{BASE}/#")
    daemon = RunThread(unsaid).start()  # what the daemon's sync says on the wire: in-process
    try:
        # Its attempt refused by the plain listener (TLS spoken to it), waited for rather than
        # a fixed 3 s: then nothing may have arrived in clear text.
        refused = lambda: "disconnected due to protocol error" in broker.log()  # noqa: E731
        assert wait_until(lambda: refused() or clinic.on(f"{BASE}/status") or not daemon.alive())
        assert not clinic.on(f"{BASE}/status"), "it spoke in clear text"
        assert daemon.alive(), repr(daemon.error)
        assert "plain MQTT" not in dispenser("status", "--config", unsaid).stdout
    finally:
        assert daemon.stop() is None
        clinic.close()


# ------------------------------------------------- the daemon's handling, in-process

class Handed:
    """What the sync hands over (sync.Inbound's shape), recording whether it was answered."""

    def __init__(self, payload: bytes):
        self.payload, self.size, self.replaced, self.answered = payload, len(payload), 0, None

    def done(self, logged: bool = True) -> None:
        self.answered = logged


@pytest.fixture
def offline_daemon(tmp_path):
    from dispenser.config import load_config
    from dispenser.runner import build_daemon
    _, public = generate_keypair()
    config = tmp_path / "offline.toml"
    config.write_text(f'[device]\nid = "{DEVICE}"\n[clinic]\npublic_key = "{public}"\n'
                      f'[storage]\ndb = "{tmp_path / "d.db"}"\n')
    daemon = build_daemon(load_config(str(config)), None, simulated=True, with_sync=False)
    daemon.start(T0)
    yield daemon
    daemon.hardware.close()
    daemon.engine.store.close()


def test_an_input_that_raises_is_a_fault_not_the_end_and_is_still_answered(offline_daemon, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("a bug\nover two lines")

    monkeypatch.setattr(offline_daemon.engine, "apply_schedule_payload", explode)
    first, second = Handed(b"{}"), Handed(b"{}")
    offline_daemon.handle(("schedule", first), T0)
    offline_daemon.handle(("schedule", second), T0)  # the same fault again within the hour: not logged twice
    faults = [e for e in offline_daemon.engine.store.events() if e["type"] == "device.fault"]
    assert [(f["data"]["component"], f["data"]["error"]) for f in faults] == \
        [("daemon", "schedule: RuntimeError: a bug over two lines")]
    assert first.answered is True and second.answered is True
    offline_daemon.handle("press", T0)  # and the loop goes on


def test_repeated_refusals_are_counted_not_each_logged(offline_daemon):
    for n in range(7):  # a burst of five is logged, then one a minute
        offline_daemon.handle(("schedule", Handed(json.dumps({"version": n}).encode())), T0)
    offline_daemon.handle(("schedule", Handed(b"{}")), T0 + timedelta(seconds=61))
    store = offline_daemon.engine.store
    rejected = [e for e in store.events() if e["type"] == "schedule.rejected"]
    assert [e["data"]["reason"] for e in rejected] == ["unsigned"] * 6
    assert [e["data"].get("suppressed") for e in rejected] == [None] * 5 + [2]
    assert len([e for e in store.events() if e["type"] == "alert.raised"]) == 1, "one alert an hour per cause"


def peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_mqtt_311_a_64_mb_message_is_read_past_not_kept(tmp_path, broker):
    """3.1.1 has no Maximum Packet Size: the broker's limit protects, and the device itself
    never holds such a message (paho alone held ~3 copies of it: 150 MB took it to 488 MB)."""
    _, public = generate_keypair()
    clinic = Clinic(broker).connect(f"{BASE}/#")
    daemon = start_daemon(write_config(tmp_path, broker, public, 'tls = false\nprotocol = "3.1.1"\n'), clinic)
    try:
        assert not clinic.publish(f"{BASE}/schedule/set", b"{not json").is_failure
        answer(clinic, 1)
        before = peak_mb(daemon.pid)
        size = 64 * 1024 * 1024
        assert not clinic.publish(f"{BASE}/schedule/set", b"x" * size, timeout=30).is_failure
        [_, too_large] = answer(clinic, 2)
        assert too_large["data"]["reason"] == "too_large" and f"{size} bytes" in too_large["data"]["problems"][0]
        assert peak_mb(daemon.pid) - before < 24, f"{before:.0f} MB -> {peak_mb(daemon.pid):.0f} MB"
    finally:
        assert stop(daemon) == 0
        clinic.close()


def test_the_inbox_hands_over_one_keeps_the_newest_and_acks_only_after_an_answer():
    from dispenser.sync import ScheduleInbox
    handed, acked = [], []
    inbox = ScheduleInbox(handed.append)
    for n in range(4):  # 0 is handed over at once; 1 and 2 are replaced by 3 while 0 is in hand
        inbox.offer(b"%d" % n, 1, lambda n=n: acked.append(n))
    assert [item.payload for item in handed] == [b"0"] and acked == []
    handed[0].done()
    assert acked == [0] and [item.payload for item in handed] == [b"0", b"3"]
    assert handed[1].replaced == 2 and (inbox.received, inbox.replaced) == (4, 2)
    handed[1].done(logged=False)  # the log refused its answer: nothing acknowledged, the broker sends again
    assert acked == [0]
    inbox.offer(b"4", 1, lambda: acked.append(4))
    handed[2].done()
    assert acked == [0, 4]
    for n in range(5, 5 + 150):  # one in hand, the rest replaced: at most MAX_UNACKED acks held
        inbox.offer(b"x", 1, lambda n=n: acked.append(n))
    assert inbox.dropped == 150 - 1 - 100 and acked[2:] == list(range(6, 6 + inbox.dropped))
