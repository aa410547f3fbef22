"""The lid switch and the pill-drop sensor, end to end: gpiozero mock pins driven low and high,
the daemon's queue, the rules' decisions and the log (docs/RULES.md, "The lid and the drop sensor")."""
from __future__ import annotations

import itertools
import queue
import threading

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from dispenser.daemon import Daemon
from dispenser.engine import Engine
from dispenser.hardware import build_hardware, build_sim_hardware
from dispenser.hardware.inputs import Button, drop_sensor
from dispenser.inputs import Hold, PillSeen, Press
from dispenser.logcheck import check_store
from dispenser.sensor_rules import REFILL_GRACE
from dispenser.store import Store
from support import as_needed, daily, local, schedule
from waiting import HANG, wait_until

OPENED: list = []


@pytest.fixture(autouse=True)
def close_devices():
    yield
    while OPENED:
        OPENED.pop().close()


class Device:
    """A dispenser on simulated hardware (lid and drop sensor included) that the test drives."""

    def __init__(self, document: dict, stock: dict[str, int], start: str = "2026-11-24T06:00:00",
                 hardware=None):
        self.hw = hardware or build_sim_hardware(self.put, compartments=8, sleep=lambda s: None)
        OPENED.append(self.hw)
        self.store = Store.open(":memory:", "disp-test")
        counter = itertools.count(1)
        self.now = local(start)
        self.engine = Engine(self.store, 8, "America/New_York",
                             new_id=lambda: f"00000000-0000-4000-8000-{next(counter):012d}")
        self.engine.apply_schedule(self.now, document, "local", stock=stock)
        self.daemon = Daemon(self.engine, self.hw, timezone_name="America/New_York", sleep=lambda s: None)
        self.daemon.start(self.now)
        self.drain()

    def put(self, item) -> None:
        if hasattr(self, "daemon"):
            self.daemon.put(item)

    def drain(self) -> None:
        """Handle what the pins put on the queue, as the loop would, at the test's time."""
        while not self.daemon.inputs.empty():
            self.daemon.handle(self.daemon.inputs.get_nowait(), self.now)

    def at(self, text: str) -> None:
        self.now = local(text)
        self.daemon.advance(self.now)
        self.drain()

    def press(self, text: str) -> None:
        self.at(text)
        self.daemon.handle(Press(), self.now)
        self.drain()

    def lid(self, text: str, opened: bool) -> None:
        self.at(text)
        pin = self.hw.lid.device.pin
        pin.drive_high() if opened else pin.drive_low()  # the switch pulls low while the lid is shut
        self.drain()

    def events(self, *kinds: str) -> list[dict]:
        return [e for e in self.store.events() if not kinds or e["type"] in kinds]

    def alerts(self, kind: str) -> list[dict]:
        return [e for e in self.events("alert.raised") if e["data"]["kind"] == kind]


def once_a_day(stock: int = 10) -> tuple[dict, dict]:
    return schedule(daily("sertraline", 1, ["08:00"])), {"sertraline": stock}


def test_a_release_whose_pill_falls_is_a_release_and_nothing_more():
    device = Device(*once_a_day())
    device.press("2026-11-24T08:00:00")
    assert len(device.events("dose.released")) == 1
    assert device.events("dose.release_failed", "pill.unexpected") == []
    assert device.hw.drop.count == 1 and device.hw.chute.dropped == 1
    device.press("2026-11-24T08:01:00")
    assert len(device.events("dose.taken")) == 1
    assert check_store(device.store, until=local("2026-11-25T06:00:00")) == []


