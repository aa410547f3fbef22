"""The daemon through a day on a moved clock, with gpiozero mock pins and the real charlcd library
writing into the emulated HD44780: what the person sees, hears, and what the servos do."""
from __future__ import annotations

import itertools
import time

import pytest

from dispenser.clocktrust import ClockTrust
from dispenser.daemon import Daemon, device_state
from dispenser.engine import Engine
from dispenser.hardware import build_sim_hardware
from dispenser.store import Store
from support import contract_schedule, local
from waiting import HANG

OPEN_DUTY, CLOSED_DUTY = 0.075, 0.05  # 90 and 0 degrees at 50 Hz, 1.0-2.0 ms


OPENED: list = []


@pytest.fixture(autouse=True)
def close_devices():
    """Close the pins, so no gpiozero blink thread outlives its test."""
    yield
    while OPENED:
        OPENED.pop().hw.close()


class Device:
    """A simulated dispenser whose daemon the test drives through `at`, `press` and `hold`."""

    def __init__(self, db=":memory:", checkin=False, stock=None, lcd_size=(16, 2), start="2026-11-24T06:00:00",
                 fresh=True, trust=None):
        """`trust(device)`: the device's ClockTrust, built on its clock; by default the clock is believed."""
        self.hw = build_sim_hardware(lambda item: None, compartments=8, lcd_size=lcd_size, sleep=lambda s: None)
        self.store = Store.open(db, "disp-test")
        counter = itertools.count(1)
        self.now = now = local(start)
        self.trust = trust(self) if trust else None
        self.engine = Engine(self.store, 8, "America/New_York",
                             new_id=lambda: f"00000000-0000-4000-8000-{next(counter):012d}",
                             clock_trusted=self.trust.check if self.trust else lambda: True)
        if fresh:
            self.engine.apply_schedule(now, contract_schedule(), "local")
            for medication, count in (stock or {"sertraline": 28, "naltrexone": 10, "hydroxyzine": 10}).items():
                self.engine.refill(now, medication, count)
        self.daemon = Daemon(self.engine, self.hw, timezone_name="America/New_York", checkin=checkin,
                             sleep=lambda s: None, clock_trust=self.trust)
        self.daemon.start(now)
        OPENED.append(self)

    def at(self, text: str) -> list[str]:
        self.now = local(text)
        self.daemon.advance(self.now)
        return self.lcd()

    def press(self, text: str) -> list[str]:
        self.at(text)
        self.daemon.handle("press", self.now)
        return self.lcd()

    def hold(self, text: str) -> list[str]:
        self.at(text)
        self.daemon.handle("hold", self.now)
        return self.lcd()

    def lcd(self) -> list[str]:
        return [line.rstrip() for line in self.hw.lcd.emulator.lines()]

    def duties(self, compartment: int) -> list[float]:
        pin = self.hw.compartments.servo(compartment).pwm_device.pin
        return [round(state.state, 4) for state in pin.states]

    def events(self, kind: str) -> list[dict]:
        return [e for e in self.store.events() if e["type"] == kind]


