"""The hardware layer: drivers for the dispenser's parts, real or simulated.

Drivers do what they are told and report what happens; they never decide whether
a dose may go out (that is `dispenser.rules`). Input callbacks only `put` an input
(`dispenser.inputs`) on the daemon's queue: Press, Hold, LidOpened, LidClosed, PillSeen.

    >>> from queue import Queue
    >>> queue = Queue()                                              # the daemon's
    >>> hw = build_hardware({"backend": "sim", "compartments": 2}, queue.put)   # [hardware] table
    >>> hw.lcd.show(["Next dose", "08:00 Sertraline"])
    True
    >>> hw.compartments.release(1, quantity=1, sleep=lambda s: None)
    >>> queue.get(timeout=1)          # the simulated chute's pill, seen by the drop sensor
    PillSeen()
    >>> hw.close()
"""
from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence, TypeVar

from .errors import HardwareConfigError, HardwareError, LcdFault, PinFactoryError, ServoFault
from ..inputs import Input
from .settings import HardwareConfig, parse_hardware_config

# The drivers (and gpiozero under them, 25 ms of imports) load when hardware is built, not
# when the package is imported: every command checks the config's [hardware] table with
# `settings`, and only `run`, `simulate` and `selftest` drive pins.
if TYPE_CHECKING:
    from gpiozero import Factory

    from .compartments import Compartments, Servo
    from .inputs import Button, DropSensor, Sensor
    from .lcd import Lcd, NullLcd
    from .lcd_pins import I2CBus
    from .outputs import Buzzer, Led
    from .pins import make_pin_factory
    from .sim_chute import SimulatedChute

_LAZY = {"Compartments": ".compartments", "Button": ".inputs", "Sensor": ".inputs", "DropSensor": ".inputs",
         "SimulatedChute": ".sim_chute", "Lcd": ".lcd", "NullLcd": ".lcd", "Buzzer": ".outputs",
         "Led": ".outputs", "make_pin_factory": ".pins"}

if not TYPE_CHECKING:
    def __getattr__(name: str) -> Any:
        """The drivers' names, from their modules when first asked for (PEP 562)."""
        if name in _LAZY:
            return getattr(importlib.import_module(_LAZY[name], __name__), name)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "Hardware", "build_hardware", "build_sim_hardware", "parse_hardware_config", "HardwareConfig",
    "HardwareError", "HardwareConfigError", "PinFactoryError", "LcdFault", "ServoFault",
    "Lcd", "NullLcd", "Compartments", "Button", "Sensor", "DropSensor", "SimulatedChute", "Buzzer", "Led",
    "make_pin_factory",
]

class _Part(Protocol):
    def close(self) -> None: ...


P = TypeVar("P", bound=_Part)

# Pins of the simulated device (mock pins; any free BCM numbers would do).
SIM_BUTTON, SIM_BUZZER, SIM_LED, SIM_LID, SIM_DROP = 17, 27, 22, 23, 24


@dataclass
class Hardware:
    """Everything the daemon drives, built from one `[hardware]` table."""

    lcd: Lcd | NullLcd
    compartments: Compartments
    button: Button
    buzzer: Buzzer
    led: Led
    lid: Sensor | None = None
    drop: DropSensor | None = None
    pin_factory: object = None
    simulated: bool = False
    drop_timeout_s: float = 1.0  # how long after a release's last cycle its pills may still be seen
    chute: SimulatedChute | None = None  # the simulated device's: `chute.jam(c)`

    def close(self) -> None:
        """Release every pin (servos detach, outputs go off)."""
        for part in (self.lid, self.drop, self.led, self.buzzer, self.button,
                     self.compartments, self.lcd):
            if part is not None:
                try:
                    part.close()
                except Exception:
                    pass  # closing must go on for the other parts