def test_a_jammed_release_is_release_failed_jam_with_a_critical_alert():
    device = Device(*once_a_day())
    device.hw.chute.jam(1)
    device.press("2026-11-24T08:00:00")
    failed = device.events("dose.release_failed")
    assert len(failed) == 1
    data = failed[0]["data"]
    assert (data["reason"], data["seen"], data["medication_id"], data["compartment"]) == ("jam", 0, "sertraline", 1)
    assert data["release_event_id"] == device.events("dose.released")[0]["event_id"]
    alert = device.alerts("release_failed")
    assert alert and alert[0]["data"]["severity"] == "critical"
    assert alert[0]["data"]["events"] == [failed[0]["event_id"]]
    assert "sertraline" not in alert[0]["data"]["message"].lower()  # alerts never name a drug
    assert "jammed" in alert[0]["data"]["message"]
    # the compartment's count is not believed any more: 0 until a refill, and no second alert for it
    assert device.engine.view.stock[0].count == 0 and device.engine.view.stock[0].empty
    assert device.events("stock.empty") == []
    assert device.engine.view.due == ()  # the screen offers nothing a press would not give


def test_the_last_pill_not_seen_is_release_failed_empty():
    device = Device(*once_a_day(stock=1))
    device.hw.chute.jam(1)
    device.press("2026-11-24T08:00:00")
    assert device.events("dose.release_failed")[0]["data"]["reason"] == "empty"
    assert "empty" in device.alerts("release_failed")[0]["data"]["message"]


def test_after_an_unseen_release_a_second_pill_goes_out_only_through_section_6():
    """The dose stays releasable, but its unseen release keeps counting: a once-a-day dose's
    retry, even after a refill in its window, is held `already_given` and never released."""
    device = Device(*once_a_day())
    device.hw.chute.jam(1)
    device.press("2026-11-24T08:00:00")
    device.at("2026-11-24T08:10:00")
    device.engine.refill(device.now, "sertraline", 9)  # a person cleared the jam and counted
    device.press("2026-11-24T08:15:00")
    assert len(device.events("dose.released")) == 1  # no second pill
    held = device.events("dose.held")
    assert [e["data"]["reason"] for e in held] == ["already_given"]
    assert device.hw.chute.dropped == 0 and device.hw.drop.count == 0
    device.at("2026-11-25T06:00:00")
    assert check_store(device.store, until=device.now) == []


def test_where_section_6_allows_it_the_dose_is_released_again_after_the_refill():
    """Two doses a day, 30 minutes apart, a 3-minute minimum gap: the 08:00 dose whose pill was
    not seen is released again after a refill in its window; the 08:30 dose is then held,
    because the day's plan (2) counted the unseen pill too."""
    twice = daily("quetiapine", 2, ["08:00", "08:30"], before=0, after=120)
    twice["min_gap_h"] = 0.05
    device = Device(schedule(twice), {"quetiapine": 10})
    device.hw.chute.jam(2)
    device.press("2026-11-24T08:00:00")
    assert [e["data"]["reason"] for e in device.events("dose.release_failed")] == ["jam"]
    device.press("2026-11-24T08:02:00")  # the gap runs from the unseen release too
    assert [(e["data"]["reason"], e["data"]["allowed_at"]) for e in device.events("dose.held")] == \
        [("min_gap", "2026-11-24T13:03:00Z")]
    device.press("2026-11-24T08:04:00")  # before the refill the compartment gives nothing
    assert len(device.events("dose.released")) == 1 and device.events("stock.empty") == []
    device.at("2026-11-24T08:05:00")
    device.engine.refill(device.now, "quetiapine", 9)
    device.press("2026-11-24T08:10:00")
    released = device.events("dose.released")
    assert [e["data"]["scheduled_at"] for e in released] == ["2026-11-24T13:00:00Z"] * 2
    assert device.hw.chute.dropped == 1
    device.press("2026-11-24T08:12:00")  # confirms it
    device.press("2026-11-24T08:31:00")
    assert len(device.events("dose.released")) == 2  # the 08:30 dose never comes out
    assert [e["data"]["reason"] for e in device.events("dose.held")] == ["min_gap", "already_given"]
    assert check_store(device.store, until=local("2026-11-25T06:00:00")) == []


