"""`dispenser selftest`: the first check after assembly, before any pill goes in.

Shows a test pattern on the LCD, opens and closes each compartment once, beeps, lights
the LED, and waits for a press of the button. It logs nothing: it is not a dose.
"""
from __future__ import annotations

import contextlib
import os
import select
import sys
import threading
import time
from functools import partial
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from .hardware import Buzzer, Hardware, Led

from .inputs import Input, Press

PATTERN = "0123456789ABCDEFGHIJ"


def run_selftest(build: Callable[[Callable[[Input], None]], Hardware], say: Callable[[str], None],
                 wait_s: float = 30.0, sleep: Callable[[float], None] = time.sleep,
                 button: str = "the button", await_press: bool = True) -> bool:
    """Run every check, report each with `say`, and return True when all passed.

    `button` names what to press in the prompt; with `await_press=False` (the simulated
    device, `--yes`) the press is not waited for and counts as skipped, not failed.
    """
    pressed = threading.Event()
    def put(item: Input) -> None:
        if isinstance(item, Press):
            pressed.set()

    hardware = build(put)
    ok = True

    def check(name: str, action: Callable[[], object]) -> None:
        nonlocal ok
        try:
            action()
            say(f"ok    {name}")
        except Exception as error:  # noqa: BLE001 - every failure is reported, and the test goes on
            ok = False
            say(f"FAIL  {name}: {type(error).__name__}: {error}")

    try:
        lcd = hardware.lcd
        check("LCD test pattern", lambda: lcd.show([PATTERN[: lcd.cols]] + ["Self-test"] * (lcd.rows - 1)))
        for compartment in range(1, hardware.compartments.count + 1):
            check(f"compartment {compartment} opens and closes",
                  partial(hardware.compartments.release, compartment, 1, sleep=sleep))
        check("buzzer", partial(_blink, hardware.buzzer, 0.3, sleep))
        check("LED", partial(_blink, hardware.led, 0.5, sleep))
        if not await_press:
            say("skip  button: not waited for (--yes on the simulated device)")
        else:
            check("LCD asks for a press", lambda: lcd.show(["Press the button", f"within {wait_s:g} s"]))
            say(f"...   press {button} within {wait_s:g} seconds")
            if pressed.wait(wait_s):
                say("ok    button")
            else:
                ok = False
                say("FAIL  button: no press seen")
        check("LCD result", lambda: lcd.show(["Self-test", "passed" if ok else "FAILED"]))
    finally:
        hardware.close()
    say("self-test passed" if ok else "self-test FAILED")
    return ok


def _blink(part: Buzzer | Led, seconds: float, sleep: Callable[[float], None]) -> None:
    part.on()
    sleep(seconds)
    part.off()


@contextlib.contextmanager
def keys_as_button(press: Callable[[], None], stream: TextIO | None = None) -> Iterator[None]:
    """Space or enter on the terminal (or a line on a pipe) presses the simulated button,
    as in the live simulator; the terminal's mode is restored at the end."""
    stream = stream if stream is not None else sys.stdin
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        yield
        return
    saved = None
    if os.isatty(fd):
        import termios
        import tty
        saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            ready, _, _ = select.select([fd], [], [], 0.1)
            if not ready:
                continue
            key = os.read(fd, 1)
            if not key:
                return  # end of input: nobody will press
            if key in (b" ", b"\r", b"\n"):
                press()

    reader = threading.Thread(target=read, daemon=True, name="keys")
    reader.start()
    try:
        yield
    finally:
        stop.set()
        reader.join(1)
        if saved is not None:
            import termios
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
