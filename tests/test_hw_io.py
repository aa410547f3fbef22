"""Button, sensors, buzzer, LED and the pin factory choice, on mock pins."""
from __future__ import annotations

import importlib.util
import queue
import sys

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from dispenser.hardware.errors import PinFactoryError
from dispenser.hardware.inputs import Button, drop_sensor, lid_switch
from dispenser.hardware.outputs import Buzzer, Led
from dispenser.hardware.pins import make_pin_factory
from dispenser.inputs import Hold, LidClosed, LidOpened, PillSeen, Press
from waiting import HANG

WAIT = HANG  # bounds a hang only; a passing test never waits this long


@pytest.fixture
def factory():
    made = MockFactory(pin_class=MockPWMPin)
    yield made
    made.close()


def drain(inputs: queue.Queue) -> list:
    out = []
    while True:
        try:
            out.append(inputs.get_nowait())
        except queue.Empty:
            return out


@pytest.mark.parametrize("bounce_s", [None, 0.01])
def test_a_short_press_is_reported_on_release(factory, bounce_s):
    inputs = queue.Queue()
    button = Button(17, inputs.put, hold_s=5.0, bounce_s=bounce_s, pin_factory=factory)
    pin = factory.pin(17)
    pin.drive_low()
    assert button.is_pressed and drain(inputs) == []  # nothing until it is let go
    pin.drive_high()
    assert inputs.get(timeout=WAIT) == Press()
    assert drain(inputs) == [] and not button.is_pressed
    button.close()


def test_a_hold_is_only_a_hold(factory):
    inputs = queue.Queue()
    button = Button(17, inputs.put, hold_s=0.01, pin_factory=factory)
    pin = factory.pin(17)
    pin.drive_low()
    assert inputs.get(timeout=WAIT) == Hold()  # the press's hold timer, after 10 ms
    pin.drive_high()
    assert drain(inputs) == []
    button.close()


def test_a_late_hold_after_release_is_ignored(factory):
    inputs = queue.Queue()
    button = Button(17, inputs.put, hold_s=5.0, pin_factory=factory)
    pin = factory.pin(17)
    pin.drive_low()
    pin.drive_high()
    button._on_held()  # the hold timer losing the race with the release
    assert drain(inputs) == [Press()]
    button.close()


def test_active_high_button_without_pull_up(factory):
    inputs = queue.Queue()
    button = Button(5, inputs.put, pull_up=False, hold_s=5.0, pin_factory=factory)
    pin = factory.pin(5)
    pin.drive_high()
    pin.drive_low()
    assert inputs.get(timeout=WAIT) == Press()
    button.close()


def test_lid_switch_and_drop_sensor(factory):
    inputs = queue.Queue()
    lid = lid_switch(23, inputs.put, pin_factory=factory, bounce_s=None)
    drop = drop_sensor(24, inputs.put, pin_factory=factory)
    factory.pin(23).drive_low()
    assert inputs.get(timeout=WAIT) == LidClosed() and lid.is_active
    factory.pin(23).drive_high()
    assert inputs.get(timeout=WAIT) == LidOpened()
    factory.pin(24).drive_low()
    factory.pin(24).drive_high()
    assert inputs.get(timeout=WAIT) == PillSeen()
    assert drain(inputs) == [] and not drop.is_active
    lid.close()
    drop.close()


def test_buzzer_and_led(factory):
    buzzer, led = Buzzer(27, pin_factory=factory), Led(22, pin_factory=factory)
    assert [s.state for s in factory.pin(27).states] == [False]  # silent at start
    led.on()
    assert led.is_on
    led.off()
    assert not led.is_on
    buzzer.pattern(2, 2, times=2)
    buzzer.device._blink_thread.join(WAIT)  # gpiozero's own timing thread
    assert [bool(s.state) for s in factory.pin(27).states] == [False, True, False, True, False]
    buzzer.pattern(1000, 1000, times=None)
    buzzer.off()  # stops the pattern at once
    assert not buzzer.is_on
    buzzer.close()
    led.close()


def test_mock_factory_by_name():
    factory = make_pin_factory("mock")
    assert isinstance(factory, MockFactory) and factory.pin_class is MockPWMPin


@pytest.mark.skipif(importlib.util.find_spec("lgpio") is not None, reason="a GPIO library is installed")
def test_auto_names_why_no_factory_works_here():
    with pytest.raises(PinFactoryError, match=r"^no GPIO library works here \(lgpio: .*; rpigpio: "):
        make_pin_factory("auto")
    with pytest.raises(PinFactoryError, match="unknown pin factory 'pigpio'"):
        make_pin_factory("pigpio")


def test_importing_the_hardware_layer_does_not_import_pi_libraries():
    import dispenser.hardware  # noqa: F401

    assert "RPi.GPIO" not in sys.modules and "lgpio" not in sys.modules
