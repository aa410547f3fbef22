"""The real adafruit_pca9685 driving an emulated PCA9685: 50 Hz, nothing moves at start,
a release pulses one channel only and then switches it off, and bad config or a
missing chip is a one-line error."""
from __future__ import annotations

import subprocess
import sys

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from dispenser.hardware import build_hardware, parse_hardware_config
from dispenser.hardware.errors import HardwareConfigError, HardwareError, ServoFault
from fake_i2c import FakeI2C, Pca9685Chip, Pcf8574Chip
from dispenser.hardware.hd44780 import HD44780

PI = {"backend": "pi", "compartments": 4, "servo_driver": "pca9685", "lcd": "none", "dwell_ms": 300}
TOLERANCE_MS = 0.003  # rounding to one of the chip's 4096 steps: 19.99 ms / 4096 / 2


def build(table: dict = PI, chips: dict | None = None, **options):
    """(Hardware, bus) with `chips` ({address: chip}) on an emulated I2C bus."""
    bus = FakeI2C()
    for address, chip in (chips or {}).items():
        bus.attach(address, chip)
    hw = build_hardware(table, [].append, pin_factory=MockFactory(pin_class=MockPWMPin), i2c=bus,
                        sleep=lambda s: None, **options)
    return hw, bus


def pulse(angle: float, min_ms: float = 1.0, max_ms: float = 2.0) -> float:
    return min_ms + (max_ms - min_ms) * angle / 180


def test_the_chip_runs_at_50_hz_awake_with_auto_increment():
    chip = Pca9685Chip()
    hw, _ = build(chips={0x40: chip})
    assert chip.prescale == 121  # round(25 MHz / 4096 / 50) - 1
    assert chip.frequency == pytest.approx(50, abs=0.05)
    assert chip.registers[Pca9685Chip.MODE1] == Pca9685Chip.AI  # awake, RESTART cleared
    hw.close()


def test_building_moves_no_servo():
    chip = Pca9685Chip()
    hw, _ = build(chips={0x40: chip})
    assert chip.pulses == [[] for _ in range(16)]  # not a single pulse, not even the middle
    assert hw.compartments.count == 4
    hw.close()


def test_building_stops_a_channel_left_pulsing_by_a_previous_run():
    chip = Pca9685Chip()
    chip.write(bytes((Pca9685Chip.MODE1, Pca9685Chip.AI)))  # awake, as the last run left it
    chip.write(bytes((Pca9685Chip.LED0 + 4 * 2, 0, 0, 0x33, 0x01)))  # channel 2 still pulsing
    assert chip.pulse_ms(2) is not None
    hw, _ = build(chips={0x40: chip})
    assert chip.pulse_ms(2) is None and chip.pulses[2][-1] is None
    hw.close()


@pytest.mark.parametrize("quantity", [1, 2])
def test_release_pulses_only_its_channel_then_switches_it_off(quantity):
    chip = Pca9685Chip()
    moves = []
    hw, _ = build(chips={0x40: chip}, on_move=lambda c, state: moves.append((c, state)))
    hw.compartments.release(3, quantity)
    assert chip.pulses[2][:-1] == pytest.approx([1.5, 1.0] * quantity, abs=TOLERANCE_MS)
    assert chip.pulses[2][-1] is None and chip.pulse_ms(2) is None  # detached: no pulses
    assert [chip.pulses[n] for n in range(16) if n != 2] == [[]] * 15
    assert moves == [(3, "open"), (3, "closed")] * quantity + [(3, "detached")]
    hw.close()


def test_pulse_widths_follow_the_configured_angles_and_range():
    chip = Pca9685Chip()
    table = dict(PI, servo_min_pulse_ms=0.5, servo_max_pulse_ms=2.5,
                 servo_open_angle=[90, 90, 90, 150], servo_closed_angle=[0, 0, 0, 20])
    hw, _ = build(table, chips={0x40: chip})
    hw.compartments.release(4, 1)
    assert chip.pulses[3] == [pytest.approx(pulse(150, 0.5, 2.5), abs=TOLERANCE_MS),
                              pytest.approx(pulse(20, 0.5, 2.5), abs=TOLERANCE_MS), None]
    hw.close()


def test_the_servo_board_and_the_lcd_share_one_bus():
    chip, screen = Pca9685Chip(), HD44780(16, 2)
    hw, bus = build(dict(PI, lcd="pcf8574", pca9685_address=0x41),
                    chips={0x41: chip, 0x27: Pcf8574Chip(screen)})
    hw.lcd.show(["Take 1 pill"])
    hw.compartments.release(1, 1)
    assert screen.lines()[0] == "Take 1 pill".ljust(16)
    assert chip.pulses[0][-1] is None and len(chip.pulses[0]) == 3
    hw.close()


def test_an_i2c_error_during_a_release_is_a_servo_fault_and_the_next_release_works():
    chip, unplugged = Pca9685Chip(), []

    def unplug_once_open(compartment, state):
        if state == "open" and not unplugged:
            unplugged.append(compartment)
            bus.fail = OSError(121, "Remote I/O error")  # the bus built below

    hw, bus = build(chips={0x40: chip}, on_move=unplug_once_open)
    with pytest.raises(ServoFault) as caught:
        hw.compartments.release(2, 1)
    assert caught.value.compartment == 2 and isinstance(caught.value.cause, OSError)
    assert "\n" not in str(caught.value)
    assert chip.pulses[1] == [pytest.approx(1.5, abs=TOLERANCE_MS)]  # stuck open: the bus is gone
    bus.fail = None  # plugged back
    hw.compartments.release(2, 1)
    assert chip.pulses[1][-3:] == [pytest.approx(1.5, abs=TOLERANCE_MS),
                                   pytest.approx(1.0, abs=TOLERANCE_MS), None]
    hw.close()