def test_without_a_drop_sensor_a_release_is_the_servo_s_word_as_before():
    device = Device(*once_a_day(), hardware=build_sim_hardware(lambda item: None, compartments=8,
                                                               sleep=lambda s: None, drop=False))
    device.press("2026-11-24T08:00:00")
    assert len(device.events("dose.released")) == 1
    assert device.events("dose.release_failed") == []


def test_an_as_needed_release_not_seen_fails_and_keeps_counting():
    device = Device(schedule(as_needed("hydroxyzine", 3, every_h=6)), {"hydroxyzine": 5})
    device.hw.chute.jam(3)
    device.at("2026-11-24T13:00:00")
    device.daemon.handle(Hold(), device.now)
    failed = device.events("dose.release_failed")
    assert len(failed) == 1 and failed[0]["data"]["reason"] == "jam" and "scheduled_at" not in failed[0]["data"]
    device.engine.refill(device.now, "hydroxyzine", 5)
    device.at("2026-11-24T14:00:00")
    device.daemon.handle(Hold(), device.now)
    denied = device.events("prn.denied")
    assert [e["data"]["reason"] for e in denied] == ["interval"]  # the unseen one counted
    assert check_store(device.store) == []


def test_a_pill_seen_outside_any_release_is_logged_with_an_alert():
    device = Device(*once_a_day())
    device.at("2026-11-24T10:00:00")
    pin = device.hw.drop.device.pin
    pin.drive_low()
    pin.drive_high()
    device.drain()
    seen = device.events("pill.unexpected")
    assert [e["data"]["count"] for e in seen] == [1]
    assert device.alerts("pill_unexpected")[0]["data"]["events"] == [seen[0]["event_id"]]


# -- the lid -------------------------------------------------------------------------------


def test_a_lid_opened_outside_a_release_or_refill_raises_a_tamper_alert_after_the_refill_grace():
    device = Device(*once_a_day())
    device.lid("2026-11-24T10:00:00", opened=True)
    opened = device.events("lid.opened")
    assert len(opened) == 1 and "during" not in opened[0]["data"]
    device.lid("2026-11-24T10:02:00", opened=False)
    assert len(device.events("lid.closed")) == 1
    device.at("2026-11-24T10:16:00")
    assert device.alerts("lid_opened") == []  # a refill may still explain it
    device.at("2026-11-24T10:17:00")
    alert = device.alerts("lid_opened")
    assert len(alert) == 1 and alert[0]["data"]["events"] == [opened[0]["event_id"]]
    assert alert[0]["at"].startswith("2026-11-24T15:17:00")  # 10:02 + 15 min, EST = UTC-5
    assert (local("2026-11-24T10:17:00") - local("2026-11-24T10:02:00")) == REFILL_GRACE
    device.at("2026-11-24T12:00:00")
    assert len(device.alerts("lid_opened")) == 1  # once


def test_a_lid_left_open_is_reported_while_still_open():
    device = Device(*once_a_day())
    device.lid("2026-11-24T10:00:00", opened=True)
    device.at("2026-11-24T10:15:00")
    alert = device.alerts("lid_opened")
    assert len(alert) == 1 and "still open" in alert[0]["data"]["message"]


def test_a_refill_after_the_lid_explains_it():
    device = Device(*once_a_day())
    device.lid("2026-11-24T10:00:00", opened=True)
    device.lid("2026-11-24T10:05:00", opened=False)
    device.at("2026-11-24T10:12:00")
    device.engine.refill(device.now, "sertraline", 30)
    device.at("2026-11-24T12:00:00")
    assert device.alerts("lid_opened") == []


