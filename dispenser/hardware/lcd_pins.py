"""digitalio-shaped pins for charlcd's `Character_LCD_Mono`, made from what we have.

charlcd only needs objects with `.value`, `.direction` and `switch_to_output()`.
Two sources: gpiozero output devices (so the 4-bit GPIO wiring runs on any pin
factory, the mock one included) and the eight lines of a PCF8574 I2C expander (the
common LCD backpack, which charlcd does not support itself).
"""
from __future__ import annotations

import time
from typing import Protocol

from gpiozero import DigitalOutputDevice, Factory


class I2CBus(Protocol):
    """The part of a busio-like I2C bus (`board.I2C()`) the expander uses."""

    def try_lock(self) -> bool: ...

    def unlock(self) -> None: ...

    def writeto(self, address: int, buffer: bytes, *, start: int = 0, end: int | None = None) -> None: ...


class GpioLine:
    """A gpiozero `DigitalOutputDevice` seen as a digitalio pin.

        >>> from gpiozero.pins.mock import MockFactory
        >>> rs = GpioLine(25, pin_factory=MockFactory())
        >>> rs.value = True
        >>> rs.device.pin.state
        1
    """

    def __init__(self, pin: int, pin_factory: Factory | None = None) -> None:
        self.device = DigitalOutputDevice(pin, initial_value=False, pin_factory=pin_factory)
        self.direction = None  # charlcd sets OUTPUT; a DigitalOutputDevice already is one

    @property
    def value(self) -> bool:
        return bool(self.device.value)

    @value.setter
    def value(self, level: object) -> None:
        self.device.value = bool(level)

    def switch_to_output(self, value: bool = False, **_ignored: object) -> None:
        self.value = value

    def close(self) -> None:
        self.device.close()


class Pcf8574:
    """A PCF8574 expander on a busio-like I2C bus, wired as the usual LCD backpack.

    Lines: P0 = RS, P1 = RW, P2 = E, P3 = backlight, P4-P7 = D4-D7. The chip has no
    registers: every write is one byte setting all eight lines, so a shadow byte keeps
    the lines that a single pin change must not disturb.
    """

    RS, RW, E, BACKLIGHT, D4, D5, D6, D7 = range(8)

    def __init__(self, i2c: I2CBus, address: int = 0x27) -> None:
        self.i2c = i2c
        self.address = address
        self.shadow = 0x00

    def pin(self, line: int) -> "ExpanderPin":
        return ExpanderPin(self, line)

    def set_line(self, line: int, level: bool) -> None:
        byte = self.shadow | (1 << line) if level else self.shadow & ~(1 << line)
        if byte != self.shadow:  # a latch: an unchanged byte need not cross the slow bus
            self.write(byte)

    def write(self, byte: int) -> None:
        while not self.i2c.try_lock():
            time.sleep(0)
        try:
            self.i2c.writeto(self.address, bytes((byte,)))
        finally:
            self.i2c.unlock()
        self.shadow = byte


class ExpanderPin:
    """One line of a `Pcf8574`, shaped like a digitalio output pin."""

    def __init__(self, expander: Pcf8574, line: int) -> None:
        self.expander = expander
        self.line = line
        self.direction = None

    @property
    def value(self) -> bool:
        return bool(self.expander.shadow >> self.line & 1)

    @value.setter
    def value(self, level: object) -> None:
        self.expander.set_line(self.line, bool(level))

    def switch_to_output(self, value: bool = False, **_ignored: object) -> None:
        self.value = value
