"""An emulated HD44780 character LCD controller.

The simulator draws the screen from it and the tests read back what the real
charlcd library wrote, so the code that drives a physical display is the code the
simulator runs. It decodes the bus (RS, E, D4-D7, or all eight data lines) the
way the chip does: latching on the enable line's falling edge, starting in 8-bit
mode and following the 4-bit switch of the standard init sequence.

    >>> lcd = HD44780(16, 2)
    >>> lcd.lines()
    ['                ', '                ']
    >>> # hand lcd.rs, lcd.enable, lcd.d4 .. lcd.d7 to Character_LCD_Mono
    >>> from adafruit_character_lcd.character_lcd import Character_LCD_Mono
    >>> chip = Character_LCD_Mono(lcd.rs, lcd.enable, lcd.d4, lcd.d5, lcd.d6, lcd.d7, 16, 2)
    >>> chip.message = "Next: 08:00"
    >>> lcd.lines()
    ['Next: 08:00     ', '                ']

Timing (busy flag, execution times) is not emulated, and reads (RW high) are
ignored: the library never reads.
"""
from __future__ import annotations

import threading
from collections.abc import Callable

ROW_OFFSETS = (0x00, 0x40, 0x14, 0x54)
LINE_LENGTH = 40  # DDRAM characters per line in 2-line mode
CUSTOM_PLACEHOLDER = "\u2592"  # how a CGRAM (custom) character is drawn

# Character ROM A00 (the common one) where it differs from ASCII.
_ROM_A00 = {0x5C: "\u00a5", 0x7E: "\u2192", 0x7F: "\u2190", 0xDF: "\u00b0", 0xE4: "\u00b5"}


def render(code: int) -> str:
    """The glyph ROM A00 shows for a character code, as a str of length 1."""
    if code < 0x10:
        return CUSTOM_PLACEHOLDER  # 0x00-0x07 and their aliases 0x08-0x0F
    if code in _ROM_A00:
        return _ROM_A00[code]
    if 0x20 <= code < 0x7F:
        return chr(code)
    return "?"


class EmulatedPin:
    """One input line of the controller, shaped like a digitalio pin."""

    def __init__(self, on_change: Callable[[bool], None] | None = None) -> None:
        self._value = False
        self.direction = None
        self._on_change = on_change

    @property
    def value(self) -> bool:
        return self._value

    @value.setter
    def value(self, level: object) -> None:
        old, self._value = self._value, bool(level)
        if self._on_change is not None and old != self._value:
            self._on_change(self._value)

    def switch_to_output(self, value: bool = False, **_ignored: object) -> None:
        self.value = value


