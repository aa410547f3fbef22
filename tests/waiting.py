"""Waiting in tests without wall-clock bounds.

A test waits for a condition, never for a fixed time, and never asserts how fast
something happened: a Raspberry Pi, or a machine running three suites at once, is
slow by seconds. The one deadline is HANG, which a test reaches only when what it
waits for will never come; a passing test returns as soon as the condition holds.

    assert wait_until(lambda: backlog(db) == 0)
    result = finishes(lambda: sync.drain_once(10 * HANG))   # returned on its own: did not wait its timeout
"""
from __future__ import annotations

import threading
import time

HANG = 60.0  # seconds; only reached when something is broken


def wait_until(predicate, timeout: float = HANG, interval: float = 0.02) -> bool:
    """Poll `predicate` until it holds (True) or `timeout` passes (False)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return predicate()
        time.sleep(interval)
    return True


def finishes(call, timeout: float = HANG):
    """Run `call()` on a thread and return its result; fail if it is still running at `timeout`.

    For "returns without waiting for X": give the code under test a timeout of its own far
    beyond HANG, so that returning at all shows it did not sit out that timeout.
    """
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = call()
        except BaseException as error:  # noqa: BLE001 - raised again on the test's thread
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"{getattr(call, '__name__', call)} still running after {timeout:g} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]
