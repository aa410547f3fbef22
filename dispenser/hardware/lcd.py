"""The character LCD: a small `Lcd` wrapper over Adafruit's charlcd, and its builders.

The daemon only calls `show(lines)`; the wrapper pads, encodes, and sends only the
characters that changed, because each byte costs about 1.5 ms on the bus. Any
failure of the display path (an I2C OSError, a missing library) surfaces from
`show()` as `LcdFault`; the next `show()` initialises the display again and redraws
it, so a display that was unplugged and plugged back recovers by itself.

    >>> lcd = sim_lcd(16, 2)
    >>> lcd.show(["Next: 08:00", "Sertraline"])     # True: something was sent
    True
    >>> lcd.emulator.lines()
    ['Next: 08:00     ', 'Sertraline      ']
"""
from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any, Callable

from gpiozero import Factory

from .errors import LcdFault
from .hd44780 import HD44780
from .lcd_pins import GpioLine, I2CBus, Pcf8574

SIZES = ((16, 1), (16, 2), (20, 2), (20, 4))

# Characters the display's ROM (A00) has outside plain ASCII, and their codes.
_ENCODE = {"\u00b0": "\xdf", "\u00b5": "\xe4", "\u2192": "\x7e", "\u2190": "\x7f", "\u00a5": "\x5c"}
_LIBRARY_MODULES = ("adafruit_character_lcd.character_lcd", "adafruit_character_lcd.character_lcd_i2c")


def _fit(lines: list[str] | str, cols: int, rows: int) -> list[str]:
    if isinstance(lines, str):
        lines = lines.split("\n")
    fitted = [encode(str(line))[:cols].ljust(cols) for line in list(lines)[:rows]]
    return fitted + [" " * cols] * (rows - len(fitted))


def encode(text: str) -> str:
    """Text as the display's character codes: CGRAM 0-7 and printable ASCII pass,
    a few ROM symbols (°, µ, →, ←) map to their codes, anything else becomes "?"."""
    out = []
    for char in text:
        code = ord(char)
        if char in _ENCODE:
            out.append(_ENCODE[char])
        elif code < 0x08 or 0x20 <= code < 0x7E and char != "\\":
            out.append(char)  # the ROM draws a backslash as a yen sign, so it is "?" too
        elif char in "\t\n\r":
            out.append(" ")
        else:
            out.append("?")
    return "".join(out)


# -- making charlcd's sleeps free (tests, simulator) ----------------------------

class _FreeTime:
    """Stands in for the `time` module inside charlcd: sleep returns at once."""

    @staticmethod
    def sleep(_seconds: float) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


_patch_lock = threading.Lock()
_patch_depth = 0


@contextlib.contextmanager
def no_sleep() -> Iterator[None]:
    """Within this block charlcd does not sleep (about 1 ms a byte otherwise).

    It swaps the library modules' `time` reference and restores it on exit; nested
    and concurrent uses are counted. Only for emulated displays: a real HD44780
    needs the delays.
    """
    global _patch_depth
    _load_library()
    with _patch_lock:
        if _patch_depth == 0:
            for name in _LIBRARY_MODULES:
                setattr(sys.modules[name], "time", _FreeTime())
        _patch_depth += 1
    try:
        yield
    finally:
        with _patch_lock:
            _patch_depth -= 1
            if _patch_depth == 0:
                for name in _LIBRARY_MODULES:
                    setattr(sys.modules[name], "time", time)


def _load_library() -> tuple[ModuleType, ModuleType]:
    """Import charlcd only when a display is used (it pulls in Blinka)."""
    try:
        from adafruit_character_lcd import character_lcd, character_lcd_i2c
    except Exception as error:  # Blinka raises RuntimeError for a missing gpiod on a Pi
        raise LcdFault(f"the LCD library cannot be loaded: {error}", error) from error
    return character_lcd, character_lcd_i2c


# -- the wrapper ----------------------------------------------------------------