def test_a_missing_chip_is_a_one_line_hardware_error():
    with pytest.raises(HardwareError) as caught:
        build(chips={0x41: Pca9685Chip()})  # jumpered to 0x41, configured for 0x40
    message = str(caught.value)
    assert message.startswith("PCA9685 at 0x40: no answer on I2C bus 1") and "\n" not in message
    assert not isinstance(caught.value, HardwareConfigError)


def test_close_switches_every_channel_off():
    chip = Pca9685Chip()
    hw, _ = build(chips={0x40: chip})
    hw.compartments.servo(1).angle = 90  # as if closing interrupted a move
    hw.close()
    assert chip.pulse_ms(0) is None and chip.pulses[0][-1] is None


def test_the_simulator_keeps_its_own_servos():
    hw = build_hardware({"servo_driver": "pca9685", "compartments": 16}, [].append, sleep=lambda s: None)
    assert hw.simulated and hw.compartments.count == 16
    assert type(hw.compartments.servo(16)).__name__ == "AngularServo"  # gpiozero, on mock pins
    hw.compartments.release(16, 1)
    hw.close()


def test_the_library_is_loaded_only_for_a_pca9685():
    code = ("import sys; from dispenser.hardware import build_hardware; "
            "build_hardware({}, print, sleep=lambda s: None).close(); "
            "print('adafruit_pca9685' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_a_pca9685_config_needs_no_servo_pins():
    cfg = parse_hardware_config({"backend": "pi", "servo_driver": "pca9685", "compartments": 16,
                                 "pca9685_address": 0x7F})
    assert (cfg.servo_driver, cfg.pca9685_address, cfg.servo_pins) == ("pca9685", 0x7F, ())
    assert parse_hardware_config({}).servo_driver == "gpio"


@pytest.mark.parametrize("table, message", [
    ({"servo_driver": "pca9685", "servo_pins": [12, 13, 18, 19], "compartments": 4},
     'hardware.servo_pins: not used with servo_driver = "pca9685" (compartment N is channel N-1)'),
    ({"servo_driver": "pca9685", "pca9685_address": 0x20},
     "hardware.pca9685_address: must be an I2C address from 0x40 to 0x7F"),
    ({"servo_driver": "pca9685", "pca9685_address": 0x80}, "hardware.pca9685_address: must be"),
    ({"servo_driver": "pca9685", "pca9685_address": "0x40"}, "hardware.pca9685_address: must be"),
    ({"servo_driver": "pca9685", "compartments": 17},
     'hardware.compartments: at most 16 with servo_driver = "pca9685"'),
    ({"servo_driver": "servo-hat"}, "hardware.servo_driver: must be one of 'gpio', 'pca9685'"),
    ({"pca9685_address": 0x41}, 'hardware.pca9685_address: only for servo_driver = "pca9685"'),
    ({"servo_driver": "pca9685", "lcd_address": 0x40},
     "hardware.pca9685_address: 0x40 is also the LCD's address"),
    ({"servo_driver": "pca9685", "lcd": "none", "button_pin": 2},
     "hardware.servo_driver: pin 2 is already used by the button"),
    ({"servo_driver": "pca9685", "lcd": "gpio", "lid_pin": 3},
     "hardware.lid_pin: pin 3 is already used by the PCA9685's I2C bus"),
])
def test_bad_pca9685_config_is_one_line_naming_the_key(table, message):
    with pytest.raises(HardwareConfigError) as caught:
        parse_hardware_config(dict(table, backend="pi"))
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


# -- the emulated chip keeps the library honest --

def test_prescale_is_ignored_while_the_oscillator_runs():
    chip = Pca9685Chip()
    chip.write(bytes((Pca9685Chip.MODE1, 0x00)))  # awake
    chip.write(bytes((Pca9685Chip.PRESCALE, 121)))
    assert chip.prescale == 0x1E
    chip.write(bytes((Pca9685Chip.MODE1, Pca9685Chip.SLEEP)))
    chip.write(bytes((Pca9685Chip.PRESCALE, 121)))
    assert chip.prescale == 121


def test_without_auto_increment_every_byte_lands_in_one_register():
    chip = Pca9685Chip()
    chip.write(bytes((Pca9685Chip.LED0, 1, 2, 3, 4)))  # power-on: AI off
    assert list(chip.registers[6:10]) == [4, 0, 0, 0x10]
    chip.write(bytes((Pca9685Chip.MODE1, Pca9685Chip.AI)))
    chip.write(bytes((Pca9685Chip.LED0, 1, 2, 3, 4)))
    assert list(chip.registers[6:10]) == [1, 2, 3, 4]
    chip.write(bytes((Pca9685Chip.LED0 + 1,)))
    assert chip.read(3) == bytes((2, 3, 4))


def test_full_off_wins_and_sleeping_stops_the_pulses():
    chip = Pca9685Chip()
    chip.write(bytes((Pca9685Chip.MODE1, Pca9685Chip.AI)))
    chip.write(bytes((Pca9685Chip.LED0, 0, 0x10, 0, 0x10)))  # full on and full off
    assert chip.pulse_ms(0) is None
    chip.write(bytes((Pca9685Chip.LED0, 0, 0x10, 0, 0)))  # full on
    assert chip.pulse_ms(0) == chip.period_ms
    chip.write(bytes((Pca9685Chip.MODE1, Pca9685Chip.AI | Pca9685Chip.SLEEP)))
    assert chip.pulse_ms(0) is None
    assert chip.registers[Pca9685Chip.MODE1] & Pca9685Chip.RESTART  # slept while running
    assert chip.pulses[0] == [chip.period_ms, None]
