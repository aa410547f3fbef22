"""The live simulator's terminal: the LCD as it would look, the LED, the buzzer, the servos,
and the keyboard as the button.

In a terminal it redraws in place; with stdin and stdout not a terminal (a pipe, a test)
it reads one command a line (`press`, `hold`, `hold MEDICATION`, `quit`) and prints the
LCD whenever it changes, so the same simulator can be scripted.
"""
from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import TextIO

from .daemon import Clock, Daemon

KEYS = {" ": "press", "\r": "press", "\n": "press", "h": "hold", "q": "stop"}
HELP = "keys: space/enter = press   h = hold (as needed)   q = quit"


class Terminal:
    """Draws the simulated device and feeds keys to the daemon."""

    def __init__(self, daemon: Daemon, clock: Clock, speed: float, out: TextIO = sys.stdout,
                 inp: TextIO = sys.stdin) -> None:
        self.daemon, self.clock, self.speed = daemon, clock, speed
        self.out, self.inp = out, inp
        self.interactive = out.isatty() and inp.isatty()
        self.moves: list[str] = []
        self._last: tuple | None = None  # the frame last drawn
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
            self.daemon.put("stop")

    def _read_raw(self) -> None:
        import termios
        import tty
        fd = self.inp.fileno()
        saved = termios.tcgetattr(fd)
        try:
            tty.setcbreak(fd)
            while not self._done.is_set():
                key = self.inp.read(1)
                if not key or KEYS.get(key.lower()) == "stop":
                    return
                if key.lower() in KEYS:
                    self.daemon.put(KEYS[key.lower()])
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
                self.daemon.put(("hold", words[1]))
            elif words[0] in ("press", "hold"):
                self.daemon.put(words[0])

    # -- output -----------------------------------------------------------------------------

    def draw_forever(self) -> None:
        try:
            while not self._done.wait(0.1):
                self.draw()
        except BrokenPipeError:
            self.unread = True
            self.daemon.put("stop")  # nobody reads the screen any more (`| head`): stop as `q` would

    def draw(self) -> None:
        """Runs on the draw thread: reads only what the daemon's thread replaces whole
        (the lines shown, the engine's read model), never the rules' state."""
        hw = self.daemon.hardware
        lines = list(self.daemon._shown) or [""]
        try:
            led, buzzer = hw.led.is_on, hw.buzzer.is_on
        except Exception:  # the pins are closed: the device is shutting down
            return
        frame = (tuple(lines),) if not self.interactive else (tuple(lines), led, buzzer, tuple(self.moves))
        if frame == self._last:
            return
        self._last = frame
        if not self.interactive:
            print("LCD | " + " | ".join(line.rstrip() for line in lines), file=self.out, flush=True)
            return
        width = max(len(line) for line in lines)
        now = self.clock.now().astimezone(self.daemon.timezone())  # the read model: safe on this thread
        box = ["+" + "-" * width + "+"] + [f"|{line:<{width}}|" for line in lines] + ["+" + "-" * width + "+"]
        status = (f"LED {'*' if led else '.'}   buzzer {'BEEP' if buzzer else '-'}   "
                  f"{'  '.join(self.moves)}")
        clock = f"{now:%a %d %b %H:%M:%S}  (x{self.speed:g})"
        text = "\x1b[H\x1b[2J" + "\n".join(["dispenser (simulated)", "", *box, "", status, clock, "", HELP])
        self.out.write(text + "\n")
        self.out.flush()

    def stop(self) -> None:
        self._done.set()
        self.draw()


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
