"""Servos on mock PWM pins: nothing moves at start, a release moves one compartment only."""
from __future__ import annotations

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from dispenser.hardware import build_hardware, build_sim_hardware, parse_hardware_config
from dispenser.hardware.compartments import Compartments, build_servos
from dispenser.hardware.errors import HardwareConfigError, ServoFault
from fake_i2c import FakeI2C, Pcf8574Chip
from dispenser.hardware.hd44780 import HD44780

PINS = [12, 13, 18, 19]


def duty(angle: float, min_ms: float, max_ms: float) -> float:
    """Duty cycle at 50 Hz for an angle on the 0..180 scale."""
    return (min_ms + (max_ms - min_ms) * angle / 180) / 20


@pytest.fixture
def factory():
    return MockFactory(pin_class=MockPWMPin)


def states(factory, pin):
    return [state.state for state in factory.pin(pin).states]


def test_nothing_moves_when_the_servos_are_built(factory):
    build_servos(PINS, pin_factory=factory)
    for pin in PINS:
        assert states(factory, pin) == [False]  # never driven, not even to the middle


@pytest.mark.parametrize("quantity", [1, 3])
def test_release_cycles_only_the_chosen_compartment(factory, quantity):
    servos = build_servos(PINS, pin_factory=factory, min_pulse_ms=0.5, max_pulse_ms=2.5)
    slept, moves = [], []
    box = Compartments(servos, [150, 150, 150, 150], [30, 30, 30, 20], dwell_s=0.4,
                       sleep=lambda s: pytest.fail("the default sleep must not be used"),
                       on_move=lambda c, state: moves.append((c, state)))
    box.release(4, quantity, sleep=slept.append)
    opened, closed = duty(150, 0.5, 2.5), duty(20, 0.5, 2.5)
    assert states(factory, 19) == pytest.approx([False] + [opened, closed] * quantity + [0.0])
    assert factory.pin(19).frequency is None  # detached: no pulses between doses
    for pin in PINS[:3]:
        assert states(factory, pin) == [False]
    assert slept == [0.4] * (2 * quantity)
    assert moves == [(4, "open"), (4, "closed")] * quantity + [(4, "detached")]


def test_default_pulse_widths_match_gpiozero(factory):
    box = Compartments(build_servos([12], pin_factory=factory), [90], [0], sleep=lambda s: None)
    box.release(1, 1)
    assert states(factory, 12) == pytest.approx([False, 0.075, 0.05, 0.0])


class BrokenServo:
    detached = False

    @property
    def angle(self):
        return None

    @angle.setter
    def angle(self, value):
        raise OSError(5, "Input/output error")

    def detach(self):
        self.detached = True

    def close(self):
        pass


def test_a_failing_servo_is_a_servo_fault_and_is_detached():
    servo = BrokenServo()
    box = Compartments([servo], [90], [0], sleep=lambda s: None)
    with pytest.raises(ServoFault) as caught:
        box.release(1, 2)
    assert caught.value.compartment == 1 and isinstance(caught.value.cause, OSError)
    assert servo.detached


def test_bad_requests(factory):
    box = Compartments(build_servos(PINS, pin_factory=factory), [90] * 4, [0] * 4, sleep=lambda s: None)
    with pytest.raises(ServoFault, match="no compartment 5"):
        box.release(5, 1)
    with pytest.raises(ServoFault):
        box.release(0, 1)
    with pytest.raises(ValueError):
        box.release(1, 0)
    for pin in PINS:
        assert states(factory, pin) == [False]


PI = {"backend": "pi", "compartments": 4, "servo_pins": PINS, "lcd": "pcf8574", "dwell_ms": 300}


def test_build_hardware_on_mock_pins(factory):
    bus, screen, put = FakeI2C(), HD44780(16, 2), []
    bus.attach(0x27, Pcf8574Chip(screen))
    hw = build_hardware(PI, put.append, pin_factory=factory, sleep=lambda s: None, i2c=bus)
    for pin in PINS:
        assert states(factory, pin) == [False]
    hw.compartments.release(2, 1)
    assert states(factory, 13) == pytest.approx([False, 0.075, 0.05, 0.0])
    hw.lcd.show(["Take 1 pill"])
    assert screen.lines()[0] == "Take 1 pill".ljust(16)
    hw.close()