def build_hardware(hw_config: dict | HardwareConfig | None, put: Callable[[Input], None],
                   pin_factory: Factory | None = None, sleep: Callable[[float], None] = time.sleep, *,
                   i2c: I2CBus | None = None, on_move: Callable[[int, str], None] | None = None) -> Hardware:
    """The device described by a `[hardware]` table.

    `backend = "sim"` gives `build_sim_hardware`; `"pi"` real pins from
    `pin_factory` (default: the config's `pin_factory`). `sleep` paces the servos;
    `i2c` replaces the Pi's I2C bus (tests); a PCA9685 servo board shares it with the
    LCD. Raises HardwareConfigError for a bad table, PinFactoryError when no GPIO
    library works, HardwareError when a part cannot be set up (a PCA9685 that does not
    answer). An LCD fault does not stop the build: it shows at `lcd.show()`.
    """
    from .compartments import Compartments
    from .inputs import Button, drop_sensor, lid_switch
    from .outputs import Buzzer, Led
    from .pins import make_pin_factory
    cfg = hw_config if isinstance(hw_config, HardwareConfig) else parse_hardware_config(hw_config)
    if cfg.backend == "sim":
        return build_sim_hardware(put, cfg.compartments, (cfg.lcd_cols, cfg.lcd_rows), sleep=sleep,
                                  dwell_ms=cfg.dwell_ms, hold_s=cfg.hold_s, on_move=on_move,
                                  lcd=cfg.lcd != "none", drop_timeout_s=cfg.drop_timeout_ms / 1000)
    factory = pin_factory if pin_factory is not None else make_pin_factory(cfg.pin_factory)
    if cfg.servo_driver == "pca9685" and i2c is None:
        i2c = _open_i2c()  # one bus object for the servo board and the LCD
    built: list[_Part] = []

    def part(what: str, make: Callable[[], P]) -> P:
        try:
            thing = make()
        except HardwareError:
            raise
        except Exception as error:
            raise HardwareError(f"hardware: cannot set up {what}: {type(error).__name__}: {error}") from error
        built.append(thing)
        return thing

    try:
        servos = part("the servos", lambda: Compartments(
            _build_servos(cfg, factory, i2c),
            cfg.open_angles, cfg.closed_angles, dwell_s=cfg.dwell_ms / 1000, sleep=sleep,
            on_move=on_move))
        bounce = cfg.bounce_ms / 1000 or None
        button = part(f"the button on GPIO{cfg.button_pin}", lambda: Button(
            cfg.button_pin, put, pull_up=cfg.button_pull_up, bounce_s=bounce, hold_s=cfg.hold_s,
            pin_factory=factory))
        buzzer = part(f"the buzzer on GPIO{cfg.buzzer_pin}", lambda: Buzzer(cfg.buzzer_pin, pin_factory=factory))
        led = part(f"the LED on GPIO{cfg.led_pin}", lambda: Led(cfg.led_pin, pin_factory=factory))
        lid = drop = None
        lid_pin, drop_pin = cfg.lid_pin, cfg.drop_pin
        if lid_pin is not None:
            lid = part(f"the lid switch on GPIO{lid_pin}",
                       lambda: lid_switch(lid_pin, put, pin_factory=factory))
        if drop_pin is not None:
            drop = part(f"the pill-drop sensor on GPIO{drop_pin}",
                        lambda: drop_sensor(drop_pin, put, pin_factory=factory))
        lcd = part("the LCD", lambda: _build_lcd(cfg, factory, i2c))
    except Exception:
        for thing in reversed(built):
            thing.close()
        raise
    return Hardware(lcd=lcd, compartments=servos, button=button, buzzer=buzzer, led=led,
                    lid=lid, drop=drop, pin_factory=factory, drop_timeout_s=cfg.drop_timeout_ms / 1000)


def _build_servos(cfg: HardwareConfig, factory: Factory | None, i2c: I2CBus | None) -> Sequence[Servo]:
    from .compartments import build_servos
    if cfg.servo_driver == "pca9685":
        from .pca9685 import build_pca9685_servos  # imports adafruit_pca9685: only when used

        return build_pca9685_servos(i2c, cfg.compartments, address=cfg.pca9685_address,
                                    min_pulse_ms=cfg.min_pulse_ms, max_pulse_ms=cfg.max_pulse_ms)
    return build_servos(cfg.servo_pins, pin_factory=factory, min_pulse_ms=cfg.min_pulse_ms,
                        max_pulse_ms=cfg.max_pulse_ms)