class HD44780:
    """The controller's state (DDRAM, CGRAM, address counter, modes) and its bus.

    `lines()` returns the visible text; `display_on`, `cursor_on`, `blink_on` and
    `backlight` tell the rest. Pins: `rs`, `rw`, `enable`, `d0`..`d7`, `backlight_pin`.
    """

    def __init__(self, cols: int = 16, rows: int = 2) -> None:
        if rows not in (1, 2, 4) or not 1 <= cols <= 20:
            raise ValueError(f"unsupported size {cols}x{rows}")
        self.cols, self.rows = cols, rows
        self._lock = threading.RLock()
        self.rs = EmulatedPin()
        self.rw = EmulatedPin()
        self.enable = EmulatedPin(self._on_enable)
        self.data = [EmulatedPin() for _ in range(8)]
        self.d0, self.d1, self.d2, self.d3, self.d4, self.d5, self.d6, self.d7 = self.data
        self.backlight_pin = EmulatedPin()
        self.power_on()

    def power_on(self) -> None:
        """The state after power-up (as after the chip's internal reset)."""
        with self._lock:
            self.ddram = bytearray(b" " * 0x80)
            self.cgram = bytearray(64)
            self.address = 0
            self.in_cgram = False
            self.eight_bit = True
            self.two_line = False
            self.increment = True
            self.shift_with_write = False
            self.display_on = False
            self.cursor_on = False
            self.blink_on = False
            self.shift = 0
            self._pending: int | None = None  # high nibble waiting for its low half (4-bit mode)
            self.commands = 0  # bytes executed, handy to see that a write was skipped

    @property
    def backlight(self) -> bool:
        return self.backlight_pin.value

    def drive(self, rs: bool, enable: bool, nibble: int, rw: bool = False,
              backlight: bool | None = None) -> None:
        """Set several lines at once, as an I/O expander does with one byte.

        A falling enable latches the data held before this write, as the chip's
        hold time requires; data changes with enable low are the normal case.
        """
        with self._lock:
            if self.enable.value and not enable:
                self.enable.value = False
            self.rs.value = rs
            self.rw.value = rw
            for bit, pin in enumerate(self.data[4:]):
                pin.value = (nibble >> bit) & 1
            if backlight is not None:
                self.backlight_pin.value = backlight
            self.enable.value = enable

    # -- the bus -------------------------------------------------------------

    def _on_enable(self, level: bool) -> None:
        if level:
            return
        with self._lock:
            if self.rw.value:
                return  # a read: nothing to latch
            bus = sum(int(pin.value) << bit for bit, pin in enumerate(self.data))
            if self.eight_bit:
                self._execute(bus, self.rs.value)
            elif self._pending is None:
                self._pending = bus >> 4
            else:
                value = (self._pending << 4) | (bus >> 4)
                self._pending = None
                self._execute(value, self.rs.value)

    def _execute(self, value: int, is_data: bool) -> None:
        self.commands += 1
        if is_data:
            self._write_data(value)
        elif value & 0x80:
            self.in_cgram = False
            self.address = value & 0x7F
        elif value & 0x40:
            self.in_cgram = True
            self.address = value & 0x3F
        elif value & 0x20:
            self.eight_bit = bool(value & 0x10)
            self.two_line = bool(value & 0x08)
            self._pending = None
        elif value & 0x10:
            self._cursor_or_display_shift(display=bool(value & 0x08), right=bool(value & 0x04))
        elif value & 0x08:
            self.display_on = bool(value & 0x04)
            self.cursor_on = bool(value & 0x02)
            self.blink_on = bool(value & 0x01)
        elif value & 0x04:
            self.increment = bool(value & 0x02)
            self.shift_with_write = bool(value & 0x01)
        elif value & 0x02:
            self.in_cgram, self.address, self.shift = False, 0, 0
        elif value & 0x01:
            self.ddram[:] = b" " * 0x80
            self.in_cgram, self.address, self.shift = False, 0, 0
            self.increment = True

    def _write_data(self, value: int) -> None:
        if self.in_cgram:
            self.cgram[self.address] = value & 0x1F
            self.address = (self.address + (1 if self.increment else -1)) & 0x3F
            return
        self.ddram[self.address] = value
        self.address = self._step(self.address, self.increment)
        if self.shift_with_write:
            self.shift = (self.shift + (1 if self.increment else -1)) % LINE_LENGTH

    def _cursor_or_display_shift(self, display: bool, right: bool) -> None:
        if display:
            # Moving the text right means the window onto DDRAM moves left.
            self.shift = (self.shift + (-1 if right else 1)) % LINE_LENGTH
        elif not self.in_cgram:
            self.address = self._step(self.address, right)

    def _step(self, address: int, forward: bool) -> int:
        """The next DDRAM address: 0x00-0x27 and 0x40-0x67 in 2-line mode, 0x00-0x4F in 1."""
        if self.two_line:
            line, col = address & 0x40, (address & 0x3F) % LINE_LENGTH
            col += 1 if forward else -1
            if col == LINE_LENGTH:
                return 0x00 if line else 0x40
            if col < 0:
                return 0x27 if line else 0x67
            return line | col
        return (address + (1 if forward else -1)) % 0x50

    # -- reading back --------------------------------------------------------

    def lines(self) -> list[str]:
        """The visible text, one str of `cols` characters a row (blank when off)."""
        with self._lock:
            if not self.display_on:
                return [" " * self.cols for _ in range(self.rows)]
            return [self._row(row) for row in range(self.rows)]

    def _row(self, row: int) -> str:
        offset = ROW_OFFSETS[row]
        if not self.two_line:
            return "".join(render(self.ddram[(offset + col + self.shift) % 0x50])
                           for col in range(self.cols))
        line = offset & 0x40
        return "".join(
            render(self.ddram[line | ((offset & 0x3F) + col + self.shift) % LINE_LENGTH])
            for col in range(self.cols))

    def custom_char(self, location: int) -> list[int]:
        """The 8 rows of CGRAM character `location` (0-7), 5 bits each."""
        with self._lock:
            start = (location & 7) * 8
            return list(self.cgram[start:start + 8])
