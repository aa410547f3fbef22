"""The live simulator's terminal: the LCD as its glass shows it (the emulated HD44780's
DDRAM, at the configured 16x2 or 20x4, never the daemon's text), the LED, the buzzer, the
servos, and the keyboard as the button.

In a terminal it redraws in place; with stdin and stdout not a terminal (a pipe, a test)
it reads one command a line (`press`, `hold`, `hold MEDICATION`, `lid`, `jam`, `quit`) and
prints the LCD whenever it changes, so the same simulator can be scripted.
"""
from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import TYPE_CHECKING, TextIO

from .daemon import Clock, Daemon
from .inputs import Hold, Input, Press, Stop

if TYPE_CHECKING:
    from .hardware.inputs import Sensor
    from .hardware.lcd import Lcd, NullLcd
    from .hardware.sim_chute import SimulatedChute

KEYS: dict[str, Input] = {" ": Press(), "\r": Press(), "\n": Press(), "h": Hold(), "q": Stop()}
HELP = "keys: space/enter = press  h = hold (as needed)  l = lid  j = jam next release  q = quit"


class Terminal:
    """Draws the simulated device and feeds keys to the daemon."""

    def __init__(self, daemon: Daemon, clock: Clock, speed: float, out: TextIO | None = None,
                 inp: TextIO | None = None) -> None:
        """`out`, `inp`: the terminal's streams, sys.stdout and sys.stdin as they are now (a default
        of sys.stdin would be the one of the moment this module was imported)."""
        self.daemon, self.clock, self.speed = daemon, clock, speed
        self.out = out if out is not None else sys.stdout
        self.inp = inp if inp is not None else sys.stdin
        self.interactive = self.out.isatty() and self.inp.isatty()
        self.moves: list[str] = []
        self._last: object = None
        self._done = threading.Event()
        self.unread = False  # stdout was closed by its reader

    def on_move(self, compartment: int, state: str) -> None:
        """The servos' hook: remember the last few moves to show them."""
        self.moves = (self.moves + [f"box {compartment} {state}"])[-3:]

    # -- input ------------------------------------------------------------------------------

    def read_keys(self) -> None:
        """Runs on its own thread; only puts inputs on the daemon's queue."""
        try:
            if self.interactive:
                self._read_raw()
            else:
                self._read_lines()
        finally:
            self.daemon.put(Stop())

    def _sensor_key(self, key: str) -> bool:
        """`l` moves the simulated lid, `j` jams the next release: the parts' own pins do the
        rest (their inputs reach the daemon as a real lid's and drop sensor's would)."""
        hw = self.daemon.hardware
        lid: Sensor | None = getattr(hw, "lid", None)
        chute: SimulatedChute | None = getattr(hw, "chute", None)
        if key == "l" and lid is not None:
            pin = lid.device.pin  # the switch pulls low while the lid is shut
            pin.drive_high() if lid.is_active else pin.drive_low()
            return True
        if key == "j" and chute is not None:
            chute.jam_next()
            return True
        return False

    def _read_raw(self) -> None:
        import termios
        import tty
        fd = self.inp.fileno()
        saved = termios.tcgetattr(fd)
        try:
            tty.setcbreak(fd)
            while not self._done.is_set():
                key = self.inp.read(1)
                if not key or isinstance(KEYS.get(key.lower()), Stop):
                    return
                if key.lower() in KEYS:
                    self.daemon.put(KEYS[key.lower()])
                else:
                    self._sensor_key(key.lower())
        finally:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)

    def _read_lines(self) -> None:
        for line in self.inp:
            words = line.split()
            if not words:
                continue
            if words[0] in ("quit", "q", "stop"):
                return
            if words[0] == "hold" and len(words) > 1:
                self.daemon.put(Hold(words[1]))
            elif words[0] in ("press", "hold"):
                self.daemon.put(Press() if words[0] == "press" else Hold())
            elif words[0] in ("lid", "jam"):
                self._sensor_key(words[0][0])

    # -- output -----------------------------------------------------------------------------

    def draw_forever(self) -> None:
        try:
            while not self._done.wait(0.1):
                self.draw()
        except BrokenPipeError:
            self.unread = True
            self.daemon.put(Stop())  # nobody reads the screen any more (`| head`): stop as `q` would

    def draw(self) -> None:
        """Runs on the draw thread: draws what the glass shows (the emulated HD44780's
        DDRAM, read under the display's lock) and the read model's time, never the rules'
        state. Redrawn whenever any of it changes, the clock's second included, so the
        clock never stands still."""
        hw = self.daemon.hardware
        rows = glass_rows(hw.lcd)  # the emulator keeps its DDRAM after the device closes
        try:
            led, buzzer = hw.led.is_on, hw.buzzer.is_on
        except Exception:  # the pins are closed: the device has stopped, its last screen stays
            led = buzzer = False
        if not self.interactive:
            if rows != self._last:
                self._last = rows
                print("LCD | " + " | ".join(row.rstrip() for row in rows), file=self.out, flush=True)
            return
        now = self.clock.now().astimezone(self.daemon.timezone())  # the read model: safe on this thread
        clock = f"{now:%a %d %b %H:%M:%S}  (x{self.speed:g})"
        frame = (rows, led, buzzer, tuple(self.moves), clock)
        if frame == self._last:
            return
        self._last = frame
        status = (f"LED {'*' if led else '.'}   buzzer {'BEEP' if buzzer else '-'}   "
                  f"{'  '.join(self.moves)}")
        text = "\x1b[H\x1b[2J" + "\n".join(["dispenser (simulated)", "", *boxed(rows), "", status, clock, "", HELP])
        self.out.write(text + "\n")
        self.out.flush()

    def stop(self) -> None:
        self._done.set()
        self.draw()


def glass_rows(lcd: Lcd | NullLcd) -> tuple[str, ...]:
    """The rows the display's glass shows; a note when no display is fitted (`lcd = "none"`)."""
    rows = lcd.glass()
    return tuple(rows) if rows is not None else ("(no LCD fitted)",)


def boxed(rows: tuple[str, ...]) -> list[str]:
    """The glass in a frame exactly as wide as the display."""
    width = max(len(row) for row in rows)
    edge = "+" + "-" * width + "+"
    return [edge, *(f"|{row:<{width}}|" for row in rows), edge]


def run_live(daemon: Daemon, clock: Clock, speed: float, terminal: Terminal) -> None:
    """The daemon on the main thread; keys and drawing on two helpers."""
    from .runner import run_daemon
    threading.Thread(target=terminal.read_keys, daemon=True, name="keys").start()
    drawer = threading.Thread(target=terminal.draw_forever, daemon=True, name="draw")
    drawer.start()
    try:
        run_daemon(daemon, clock)
    finally:
        terminal.stop()
        with contextlib.suppress(Exception):
            time.sleep(0)