def wait_for(predicate, seconds: float = HANG) -> bool:
    """gpiozero runs blink patterns on its own thread, in real time: wait for them (HANG bounds a hang)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_a_day_as_the_person_sees_it():
    device = Device()
    assert device.lcd() == ["06:00 Next 08:00", "Sertraline 50 mg"]
    assert device.press("2026-11-24T07:10:00") == ["Too early", "Opens at 07:30"]
    assert device.at("2026-11-24T07:30:00") == ["Sertraline 50 mg", "Press to release"]
    assert device.hw.led.is_on  # the window is open: a quiet light, no sound yet
    assert not device.hw.buzzer.is_on

    before = {c: device.duties(c) for c in range(1, 9)}
    assert device.press("2026-11-24T07:45:00") == ["Take your pill", "Press when taken"]
    opened = device.duties(1)[len(before[1]):]
    assert opened == [OPEN_DUTY, CLOSED_DUTY, 0.0]  # open, close, detach: one pill
    assert all(device.duties(c) == before[c] for c in range(2, 9))  # no other compartment moved

    assert device.press("2026-11-24T07:46:00") == ["Thank you!", "Dose recorded"]
    assert device.at("2026-11-24T07:46:20")[0] == "Thank you!"  # for half a minute
    assert device.at("2026-11-24T08:20:00") == ["08:20 Next 09:00", "Naltrexone 25 mg"]

    assert device.hold("2026-11-24T13:00:00") == ["Take your pill", "No need to press"]  # as needed: no confirming
    assert device.duties(3)[-3:] == [OPEN_DUTY, CLOSED_DUTY, 0.0]
    assert device.hold("2026-11-24T14:00:00") == ["As-needed locked", "until 19:00"]
    assert device.events("dose.missed")[0]["data"]["medication_id"] == "naltrexone"


def test_reminders_sound_and_grow_until_the_dose_is_missed():
    device = Device()
    device.at("2026-11-24T08:00:00")  # sertraline's scheduled time: reminder 1
    assert wait_for(lambda: any(s.state for s in device.hw.buzzer.device.pin.states))
    first = device.daemon._signal_level
    device.at("2026-11-24T08:31:00")  # reminder 2
    assert device.daemon._signal_level == first + 1
    assert device.at("2026-11-24T10:00:00") == ["Missed: 08:00", "Clinic informed"]
    assert device.events("dose.missed")[0]["data"]["medication_id"] == "sertraline"
    device.at("2026-11-24T11:00:00")  # naltrexone's window closes too: nothing is due any more
    assert wait_for(lambda: not device.hw.buzzer.is_on and not device.hw.led.is_on)


def test_an_empty_compartment_says_so_and_nothing_moves():
    device = Device(stock={"sertraline": 0})
    before = device.duties(1)
    assert device.press("2026-11-24T07:45:00") == ["Box is empty", "Ask for a refill"]
    assert device.duties(1) == before
    assert device.at("2026-11-24T07:46:00")[0] == "Sertraline 50 mg"


def test_checkin_after_a_confirmed_dose():
    device = Device(checkin=True)
    device.press("2026-11-24T07:45:00")
    assert device.press("2026-11-24T07:46:00") == ["How do you feel?", "< 3 okay >"]
    assert device.press("2026-11-24T07:46:05") == ["How do you feel?", "< 4 good >"]
    assert device.hold("2026-11-24T07:46:10") == ["Side effects?", "< none >"]
    device.press("2026-11-24T07:46:15")
    device.press("2026-11-24T07:46:16")
    assert device.hold("2026-11-24T07:46:20") == ["Thank you!", "Answer saved"]
    recorded = device.events("checkin.recorded")
    assert [e["data"] for e in recorded] == [{"mood": 4, "side_effects": "strong", "medications": ["sertraline"]}]
    assert device.events("alert.raised")[-1]["data"]["kind"] == "side_effects_reported"


def test_a_minute_of_silence_skips_the_checkin():
    device = Device(checkin=True)
    device.press("2026-11-24T07:45:00")
    device.press("2026-11-24T07:46:00")
    assert device.at("2026-11-24T07:47:01")[0] != "How do you feel?"
    assert device.events("checkin.recorded") == []


def test_a_failing_lcd_is_a_fault_once_and_dispensing_goes_on():
    device = Device()

    def broken(lines):
        raise OSError("I2C bus error")

    device.hw.lcd.show = broken
    device.press("2026-11-24T07:45:00")
    device.press("2026-11-24T07:46:00")
    faults = device.events("device.fault")
    assert [f["data"]["component"] for f in faults] == ["lcd"]
    assert [e["data"]["medication_id"] for e in device.events("dose.taken")] == ["sertraline"]
    assert device.events("alert.raised")[-1]["data"]["kind"] == "device_fault"


def test_a_failing_servo_is_a_failed_release_and_the_device_goes_on():
    device = Device()

    def jammed(compartment, quantity, sleep=None):
        raise OSError("servo jammed")

    device.hw.compartments.release = jammed
    assert device.press("2026-11-24T09:00:00") == ["Dispenser fault", "Help is informed"]
    assert len(device.events("dose.release_failed")) == 2  # sertraline and naltrexone
    assert device.press("2026-11-24T09:01:00") == ["Too early", "Opens at 07:30"]  # never retried
    assert len(device.events("dose.released")) == 2


@pytest.mark.parametrize("size", [(16, 2), (20, 4)])
def test_both_display_sizes(size):
    device = Device(lcd_size=size)
    lines = device.at("2026-11-24T07:30:00")
    due = "Sertraline 50 mg"  # "Due: " is left out before a name is shortened
    if size[1] == 2:
        assert lines == [due, "Press to release"]
    else:
        assert lines == [due, "Press to release", "Tue 24 Nov 07:30", ""]


def test_a_full_disk_shows_a_storage_problem_releases_nothing_and_recovers():
    """Nothing is given out that could not be logged; when space is back, the next press works.

    (tests/test_degraded.py fills a real database to SQLITE_FULL under the engine; here the
    log's append fails the same way, to see what the daemon shows and that it recovers.)
    """
    from dispenser.store import StoreError
    device = Device()
    device.at("2026-11-24T07:40:00")
    append = device.store.append

    def full(*args, **kwargs):
        raise StoreError("d.db: cannot append: database or disk is full")

    device.store.append = full
    before = device.duties(1)
    assert device.press("2026-11-24T07:45:00") == ["Storage problem", "Call your clinic"]
    assert device.duties(1) == before  # the servo never moved
    assert device.at("2026-11-24T07:50:00") == ["Storage problem", "Call your clinic"]
    device.store.append = append
    assert device.press("2026-11-24T07:51:00") == ["Take your pill", "Press when taken"]
    assert len(device.events("dose.released")) == 1
    assert device.store.verify()[0]


def test_an_unsynchronised_clock_holds_doses_says_so_and_alerts_once_after_half_an_hour():
    """A Pi whose clock NTP has not set since boot: no time shown, nothing given, the clinic told."""
    marker: list[float | None] = [None]
    device = Device(trust=lambda device: ClockTrust("synchronized", synchronized_at=lambda: marker[0],
                                                    wall=lambda: device.now.timestamp(),
                                                    steady=lambda: device.now.timestamp()))

    assert device.at("2026-11-24T06:29:00") == ["Setting clock...", "Doses on hold"]
    alerts = lambda: [e for e in device.events("alert.raised")  # noqa: E731
                      if e["data"]["kind"] != "schedule_applied_locally"]  # the test's own schedule
    assert alerts() == []
    device.at("2026-11-24T06:31:00")
    device.at("2026-11-24T07:40:00")
    [alert] = alerts()
    assert alert["data"]["kind"] == "clock_unsynchronized" and "holds every dose" in alert["data"]["message"]

    assert device.lcd() == ["Setting clock...", "Doses on hold"]  # the window is open by the clock
    assert device_state(device.engine, device.now)["clock_trusted"] is False  # the clinic's retained state
    assert not device.hw.led.is_on and not device.hw.buzzer.is_on
    before = device.duties(1)
    assert device.press("2026-11-24T07:45:00") == ["Setting clock...", "Please wait"]
    assert device.duties(1) == before and device.events("dose.released") == []

    marker[0] = device.now.timestamp()  # NTP answers
    assert device.at("2026-11-24T07:46:00") == ["Sertraline 50 mg", "Press to release"]
    assert device.press("2026-11-24T07:47:00") == ["Take your pill", "Press when taken"]
    assert len(device.events("clock.synchronized")) == 1 and len(alerts()) == 1
    assert device_state(device.engine, device.now)["clock_trusted"] is True


def test_a_step_after_ntp_is_one_clock_fault_for_the_clinic_and_doses_go_on():
    """A time server steps the clock 8 h ahead twice (timesyncd touching its marker): the daemon's
    time is the boot clock's count (TrustedClock), the step is logged once as a fault with an alert."""
    error, marker = [0.0], [None]
    device = Device(trust=lambda device: ClockTrust(
        "synchronized", synchronized_at=lambda: marker[0] if marker[0] is not None else device.now.timestamp(),
        wall=lambda: device.now.timestamp() + error[0], steady=lambda: device.now.timestamp()))
    device.at("2026-11-24T07:00:00")
    for _ in range(2):
        error[0] += 8 * 3600
        marker[0] = device.now.timestamp() + error[0]
        device.at(f"2026-11-24T07:0{_ + 1}:00")
    [fault] = device.events("device.fault")
    assert fault["data"]["component"] == "clock" and "28800 s ahead" in fault["data"]["error"]
    assert [e["data"]["kind"] for e in device.events("alert.raised")].count("device_fault") == 1
    assert device.press("2026-11-24T07:45:00") == ["Take your pill", "Press when taken"]
    assert device.events("dose.released")[0]["at"] == "2026-11-24T12:45:00.000Z"


def test_a_four_row_display_shows_no_time_it_cannot_vouch_for():
    device = Device(lcd_size=(20, 4), trust=lambda device: ClockTrust(
        "synchronized", synchronized_at=lambda: None,
        wall=lambda: device.now.timestamp(), steady=lambda: device.now.timestamp()))
    assert device.at("2026-11-24T06:10:00")[:3] == ["Setting clock...", "Doses on hold", "Time not set yet"]