def test_build_sim_hardware_fits_32_compartments():
    hw = build_sim_hardware(lambda _: None, compartments=32, lcd_size=(20, 4), sleep=lambda s: None)
    assert hw.compartments.count == 32 and hw.simulated
    hw.compartments.release(32, 1)
    assert hw.compartments.servo(32).pwm_device.pin.states[-1].state == 0.0
    hw.lcd.show(["sim"])
    assert hw.lcd.emulator.lines()[0] == "sim".ljust(20)
    hw.close()


def test_build_hardware_sim_backend_uses_the_table():
    hw = build_hardware({"compartments": 3, "lcd_cols": 20, "lcd_rows": 4}, lambda _: None)
    assert hw.simulated and hw.compartments.count == 3 and hw.lcd.size == (20, 4)
    hw.close()


@pytest.mark.parametrize("table,message", [
    ({"backend": "pi", "servo_pins": [12, 13, 27, 19], "compartments": 4},
     "hardware.servo_pins[2]: pin 27 is already used by the buzzer"),
    ({"backend": "pi", "compartments": 4}, "hardware.servo_pins: required when backend = \"pi\""),
    ({"servo_pins": [12, 13], "compartments": 4}, "hardware.servo_pins: 2 pins for 4 compartments"),
    ({"servo_pins": [12, 13, 3, 19], "compartments": 4},
     "hardware.servo_pins[2]: pin 3 is already used by the LCD's I2C bus"),
    ({"servo_pins": [12, 13, 28, 19], "compartments": 4}, "hardware.servo_pins[2]: must be a BCM GPIO"),
    ({"led_pin": 17}, "hardware.led_pin: pin 17 is already used by the button"),
    ({"lcd": "gpio", "lcd_pins": {"rs": 4, "e": 25, "d4": 8, "d5": 7, "d6": 20, "d7": 22}},
     "hardware.lcd_pins.d7: pin 22 is already used by the LED"),
    ({"lcd": "gpio", "lcd_pins": {"rs": 4}}, "hardware.lcd_pins.e: missing"),
    ({"lcd": "lcd2004"}, "hardware.lcd: must be one of"),
    ({"lcd_cols": 16, "lcd_rows": 4}, "hardware.lcd_cols: a 16x4 display is not supported"),
    ({"servo_open_angle": 200}, "hardware.servo_open_angle: must be an angle"),
    ({"servo_open_angle": 0}, "compartment 1 opens and closes at the same angle"),
    ({"servo_min_pulse_ms": 2.0, "servo_max_pulse_ms": 1.0}, "must be less than servo_max_pulse_ms"),
    ({"pin_factory": "pigpio"}, "hardware.pin_factory: must be one of"),
    ({"hold_s": True}, "hardware.hold_s: must be a number"),
    ({"lid_pin": 0}, "hardware.lid_pin: pin 0 is reserved"),
    ({"servo_pin": [1]}, "hardware.servo_pin: unknown key"),
])
def test_config_errors_are_one_line_naming_the_key(table, message):
    with pytest.raises(HardwareConfigError) as caught:
        parse_hardware_config(table)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_config_defaults_and_per_compartment_angles():
    cfg = parse_hardware_config({"compartments": 2, "servo_open_angle": [100, 80], "lcd": "mcp23008"})
    assert cfg.open_angles == (100.0, 80.0) and cfg.closed_angles == (0.0, 0.0)
    assert cfg.lcd_address == 0x20 and cfg.backend == "sim" and cfg.button_pin == 17
    assert parse_hardware_config({}).lcd_address == 0x27


def test_every_hardware_key_is_documented_and_the_sample_parses():
    import re
    import tomllib
    from pathlib import Path

    from dispenser.hardware.settings import KEYS

    doc = (Path(__file__).parent.parent / "docs" / "HARDWARE.md").read_text(encoding="utf-8")
    for key in KEYS:
        assert f"| `{key}` |" in doc, f"hardware.{key} is not in docs/HARDWARE.md"
    sample = re.search(r"```toml\n(.*?)```", doc, re.S).group(1)
    cfg = parse_hardware_config(tomllib.loads(sample)["hardware"])
    assert cfg.backend == "pi" and cfg.lid_pin == 23