@pytest.mark.parametrize("before, during", [("release", "release"), ("refill", "refill")])
def test_a_lid_opened_during_a_release_or_just_after_a_refill_is_expected(before, during):
    device = Device(*once_a_day())
    if before == "release":
        device.press("2026-11-24T08:00:00")
    else:
        device.at("2026-11-24T08:00:00")
        device.engine.refill(device.now, "sertraline", 30)
    device.lid("2026-11-24T08:01:00", opened=True)
    device.lid("2026-11-24T08:03:00", opened=False)
    device.at("2026-11-24T12:00:00")
    assert device.events("lid.opened")[0]["data"] == {"during": during}
    assert device.alerts("lid_opened") == []


def test_a_bouncing_or_repeated_lid_edge_logs_one_change():
    device = Device(*once_a_day())
    device.at("2026-11-24T10:00:00")
    device.daemon.handle(PillSeen(), device.now)  # counted already: nothing
    for _ in range(3):
        device.engine.lid(device.now, opened=True)
    device.engine.lid(device.now, opened=False)
    device.engine.lid(device.now, opened=False)
    assert len(device.events("lid.opened")) == 1 and len(device.events("lid.closed")) == 1
    assert device.events("pill.unexpected") == []


def test_the_lid_state_survives_a_restart_and_a_lid_shut_while_off_is_logged_shut():
    device = Device(*once_a_day())
    device.lid("2026-11-24T10:00:00", opened=True)
    engine = Engine(device.store, 8, "America/New_York")
    hw = build_sim_hardware(lambda item: None, compartments=8, sleep=lambda s: None)  # its lid starts shut
    OPENED.append(hw)
    daemon = Daemon(engine, hw, timezone_name="America/New_York", sleep=lambda s: None)
    daemon.start(local("2026-11-24T10:05:00"))
    assert len(device.events("lid.closed")) == 1


# -- real pins: the `pi` backend's parts on gpiozero's MockFactory --------------------------


PI_TABLE = {"backend": "pi", "compartments": 2, "servo_pins": [12, 13], "lcd": "none",
            "lid_pin": 23, "drop_pin": 24, "drop_timeout_ms": 10000}


def pi_device(on_move=None) -> tuple[Device, MockFactory]:
    factory = MockFactory(pin_class=MockPWMPin)
    holder: list = []
    hw = build_hardware(PI_TABLE, lambda item: holder and holder[0].put(item), pin_factory=factory,
                        sleep=lambda s: None, on_move=on_move)
    device = Device(schedule(daily("sertraline", 1, ["08:00"])), {"sertraline": 10}, hardware=hw)
    holder.append(device)
    return device, factory


def test_on_pi_pins_a_pill_breaking_the_beam_during_the_cycle_is_seen():
    factory_box: list = []

    def drop_on_close(compartment: int, state: str) -> None:
        if state == "closed":
            factory_box[0].pin(24).drive_low()
            factory_box[0].pin(24).drive_high()
    device, factory = pi_device(on_move=drop_on_close)
    factory_box.append(factory)
    device.press("2026-11-24T08:00:00")
    assert device.events("dose.release_failed") == [] and device.hw.drop.count == 1
    assert device.hw.drop_timeout_s == 10.0


def test_on_pi_pins_a_pill_falling_after_the_cycle_within_the_timeout_is_seen():
    """The release waits for its pill up to `drop_timeout_ms` (10 s here): a pill that falls
    while it waits ends the wait at once."""
    def late_pill(compartment: int, state: str) -> None:
        if state == "detached":
            threading.Thread(target=lambda: (pin.drive_low(), pin.drive_high())).start()
    device, factory = pi_device(on_move=late_pill)
    pin = factory.pin(24)
    device.press("2026-11-24T08:00:00")
    assert device.events("dose.release_failed") == [] and device.hw.drop.count == 1


def test_on_pi_pins_the_lid_switch_reaches_the_log():
    device, factory = pi_device()
    device.at("2026-11-24T10:00:00")
    factory.pin(23).drive_low()  # shut (it read open at start: a lid open at boot is logged)
    device.drain()
    factory.pin(23).drive_high()
    device.drain()
    kinds = [e["type"] for e in device.events("lid.opened", "lid.closed")]
    assert kinds[-2:] == ["lid.closed", "lid.opened"]