class Lcd:
    """A `cols` x `rows` character display that redraws only what changed.

    `connect` returns a charlcd `Character_LCD` (called again after a fault);
    `fast` makes charlcd's sleeps free (emulated displays only); `emulator` is the
    `HD44780` behind a simulated display, else None.
    """

    def __init__(self, connect: Callable[[], Any], cols: int, rows: int, *,
                 fast: bool = False, emulator: HD44780 | None = None,
                 has_backlight: bool = True, close: Callable[[], None] | None = None) -> None:
        if (cols, rows) not in SIZES:
            raise ValueError(f"unsupported LCD size {cols}x{rows}")
        self.cols, self.rows = cols, rows
        self.emulator = emulator
        self.has_backlight = has_backlight
        self._connect = connect
        self._fast = fast
        self._close = close
        self._device: Any = None  # charlcd's Character_LCD (untyped)
        self._shown: list[str] | None = None  # what the display holds; None = unknown
        self._backlight = True
        self._lock = threading.Lock()

    @property
    def size(self) -> tuple[int, int]:
        return self.cols, self.rows

    @property
    def text(self) -> list[str]:
        """The rows last shown (as encoded for the display), blank before any."""
        shown = self._shown
        return list(shown) if shown is not None else [" " * self.cols] * self.rows

    def glass(self) -> list[str] | None:
        """What the glass shows now: the emulated controller's DDRAM as its rows, read
        between two `show()`s (never a half-written row); None for a real display."""
        if self.emulator is None:
            return None
        with self._lock:
            return self.emulator.lines()

    def fit(self, lines: list[str]) -> list[str]:
        """Exactly `rows` rows of exactly `cols` encoded characters."""
        return _fit(lines, self.cols, self.rows)

    def show(self, lines: list[str]) -> bool:
        """Display `lines` (padded or cut to the size); True when anything was sent."""
        wanted = self.fit(lines)
        with self._lock:
            if wanted == self._shown:
                return False
            with self._guard("show"):
                device, shown = self._ready()
                for row, (old, new) in enumerate(zip(shown, wanted)):
                    if old == new:
                        continue
                    first = next(i for i in range(self.cols) if old[i] != new[i])
                    last = next(i for i in reversed(range(self.cols)) if old[i] != new[i])
                    device.cursor_position(first, row)
                    device.message = new[first:last + 1]
                    shown[row] = new
            return True

    def clear(self) -> None:
        with self._lock, self._guard("clear"):
            self._ready()[0].clear()
            self._shown = [" " * self.cols] * self.rows

    def backlight(self, on: bool) -> None:
        """Switch the backlight (no effect on a wiring without a backlight line)."""
        with self._lock:
            self._backlight = bool(on)
            if self.has_backlight and self._device is not None:
                with self._guard("backlight"):
                    self._device.backlight = self._backlight

    @property
    def backlight_on(self) -> bool:
        return self._backlight

    def connect(self) -> None:
        """Initialise the display now rather than at the first `show()`."""
        with self._lock, self._guard("connect"):
            self._ready()

    def close(self) -> None:
        with self._lock:
            self._device = None
            self._shown = None
            if self._close is not None:
                self._close()

    def _ready(self) -> tuple[Any, list[str]]:
        """The charlcd object and what it shows, (re)initialised and cleared when its state is unknown."""
        if self._device is None or self._shown is None:
            self._device = None
            device = self._connect()  # runs the HD44780 init sequence and a clear
            if self.has_backlight:
                device.backlight = self._backlight
            self._device = device
            self._shown = [" " * self.cols] * self.rows
        return self._device, self._shown

    @contextlib.contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        try:
            if self._fast:
                with no_sleep():
                    yield
            else:
                _load_library()
                yield
        except LcdFault:
            self._device, self._shown = None, None
            raise
        except Exception as error:  # any failure of the display path is a device fault
            self._device, self._shown = None, None
            raise LcdFault(f"LCD {action} failed: {type(error).__name__}: {error}", error) from error


