"""`dispenser selftest`: the first check after assembly, before any pill goes in.

Shows a test pattern on the LCD, opens and closes each compartment once, beeps, lights
the LED, and waits for a press of the button. It logs nothing: it is not a dose.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

PATTERN = "0123456789ABCDEFGHIJ"


def run_selftest(build: Callable[[Callable[[str], None]], object], say: Callable[[str], None],
                 wait_s: float = 30.0, sleep: Callable[[float], None] = time.sleep) -> bool:
    """Run every check, report each with `say`, and return True when all passed."""
    pressed = threading.Event()
    hardware = build(lambda item: item == "press" and pressed.set())
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
                  lambda c=compartment: hardware.compartments.release(c, 1, sleep=sleep))
        check("buzzer", lambda: (hardware.buzzer.on(), sleep(0.3), hardware.buzzer.off()))
        check("LED", lambda: (hardware.led.on(), sleep(0.5), hardware.led.off()))
        check("LCD asks for a press", lambda: lcd.show(["Press the button", f"within {wait_s:g} s"]))
        say(f"...   press the button within {wait_s:g} seconds")
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
