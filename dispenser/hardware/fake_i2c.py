"""An I2C bus with emulated LCD backpacks on it, feeding the HD44780 emulator.

Used by the tests and available to the simulator, so that the MCP23008 and
PCF8574 code paths run end to end without a Pi. The bus has the busio.I2C methods
the Adafruit libraries call.

    >>> bus = FakeI2C()
    >>> screen = HD44780(16, 2)
    >>> bus.attach(0x27, Pcf8574Chip(screen))
"""
from __future__ import annotations

from .hd44780 import HD44780


class FakeI2C:
    """A busio-like I2C bus. Set `fail` to an exception to make every transfer raise it."""

    def __init__(self) -> None:
        self.devices: dict[int, object] = {}
        self.locked = False
        self.fail: Exception | None = None
        self.transfers = 0

    def attach(self, address: int, chip) -> None:
        self.devices[address] = chip

    def try_lock(self) -> bool:
        if self.locked:
            return False
        self.locked = True
        return True

    def unlock(self) -> None:
        self.locked = False

    def _chip(self, address: int):
        self.transfers += 1
        if self.fail is not None:
            raise self.fail
        try:
            return self.devices[address]
        except KeyError:
            raise OSError(121, "Remote I/O error") from None

    def writeto(self, address: int, buffer, *, start: int = 0, end: int | None = None) -> None:
        self._chip(address).write(bytes(buffer[start:end]))

    def readfrom_into(self, address: int, buffer, *, start: int = 0, end: int | None = None) -> None:
        end = len(buffer) if end is None else end
        buffer[start:end] = self._chip(address).read(end - start)

    def writeto_then_readfrom(self, address: int, out_buffer, in_buffer, *, out_start: int = 0,
                              out_end: int | None = None, in_start: int = 0,
                              in_end: int | None = None) -> None:
        chip = self._chip(address)
        chip.write(bytes(out_buffer[out_start:out_end]))
        in_end = len(in_buffer) if in_end is None else in_end
        in_buffer[in_start:in_end] = chip.read(in_end - in_start)


class Mcp23008Chip:
    """The MCP23008 registers as the Adafruit backpack wires them to the LCD.

    Bits: 1 = RS, 2 = E, 3-6 = D4-D7, 7 = backlight. A pin set as input floats
    (reads its pull-up), so it drives nothing.
    """

    IODIR, IPOL, GPINTEN, DEFVAL, INTCON, IOCON, GPPU, INTF, INTCAP, GPIO, OLAT = range(11)

    def __init__(self, screen: HD44780) -> None:
        self.screen = screen
        self.registers = bytearray(11)
        self.registers[self.IODIR] = 0xFF
        self.pointer = 0

    def write(self, data: bytes) -> None:
        if not data:
            return  # a probe
        self.pointer = data[0] % 11
        for value in data[1:]:
            register = self.OLAT if self.pointer == self.GPIO else self.pointer
            self.registers[register] = value
            self.pointer = (self.pointer + 1) % 11
        self._drive()

    def read(self, count: int) -> bytes:
        out = []
        for _ in range(count):
            out.append(self._read(self.pointer))
            self.pointer = (self.pointer + 1) % 11
        return bytes(out)

    def levels(self) -> int:
        iodir = self.registers[self.IODIR]
        return (self.registers[self.OLAT] & ~iodir | self.registers[self.GPPU] & iodir) & 0xFF

    def _read(self, register: int) -> int:
        if register == self.GPIO:
            return self.levels() ^ (self.registers[self.IPOL] & self.registers[self.IODIR])
        return self.registers[register]

    def _drive(self) -> None:
        bits = self.levels()
        self.screen.drive(rs=bool(bits & 0x02), enable=bool(bits & 0x04),
                          nibble=bits >> 3 & 0x0F, backlight=bool(bits & 0x80))


class Pcf8574Chip:
    """A PCF8574 LCD backpack: P0 = RS, P1 = RW, P2 = E, P3 = backlight, P4-P7 = D4-D7."""

    def __init__(self, screen: HD44780) -> None:
        self.screen = screen
        self.port = 0xFF  # the chip's power-on state: all lines weakly high
        self.writes = 0

    def write(self, data: bytes) -> None:
        for byte in data:
            self.writes += 1
            self.port = byte
            self.screen.drive(rs=bool(byte & 0x01), rw=bool(byte & 0x02), enable=bool(byte & 0x04),
                              backlight=bool(byte & 0x08), nibble=byte >> 4)

    def read(self, count: int) -> bytes:
        return bytes((self.port,)) * count
