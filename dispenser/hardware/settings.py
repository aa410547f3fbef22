"""The `[hardware]` config table: its keys, defaults and checks.

Every problem is one line naming the key, e.g.
`hardware.servo_pins[2]: pin 18 is already used by the buzzer`, because a wrong pin
on a medical device is a silent fault. docs/HARDWARE.md documents every key.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeGuard, overload

from .errors import HardwareConfigError
from .pins import FACTORIES

LCD_TYPES = ("pcf8574", "mcp23008", "gpio", "none")
LCD_SIZES = ((16, 1), (16, 2), (20, 2), (20, 4))
LCD_LINES = ("rs", "e", "d4", "d5", "d6", "d7")
DEFAULT_LCD_PINS = {"rs": 4, "e": 25, "d4": 8, "d5": 7, "d6": 20, "d7": 21}
DEFAULT_ADDRESS = {"pcf8574": 0x27, "mcp23008": 0x20}
I2C_PINS = (2, 3)
SERVO_DRIVERS = ("gpio", "pca9685")
PCA9685_CHANNELS = 16
RESERVED = {0: "reserved for the HAT ID EEPROM", 1: "reserved for the HAT ID EEPROM"}

KEYS = {
    "backend", "pin_factory", "compartments", "servo_pins", "servo_open_angle",
    "servo_closed_angle", "servo_min_pulse_ms", "servo_max_pulse_ms", "dwell_ms",
    "button_pin", "button_pull_up", "hold_s", "bounce_ms", "buzzer_pin", "led_pin",
    "lcd", "lcd_cols", "lcd_rows", "lcd_address", "lcd_pins", "lid_pin", "drop_pin",
    "servo_driver", "pca9685_address", "drop_timeout_ms",
}


@dataclass(frozen=True)
class HardwareConfig:
    """A checked `[hardware]` table; defaults are the wiring in docs/HARDWARE.md."""

    backend: str = "sim"
    pin_factory: str = "auto"
    compartments: int = 8
    servo_driver: str = "gpio"
    servo_pins: tuple[int, ...] = ()
    pca9685_address: int = 0x40
    open_angles: tuple[float, ...] = ()
    closed_angles: tuple[float, ...] = ()
    min_pulse_ms: float = 1.0
    max_pulse_ms: float = 2.0
    dwell_ms: int = 500
    button_pin: int = 17
    button_pull_up: bool = True
    hold_s: float = 2.0
    bounce_ms: int = 0
    buzzer_pin: int = 27
    led_pin: int = 22
    lcd: str = "pcf8574"
    lcd_cols: int = 16
    lcd_rows: int = 2
    lcd_address: int = 0x27
    lcd_pins: dict = field(default_factory=lambda: dict(DEFAULT_LCD_PINS))
    lid_pin: int | None = None
    drop_pin: int | None = None
    drop_timeout_ms: int = 1000


def parse_hardware_config(table: dict | None) -> HardwareConfig:
    """Check a `[hardware]` table (a dict from TOML); raise HardwareConfigError."""
    table = dict(table or {})
    for key in table:
        if key not in KEYS:
            raise HardwareConfigError(f"hardware.{key}: unknown key")
    backend = _choice(table, "backend", ("sim", "pi"), "sim")
    pin_factory = _choice(table, "pin_factory", FACTORIES, "auto")
    compartments = _int(table, "compartments", 8, 1, 32)
    servo_driver = _choice(table, "servo_driver", SERVO_DRIVERS, "gpio")
    if servo_driver == "pca9685" and compartments > PCA9685_CHANNELS:
        raise HardwareConfigError(f"hardware.compartments: at most {PCA9685_CHANNELS} with "
                                  f"servo_driver = \"pca9685\" (one channel each), not {compartments}")
    open_angles = _angles(table, "servo_open_angle", 90, compartments)
    closed_angles = _angles(table, "servo_closed_angle", 0, compartments)
    for i, (opened, closed) in enumerate(zip(open_angles, closed_angles)):
        if opened == closed:
            raise HardwareConfigError(f"hardware.servo_open_angle: compartment {i + 1} opens and "
                                      f"closes at the same angle ({opened:g})")
    min_pulse = _number(table, "servo_min_pulse_ms", 1.0, 0.3, 3.0)
    max_pulse = _number(table, "servo_max_pulse_ms", 2.0, 0.3, 3.0)
    if min_pulse >= max_pulse:
        raise HardwareConfigError("hardware.servo_min_pulse_ms: must be less than servo_max_pulse_ms "
                                  f"({min_pulse:g} >= {max_pulse:g})")
    lcd = _choice(table, "lcd", LCD_TYPES, "pcf8574")
    cols = _int(table, "lcd_cols", 16, 1, 40)
    rows = _int(table, "lcd_rows", 2, 1, 4)
    if (cols, rows) not in LCD_SIZES:
        raise HardwareConfigError(f"hardware.lcd_cols: a {cols}x{rows} display is not supported "
                                  "(16x1, 16x2, 20x2 or 20x4)")
    address = _int(table, "lcd_address", DEFAULT_ADDRESS.get(lcd, 0x27), 0x03, 0x77)

    pins = _Pins()
    button = pins.claim(table, "button_pin", 17, "the button")
    buzzer = pins.claim(table, "buzzer_pin", 27, "the buzzer")
    led = pins.claim(table, "led_pin", 22, "the LED")
    lcd_pins = _lcd_pins(table, lcd, pins)
    pca9685_address = _pca9685(table, servo_driver, lcd, address, pins)
    lid = pins.claim(table, "lid_pin", None, "the lid switch")
    drop = pins.claim(table, "drop_pin", None, "the pill-drop sensor")
    servo_pins = _servo_pins(table, backend, servo_driver, compartments, pins)
    return HardwareConfig(
        backend=backend, pin_factory=pin_factory, compartments=compartments,
        servo_driver=servo_driver, servo_pins=servo_pins, pca9685_address=pca9685_address,
        open_angles=open_angles, closed_angles=closed_angles,
        min_pulse_ms=min_pulse, max_pulse_ms=max_pulse,
        dwell_ms=_int(table, "dwell_ms", 500, 50, 5000),
        button_pin=button, button_pull_up=_bool(table, "button_pull_up", True),
        hold_s=_number(table, "hold_s", 2.0, 0.3, 10.0),
        bounce_ms=_int(table, "bounce_ms", 0, 0, 500),
        buzzer_pin=buzzer, led_pin=led, lcd=lcd, lcd_cols=cols, lcd_rows=rows,
        lcd_address=address, lcd_pins=lcd_pins, lid_pin=lid, drop_pin=drop,
        drop_timeout_ms=_int(table, "drop_timeout_ms", 1000, 100, 10000),
    )


class _Pins:
    """Which BCM pin each device uses, to refuse a pin used twice."""

    def __init__(self) -> None:
        self.owners: dict[int, str] = {}

    def take(self, pin: int, where: str, owner: str) -> int:
        if pin in RESERVED:
            raise HardwareConfigError(f"{where}: pin {pin} is {RESERVED[pin]}")
        if pin in self.owners:
            raise HardwareConfigError(f"{where}: pin {pin} is already used by {self.owners[pin]}")
        self.owners[pin] = owner
        return pin

    @overload
    def claim(self, table: dict, key: str, default: int, owner: str) -> int: ...

    @overload
    def claim(self, table: dict, key: str, default: None, owner: str) -> int | None: ...

    def claim(self, table: dict, key: str, default: int | None, owner: str) -> int | None:
        if key not in table and default is None:
            return None
        return self.take(_pin(table.get(key, default), f"hardware.{key}"), f"hardware.{key}", owner)


def _lcd_pins(table: dict, lcd: str, pins: _Pins) -> dict:
    if lcd in ("pcf8574", "mcp23008"):
        if "lcd_pins" in table:
            raise HardwareConfigError(f"hardware.lcd_pins: only for lcd = \"gpio\", not \"{lcd}\"")
        for pin in I2C_PINS:
            pins.take(pin, "hardware.lcd", "the LCD's I2C bus")
        return {}
    if lcd == "none":
        return {}
    given = table.get("lcd_pins", DEFAULT_LCD_PINS)
    if not isinstance(given, dict):
        raise HardwareConfigError("hardware.lcd_pins: must be a table like "
                                  "{rs = 4, e = 25, d4 = 8, d5 = 7, d6 = 20, d7 = 21}")
    for name in given:
        if name not in LCD_LINES + ("backlight",):
            raise HardwareConfigError(f"hardware.lcd_pins.{name}: unknown LCD line "
                                      "(rs, e, d4, d5, d6, d7, backlight)")
    chosen = {}
    for name in LCD_LINES + ("backlight",):
        if name not in given:
            if name == "backlight":
                continue
            raise HardwareConfigError(f"hardware.lcd_pins.{name}: missing")
        where = f"hardware.lcd_pins.{name}"
        chosen[name] = pins.take(_pin(given[name], where), where, f"the LCD's {name} line")
    return chosen


def _pca9685(table: dict, servo_driver: str, lcd: str, lcd_address: int, pins: _Pins) -> int:
    """The PCA9685's address; the board shares the LCD's I2C bus (pins 2 and 3)."""
    if servo_driver != "pca9685":
        if "pca9685_address" in table:
            raise HardwareConfigError("hardware.pca9685_address: only for servo_driver = \"pca9685\"")
        return 0x40
    value = table.get("pca9685_address", 0x40)
    whole = isinstance(value, int) and not isinstance(value, bool)
    if not whole or not 0x40 <= value <= 0x7F:
        shown = f"0x{value:02X}" if whole and value >= 0 else repr(value)
        raise HardwareConfigError("hardware.pca9685_address: must be an I2C address from 0x40 to 0x7F "
                                  f"(set by the board's jumpers), not {shown}")
    lcd_on_i2c = lcd in DEFAULT_ADDRESS  # a backpack, which has claimed the bus already
    if lcd_on_i2c and lcd_address == value:
        raise HardwareConfigError(f"hardware.pca9685_address: 0x{value:02X} is also the LCD's "
                                  "address (lcd_address)")
    if not lcd_on_i2c:
        for pin in I2C_PINS:
            pins.take(pin, "hardware.servo_driver", "the PCA9685's I2C bus")
    return value


def _servo_pins(table: dict, backend: str, servo_driver: str, compartments: int,
                pins: _Pins) -> tuple[int, ...]:
    if servo_driver == "pca9685":
        if "servo_pins" in table:
            raise HardwareConfigError("hardware.servo_pins: not used with servo_driver = \"pca9685\" "
                                      "(compartment N is channel N-1)")
        return ()
    if "servo_pins" not in table:
        if backend == "pi":
            raise HardwareConfigError("hardware.servo_pins: required when backend = \"pi\" "
                                      "(one BCM pin per compartment)")
        return ()
    given = table["servo_pins"]
    if not isinstance(given, list):
        raise HardwareConfigError("hardware.servo_pins: must be a list of BCM pin numbers")
    if len(given) != compartments:
        raise HardwareConfigError(f"hardware.servo_pins: {len(given)} pins for {compartments} "
                                  "compartments (one each)")
    return tuple(pins.take(_pin(pin, f"hardware.servo_pins[{i}]"), f"hardware.servo_pins[{i}]",
                           f"servo {i + 1}") for i, pin in enumerate(given))


def _angles(table: dict, key: str, default: float, compartments: int) -> tuple[float, ...]:
    value = table.get(key, default)
    if isinstance(value, list):
        if len(value) != compartments:
            raise HardwareConfigError(f"hardware.{key}: {len(value)} angles for {compartments} "
                                      "compartments (one each, or one number for all)")
        return tuple(_angle(v, f"hardware.{key}[{i}]") for i, v in enumerate(value))
    return (_angle(value, f"hardware.{key}"),) * compartments


def _angle(value: object, where: str) -> float:
    if not _is_number(value) or not 0 <= value <= 180:
        raise HardwareConfigError(f"{where}: must be an angle from 0 to 180 degrees, not {value!r}")
    return float(value)


def _pin(value: object, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 27:
        raise HardwareConfigError(f"{where}: must be a BCM GPIO number from 2 to 27, not {value!r}")
    return value


def _int(table: dict, key: str, default: int, low: int, high: int) -> int:
    value = table.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise HardwareConfigError(f"hardware.{key}: must be a whole number from {low} to {high}, "
                                  f"not {value!r}")
    return value


def _number(table: dict, key: str, default: float, low: float, high: float) -> float:
    value = table.get(key, default)
    if not _is_number(value) or not low <= value <= high:
        raise HardwareConfigError(f"hardware.{key}: must be a number from {low:g} to {high:g}, "
                                  f"not {value!r}")
    return float(value)


def _bool(table: dict, key: str, default: bool) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise HardwareConfigError(f"hardware.{key}: must be true or false, not {value!r}")
    return value


def _choice(table: dict, key: str, choices: tuple, default: str) -> str:
    value = table.get(key, default)
    if value not in choices:
        raise HardwareConfigError(f"hardware.{key}: must be one of "
                                  f"{', '.join(repr(c) for c in choices)}, not {value!r}")
    return value


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