# -- the parts themselves ------------------------------------------------------------------


def test_the_drop_sensor_counts_and_waits_for_its_pills():
    factory = MockFactory()
    inputs: queue.Queue = queue.Queue()
    drop = drop_sensor(24, inputs.put, pin_factory=factory)
    try:
        assert drop.wait_for(1, 0) == 0  # nothing seen: returns at its timeout
        threading.Thread(target=lambda: (factory.pin(24).drive_low(), factory.pin(24).drive_high())).start()
        assert drop.wait_for(1, HANG) == 1
        assert inputs.get(timeout=HANG) == PillSeen()
    finally:
        drop.close()
        factory.close()


def test_the_button_keeps_no_thread_while_idle_and_times_its_hold_from_the_press():
    factory = MockFactory()
    inputs: queue.Queue = queue.Queue()
    before = set(threading.enumerate())
    button = Button(17, inputs.put, hold_s=HANG, pin_factory=factory)
    try:
        assert set(threading.enumerate()) - before == set()  # no hold thread polling at 10 Hz
        pin = factory.pin(17)
        pin.drive_low()
        timers = [t for t in set(threading.enumerate()) - before if isinstance(t, threading.Timer)]
        assert len(timers) == 1  # only while the button is down
        pin.drive_high()
        assert inputs.get(timeout=HANG) == Press()
        assert wait_until(lambda: not timers[0].is_alive())  # cancelled at the release
        fast = Button(5, inputs.put, hold_s=0.01, pin_factory=factory)
        factory.pin(5).drive_low()
        assert inputs.get(timeout=HANG) == Hold()
        factory.pin(5).drive_high()
        assert inputs.empty()  # a hold is never also a press
        fast.close()
    finally:
        button.close()
        factory.close()


def test_a_timer_of_an_earlier_press_does_not_make_the_next_press_a_hold():
    factory = MockFactory()
    inputs: queue.Queue = queue.Queue()
    button = Button(17, inputs.put, hold_s=HANG, pin_factory=factory)
    try:
        pin = factory.pin(17)
        pin.drive_low()
        first = button._press
        pin.drive_high()
        pin.drive_low()
        button._on_held(first)  # the first press's timer, firing late
        assert inputs.get(timeout=HANG) == Press() and inputs.empty()
        pin.drive_high()
        assert inputs.get(timeout=HANG) == Press()
    finally:
        button.close()
        factory.close()


def test_the_live_simulator_s_lid_and_jam_commands_move_the_simulated_parts():
    import io

    from dispenser.live import HELP, Terminal
    device = Device(*once_a_day())
    terminal = Terminal(device.daemon, clock=None, speed=1, out=io.StringIO(), inp=io.StringIO("lid\njam\nlid\n"))
    terminal.read_keys()
    queued = []
    while not device.daemon.inputs.empty():
        queued.append(device.daemon.inputs.get_nowait())
    from dispenser.inputs import LidClosed, LidOpened, Stop
    assert queued == [LidOpened(), LidClosed(), Stop()]
    assert "l = lid" in HELP and "j = jam" in HELP
    device.press("2026-11-24T08:00:00")  # `jam`: the next release drops nothing
    assert [e["data"]["reason"] for e in device.events("dose.release_failed")] == ["jam"]


def test_the_simulated_device_with_its_sensors_runs_no_thread_while_idle():
    """What the daemon's idle wake-ups were made of: gpiozero's hold thread (10 a second)."""
    before = set(threading.enumerate())
    hw = build_sim_hardware(lambda item: None, compartments=8, sleep=lambda s: None)
    OPENED.append(hw)
    assert hw.lid is not None and hw.drop is not None and hw.lid.is_active  # shut at start
    assert set(threading.enumerate()) - before == set()