class NullLcd:
    """No display fitted (`lcd = "none"`): same interface, remembers the text."""

    emulator = None
    has_backlight = False

    def __init__(self, cols: int = 16, rows: int = 2) -> None:
        self.cols, self.rows = cols, rows
        self._shown = [" " * cols] * rows
        self.backlight_on = False

    @property
    def size(self) -> tuple[int, int]:
        return self.cols, self.rows

    @property
    def text(self) -> list[str]:
        return list(self._shown)

    def fit(self, lines: list[str]) -> list[str]:
        return _fit(lines, self.cols, self.rows)

    def glass(self) -> list[str] | None:
        return None

    def show(self, lines: list[str]) -> bool:
        wanted = self.fit(lines)
        changed, self._shown = wanted != self._shown, wanted
        return changed

    def clear(self) -> None:
        self._shown = [" " * self.cols] * self.rows

    def backlight(self, on: bool) -> None:
        self.backlight_on = bool(on)

    def connect(self) -> None:
        pass

    def close(self) -> None:
        pass


# -- builders -------------------------------------------------------------------

def gpio_lcd(pins: dict, cols: int = 16, rows: int = 2, *, pin_factory: Factory | None = None,
             fast: bool = False) -> Lcd:
    """An HD44780 wired directly in 4-bit mode: `pins` maps rs, e, d4..d7 (and
    optionally backlight) to BCM numbers; RW is tied to ground."""
    names = ("rs", "e", "d4", "d5", "d6", "d7")
    lines: dict[str, GpioLine] = {}
    try:
        for name in names + (("backlight",) if pins.get("backlight") is not None else ()):
            lines[name] = GpioLine(pins[name], pin_factory=pin_factory)
    except Exception:
        for line in lines.values():
            line.close()
        raise

    def connect() -> Any:
        character_lcd, _ = _load_library()
        return character_lcd.Character_LCD_Mono(
            *(lines[name] for name in names), cols, rows, backlight_pin=lines.get("backlight"))

    def close() -> None:
        for line in lines.values():
            line.close()

    return Lcd(connect, cols, rows, fast=fast, has_backlight="backlight" in lines, close=close)


def mcp23008_lcd(i2c: I2CBus | None = None, cols: int = 16, rows: int = 2, *, address: int = 0x20,
                 fast: bool = False) -> Lcd:
    """Adafruit's I2C/SPI backpack (MCP23008, address 0x20 to 0x27).
    `i2c` defaults to the Pi's bus, `board.I2C()`, opened at the first use."""
    def connect() -> Any:
        _, character_lcd_i2c = _load_library()
        return character_lcd_i2c.Character_LCD_I2C(i2c or _board_i2c(), cols, rows, address=address)

    return Lcd(connect, cols, rows, fast=fast)


def pcf8574_lcd(i2c: I2CBus | None = None, cols: int = 16, rows: int = 2, *, address: int = 0x27,
                fast: bool = False) -> Lcd:
    """The common PCF8574 backpack (address 0x27, or 0x3F on PCF8574A boards)."""
    def connect() -> Any:
        character_lcd, _ = _load_library()
        expander = Pcf8574(i2c or _board_i2c(), address)
        expander.write(0x00)  # all lines low, RW (P1) low for writing; fails fast if absent
        pin = expander.pin
        return character_lcd.Character_LCD_Mono(
            pin(Pcf8574.RS), pin(Pcf8574.E), pin(Pcf8574.D4), pin(Pcf8574.D5),
            pin(Pcf8574.D6), pin(Pcf8574.D7), cols, rows, backlight_pin=pin(Pcf8574.BACKLIGHT))

    return Lcd(connect, cols, rows, fast=fast)


def sim_lcd(cols: int = 16, rows: int = 2) -> Lcd:
    """The real charlcd code on an emulated controller, without its sleeps."""
    screen = HD44780(cols, rows)

    def connect() -> Any:
        character_lcd, _ = _load_library()
        return character_lcd.Character_LCD_Mono(
            screen.rs, screen.enable, screen.d4, screen.d5, screen.d6, screen.d7,
            cols, rows, backlight_pin=screen.backlight_pin)

    return Lcd(connect, cols, rows, fast=True, emulator=screen)


def _board_i2c() -> Any:  # busio.I2C (Blinka, untyped)
    import board  # Blinka: only on the Pi, only for an I2C display

    return board.I2C()