def _open_i2c() -> I2CBus:
    from .lcd import _board_i2c
    try:
        return _board_i2c()
    except Exception as error:  # Blinka raises RuntimeError, ValueError, OSError, ...
        raise HardwareError(f"hardware: cannot open I2C bus 1 for the PCA9685: "
                            f"{type(error).__name__}: {error}") from error


def _build_lcd(cfg: HardwareConfig, factory: Factory | None, i2c: I2CBus | None) -> Lcd | NullLcd:
    from .lcd import NullLcd, gpio_lcd, mcp23008_lcd, pcf8574_lcd
    size = (cfg.lcd_cols, cfg.lcd_rows)
    if cfg.lcd == "pcf8574":
        return pcf8574_lcd(i2c, *size, address=cfg.lcd_address)
    if cfg.lcd == "mcp23008":
        return mcp23008_lcd(i2c, *size, address=cfg.lcd_address)
    if cfg.lcd == "gpio":
        return gpio_lcd(cfg.lcd_pins, *size, pin_factory=factory)
    return NullLcd(*size)


def build_sim_hardware(put: Callable[[Input], None], compartments: int = 8,
                       lcd_size: tuple[int, int] = (16, 2), *,
                       sleep: Callable[[float], None] = time.sleep, dwell_ms: int = 500,
                       hold_s: float = 2.0, on_move: Callable[[int, str], None] | None = None,
                       lcd: bool = True, lid: bool = True, drop: bool = True,
                       drop_timeout_s: float = 1.0) -> Hardware:
    """The simulated device: the same drivers on gpiozero mock pins, the LCD on the
    HD44780 emulator (`hw.lcd.emulator.lines()` draws it), a lid switch (closed at
    start) and a pill-drop sensor fed by a simulated chute (`hw.chute.jam(c)`).

    The simulator presses the button with `hw.button.device.pin.drive_low()` /
    `drive_high()`, opens the lid with `hw.lid.device.pin.drive_high()`, or puts
    inputs itself.
    """
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    from .compartments import Compartments, build_servos
    from .inputs import Button, drop_sensor, lid_switch
    from .lcd import NullLcd, sim_lcd
    from .outputs import Buzzer, Led
    from .sim_chute import SimulatedChute
    factory = MockFactory(pin_class=MockPWMPin)
    chute = SimulatedChute(factory.pin(SIM_DROP)) if drop else None

    def moved(compartment: int, state: str) -> None:
        if chute is not None:
            chute.on_move(compartment, state)
        if on_move is not None:
            on_move(compartment, state)

    # The servos get mock factories of their own so that up to 32 compartments fit:
    # 24 pins each, GPIO4-27 (GPIO2/3 have pull-ups, 0/1 are reserved).
    servos = []
    for start in range(0, compartments, 24):
        count = min(24, compartments - start)
        servos += build_servos(range(4, 4 + count), pin_factory=MockFactory(pin_class=MockPWMPin))
    box = Compartments(servos, [90.0] * compartments, [0.0] * compartments,
                       dwell_s=dwell_ms / 1000, sleep=sleep, on_move=moved)
    lid_sensor = None
    if lid:
        built = False

        def put_once_built(item: Input) -> None:
            if built:
                put(item)

        lid_sensor = lid_switch(SIM_LID, put_once_built, pin_factory=factory, bounce_s=None)
        lid_sensor.device.pin.drive_low()  # the lid starts shut, and saying so is no input
        built = True
    return Hardware(
        lcd=sim_lcd(*lcd_size) if lcd else NullLcd(*lcd_size),
        compartments=box,
        button=Button(SIM_BUTTON, put, hold_s=hold_s, pin_factory=factory),
        buzzer=Buzzer(SIM_BUZZER, pin_factory=factory),
        led=Led(SIM_LED, pin_factory=factory),
        lid=lid_sensor,
        drop=drop_sensor(SIM_DROP, put, pin_factory=factory) if drop else None,
        pin_factory=factory, simulated=True, drop_timeout_s=drop_timeout_s, chute=chute,
    )
