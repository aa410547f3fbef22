"""The retained `state` document goes out when something it shows could have changed:
an event was logged, the broker link changed, the backlog moved, or time alone reached a
moment where a field changes (an alert's day, a window opening, the week sliding past a
dose). An idle wake-up that logs nothing publishes nothing, and a reconnect sends the
newest state again, so a broker that lost its retained messages has it back."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from broker import Clinic
from dispenser.daemon import Daemon, device_state, state_and_next_change
from dispenser.engine import Engine
from dispenser.hardware import build_sim_hardware
from dispenser.inputs import ChainCheckFailed
from dispenser.mqtt_settings import MqttSettings
from dispenser.store import Store
from dispenser.sync import Sync
from support import contract_schedule
from waiting import HANG

T0 = datetime(2026, 11, 24, 10, 0, 0, tzinfo=timezone.utc)
DEVICE = "disp-quiet"
STATE = f"pilldispenser/{DEVICE}/state"


def without_at(state: dict) -> dict:
    return {key: value for key, value in state.items() if key != "at"}


class CountingSync(Sync):
    """The real sync, which also keeps every state the daemon hands it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.given: list[dict] = []

    def publish_state(self, state: dict) -> None:
        self.given.append(state)
        super().publish_state(state)


class Device:
    """The real daemon, clock shown (a wake-up every minute), its sync on a real Mosquitto."""

    def __init__(self, tmp_path, broker):
        self.db = tmp_path / "device.db"
        self.store = Store.open(self.db, DEVICE)
        self.engine = Engine(self.store, 8, "UTC")
        self.hardware = build_sim_hardware(lambda item: None, compartments=8, lcd_size=(16, 2), sleep=lambda s: None)
        self.sync = CountingSync(MqttSettings(broker.host, broker.port), DEVICE, lambda: Store.open(self.db, DEVICE))
        self.clinic = Clinic(broker).connect(f"pilldispenser/{DEVICE}/#")  # events need a reader
        self.daemon = Daemon(self.engine, self.hardware, timezone_name="UTC", sleep=lambda s: None, sync=self.sync,
                             clock_display=True)

    def states(self) -> list[dict]:
        return self.clinic.json_on(STATE)

    def settle(self, now: datetime) -> datetime:
        """Let the outbox drain and the state show it (backlog 0); returns the time reached."""
        assert self.sync.wait_idle(HANG)
        now += timedelta(minutes=1)
        self.daemon.advance(now)
        assert self.clinic.wait_for(lambda: self.states() and self.states()[-1]["backlog"] == 0, HANG)
        return now

    def close(self) -> None:
        self.sync.stop()
        self.clinic.close()
        self.hardware.close()
        self.store.close()


def test_idle_wake_ups_publish_nothing_and_an_event_publishes_its_state(tmp_path, broker):
    device = Device(tmp_path, broker)
    try:
        device.sync.start()
        assert device.sync.wait_connected(HANG)
        device.daemon.start(T0)
        now = device.settle(T0)
        before, composed = len(device.states()), len(device.sync.given)
        idle_until = now + timedelta(hours=6)
        device.daemon.advance(idle_until)   # 360 wake-ups for the clock shown, nothing logged
        assert len(device.sync.given) == composed, "the daemon did not even compose a state"
        seq = device.engine.last_seq
        device.daemon.handle(ChainCheckFailed(seq=1, reason="a test"), idle_until)  # logs a fault and its alert
        assert device.engine.last_seq > seq
        assert device.clinic.wait_for(lambda: len(device.states()) > before, HANG)
        # QoS 1 from one client arrives in order: anything the idle hours sent came before this.
        assert len(device.states()) == before + 1, "the idle hours published nothing"
        event_state = device.states()[-1]
        assert event_state["at"] == "2026-11-24T16:01:00Z" and event_state["alerts_open"] == 1
        assert event_state["last_event"]["type"] == "alert.raised"
    finally:
        device.close()


def test_a_reconnect_sends_the_newest_state_again_to_a_broker_that_lost_it(tmp_path, broker):
    device = Device(tmp_path, broker)
    try:
        device.sync.start()
        assert device.sync.wait_connected(HANG)
        device.daemon.start(T0)
        device.settle(T0)
        last = device.states()[-1]
        device.clinic.close()
        broker.stop()      # no persistence: the retained state is gone with it
        broker.start()
        assert device.sync.wait_for(lambda s: s.connected, HANG)
        reader = Clinic(broker, client_id="late-reader").connect(STATE)
        try:
            assert reader.wait_for(lambda: reader.json_on(STATE), HANG), "retained again, with no wake-up of the daemon"
            assert reader.json_on(STATE)[0] == last
        finally:
            reader.close()
    finally:
        device.sync.stop()
        device.hardware.close()
        device.store.close()


def test_a_state_that_differs_only_in_its_at_is_not_sent_again(tmp_path, broker):
    store = Store.open(tmp_path / "device.db", DEVICE)
    sync = Sync(MqttSettings(broker.host, broker.port), DEVICE, lambda: Store.open(tmp_path / "device.db", DEVICE))
    clinic = Clinic(broker).connect(STATE)
    try:
        sync.start()
        assert sync.wait_connected(HANG)
        sync.publish_state({"at": "2026-11-24T10:00:00Z", "backlog": 0})
        sync.publish_state({"at": "2026-11-24T10:01:00Z", "backlog": 0})
        sync.publish_state({"at": "2026-11-24T10:02:00Z", "backlog": 2})
        assert clinic.wait_for(lambda: len(clinic.on(STATE)) >= 2, HANG)
        assert [state["at"] for state in clinic.json_on(STATE)] == ["2026-11-24T10:00:00Z", "2026-11-24T10:02:00Z"]
    finally:
        sync.stop()
        clinic.close()
        store.close()


def test_the_next_change_is_never_late_through_nine_days_of_a_schedule():
    """Wherever time alone changes the state (a window opens, a dose enters or leaves the
    week's adherence, the coming week's pace moves, an alert's day ends), the moment given
    with the last state was not later: between events, before that moment, every state
    computed equals the last one but for its `at`."""
    store = Store.open(":memory:", DEVICE)
    engine = Engine(store, compartments=8, default_timezone="America/New_York")
    now = datetime(2026, 11, 24, 11, 0, tzinfo=timezone.utc)
    engine.apply_schedule(now, contract_schedule(), "local", stock={"sertraline": 28, "naltrexone": 20,
                                                                     "hydroxyzine": 10})
    engine.start(now)
    state, moment = state_and_next_change(engine, now)
    seq, recomputed, checked = engine.last_seq, 0, 0
    end = now + timedelta(days=9)
    while now < end:
        now += timedelta(minutes=20)
        engine.tick(now)
        if now.hour == 13 and now.minute == 0 and now.day % 2:  # some mornings taken, others missed
            engine.press(now)
            engine.press(now + timedelta(seconds=30))
        if engine.last_seq != seq or (moment is not None and now >= moment):
            seq = engine.last_seq
            state, moment = state_and_next_change(engine, now)
            recomputed += 1
            continue
        assert without_at(device_state(engine, now)) == without_at(state), f"changed before {moment} at {now}"
        checked += 1
    assert checked > 300 and recomputed > 20   # both paths were taken, many times
    store.close()
