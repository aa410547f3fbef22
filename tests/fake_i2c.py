"""An I2C bus with emulated chips on it: LCD backpacks feeding the HD44780
emulator, and a PCA9685 servo board.

Used by the tests and available to the simulator, so that the MCP23008, PCF8574
and PCA9685 code paths run end to end without a Pi. The bus has the busio.I2C
methods the Adafruit libraries call.

    >>> bus = FakeI2C()
    >>> screen = HD44780(16, 2)
    >>> bus.attach(0x27, Pcf8574Chip(screen))
    >>> bus.attach(0x40, Pca9685Chip())
"""
from __future__ import annotations

from typing import Protocol

from dispenser.hardware.hd44780 import HD44780


class Chip(Protocol):
    """A device on the bus: it takes the bytes written to it and answers reads."""

    def write(self, data: bytes) -> None: ...

    def read(self, count: int) -> bytes: ...


class FakeI2C:
    """A busio-like I2C bus. Set `fail` to an exception to make every transfer raise it."""

    def __init__(self) -> None:
        self.devices: dict[int, Chip] = {}
        self.locked = False
        self.fail: Exception | None = None
        self.transfers = 0

    def attach(self, address: int, chip: Chip) -> None:
        self.devices[address] = chip

    def try_lock(self) -> bool:
        if self.locked:
            return False
        self.locked = True
        return True

    def unlock(self) -> None:
        self.locked = False

    def _chip(self, address: int) -> Chip:
        self.transfers += 1
        if self.fail is not None:
            raise self.fail
        try:
            return self.devices[address]
        except KeyError:
            raise OSError(121, "Remote I/O error") from None

    def writeto(self, address: int, buffer: bytes | bytearray | memoryview, *, start: int = 0,
                end: int | None = None) -> None:
        self._chip(address).write(bytes(buffer[start:end]))

    def readfrom_into(self, address: int, buffer: bytearray | memoryview, *, start: int = 0,
                      end: int | None = None) -> None:
        end = len(buffer) if end is None else end
        buffer[start:end] = self._chip(address).read(end - start)

    def writeto_then_readfrom(self, address: int, out_buffer: bytes | bytearray | memoryview,
                              in_buffer: bytearray | memoryview, *, out_start: int = 0,
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


class Pca9685Chip:
    """A PCA9685 16-channel PWM chip: the registers adafruit_pca9685 uses, as the datasheet has them.

    Emulated: MODE1 (SLEEP stops the oscillator; PRESCALE takes writes only while
    asleep; RESTART is set by sleeping with outputs running and cleared by writing
    1; AI makes the register pointer step after each byte, 0x45 -> 0xFA, 0xFF -> 0x00),
    MODE2, LEDn_ON/OFF (0x06 + 4n) with the full-on (bit 4 of ON_H) and full-off
    (bit 4 of OFF_H, which wins) bits, and ALL_LED (0xFA-0xFD, write-only). Outputs
    change at the end of a write, as the chip's default "update on STOP" does.
    `pulse_ms(n)` is channel n's pulse width now; `pulses[n]` each change of it.
    """

    MODE1, MODE2, LED0, ALL_LED, PRESCALE = 0x00, 0x01, 0x06, 0xFA, 0xFE
    SLEEP, AI, RESTART = 0x10, 0x20, 0x80
    FULL = 0x10  # bit 4 of ON_H / OFF_H
    OSCILLATOR_HZ = 25_000_000
    CHANNELS = 16

    def __init__(self) -> None:
        self.registers = bytearray(256)  # power-on values:
        self.registers[self.MODE1] = 0x11  # asleep, answers the all-call address
        self.registers[self.MODE2] = 0x04
        self.registers[0x02:0x06] = bytes((0xE2, 0xE4, 0xE8, 0xE0))  # sub- and all-call addresses
        for n in range(self.CHANNELS):
            self.registers[self.LED0 + 4 * n + 3] = self.FULL  # every output full off
        self.registers[self.PRESCALE] = 0x1E  # 200 Hz
        self.pointer = 0
        self.pulses: list[list[float | None]] = [[] for _ in range(self.CHANNELS)]
        self._now: list[float | None] = [None] * self.CHANNELS

    # -- the bus side --

    def write(self, data: bytes) -> None:
        if not data:
            return  # a probe
        self.pointer = data[0]
        for value in data[1:]:
            self._store(self.pointer, value)
            self._step()
        self._update()

    def read(self, count: int) -> bytes:
        out = []
        for _ in range(count):
            write_only = self.ALL_LED <= self.pointer < self.PRESCALE
            out.append(0 if write_only else self.registers[self.pointer])
            self._step()
        return bytes(out)

    def _step(self) -> None:
        if self.registers[self.MODE1] & self.AI:
            self.pointer = {0x46: self.ALL_LED, 0x100: 0x00}.get(self.pointer + 1, self.pointer + 1)

    def _store(self, register: int, value: int) -> None:
        if register == self.MODE1:
            old = self.registers[self.MODE1]
            restart = 0 if value & self.RESTART else old & self.RESTART  # writing 1 clears it
            if value & self.SLEEP and not old & self.SLEEP and any(p is not None for p in self._now):
                restart = self.RESTART
            self.registers[self.MODE1] = value & ~self.RESTART | restart
        elif register == self.PRESCALE:
            if self.registers[self.MODE1] & self.SLEEP:  # ignored while the oscillator runs
                self.registers[self.PRESCALE] = max(value, 3)
        elif self.ALL_LED <= register < self.PRESCALE:
            for n in range(self.CHANNELS):
                self.registers[self.LED0 + 4 * n + register - self.ALL_LED] = value
        elif register <= 0x45:
            self.registers[register] = value
        # 0x46-0xF9 are reserved and 0xFF is the factory test mode: writes go nowhere

    # -- what the outputs do --

    @property
    def prescale(self) -> int:
        return self.registers[self.PRESCALE]

    @property
    def frequency(self) -> float:
        """PWM frequency in Hz: the 25 MHz oscillator over 4096 steps x (prescale + 1)."""
        return self.OSCILLATOR_HZ / 4096 / (self.prescale + 1)

    @property
    def period_ms(self) -> float:
        return 1000 / self.frequency

    def pulse_ms(self, channel: int) -> float | None:
        """The high time of each period in ms; None when there are no pulses (the
        output is full off, zero width, or the chip asleep); the whole period when
        the output is full on."""
        if self.registers[self.MODE1] & self.SLEEP:
            return None
        base = self.LED0 + 4 * channel
        on = int.from_bytes(self.registers[base:base + 2], "little")
        off = int.from_bytes(self.registers[base + 2:base + 4], "little")
        if off & 0x1000:
            return None
        if on & 0x1000:
            return self.period_ms
        steps = ((off & 0xFFF) - (on & 0xFFF)) % 4096
        return steps * self.period_ms / 4096 if steps else None

    def _update(self) -> None:
        for channel in range(self.CHANNELS):
            now = self.pulse_ms(channel)
            if now != self._now[channel]:
                self._now[channel] = now
                self.pulses[channel].append(now)
