"""Inputs: the button and the optional lid switch and pill-drop sensor.

gpiozero calls back on its own threads, so these callbacks do nothing but hand a
plain string to `put` (the daemon's queue); the one thread that owns the state
decides what it means.
"""
from __future__ import annotations

import threading
from typing import Callable

from gpiozero import Button as _GpioButton
from gpiozero import DigitalInputDevice, Factory

PRESS, HOLD = "press", "hold"
LID_OPEN, LID_CLOSED, PILL_DROP = "lid_open", "lid_closed", "pill_drop"


class Button:
    """The one push button: a short press puts "press", a long one puts "hold".

    A press is reported on release, and only if the hold did not fire, so a hold
    never also counts as a press.

        >>> button = Button(17, queue.put, hold_s=2.0, pin_factory=factory)
    """

    def __init__(self, pin: int, put: Callable[[str], None], *, pull_up: bool = True,
                 bounce_s: float | None = None, hold_s: float = 2.0, pin_factory: Factory | None = None) -> None:
        self._put = put
        self._lock = threading.Lock()
        self._down = False
        self._held = False
        self.device = _GpioButton(pin, pull_up=pull_up, bounce_time=bounce_s, hold_time=hold_s,
                                  pin_factory=pin_factory)
        self.device.when_pressed = self._pressed
        self.device.when_held = self._on_held
        self.device.when_released = self._released

    @property
    def is_pressed(self) -> bool:
        """The level now: the daemon may re-read it when it wakes, in case an edge was lost."""
        return bool(self.device.is_pressed)

    def _pressed(self) -> None:
        with self._lock:
            self._down, self._held = True, False

    def _on_held(self) -> None:
        with self._lock:
            if not self._down or self._held:
                return  # released meanwhile, or already reported
            self._held = True
        self._put(HOLD)

    def _released(self) -> None:
        with self._lock:
            was_down, held = self._down, self._held
            self._down, self._held = False, False
        if was_down and not held:
            self._put(PRESS)

    def close(self) -> None:
        # Wake gpiozero's hold thread so close() need not wait out its 0.1 s poll.
        hold_thread = getattr(self.device, "_hold_thread", None)
        if hold_thread is not None:
            hold_thread.stopping.set()
            hold_thread.holding.set()
        self.device.close()


class Sensor:
    """A two-state contact that reports its changes: `on_active` / `on_inactive` are
    the strings put when it becomes active / inactive (None: report nothing).

    With `pull_up` (the default) the contact is active when it pulls the pin low:
    a lid reed switch closing to ground, an IR break-beam receiver when a pill breaks
    the beam.
    """

    def __init__(self, pin: int, put: Callable[[str], None], on_active: str | None,
                 on_inactive: str | None = None, *, pull_up: bool = True,
                 bounce_s: float | None = None, pin_factory: Factory | None = None) -> None:
        self.device = DigitalInputDevice(pin, pull_up=pull_up, bounce_time=bounce_s,
                                         pin_factory=pin_factory)
        if on_active is not None:
            self.device.when_activated = lambda: put(on_active)
        if on_inactive is not None:
            self.device.when_deactivated = lambda: put(on_inactive)

    @property
    def is_active(self) -> bool:
        return bool(self.device.is_active)

    def close(self) -> None:
        self.device.close()


def lid_switch(pin: int, put: Callable[[str], None], *, pin_factory: Factory | None = None,
               bounce_s: float | None = 0.05) -> Sensor:
    """A lid switch that closes (pulls low) when the lid is shut."""
    return Sensor(pin, put, LID_CLOSED, LID_OPEN, bounce_s=bounce_s, pin_factory=pin_factory)


def drop_sensor(pin: int, put: Callable[[str], None], *, pin_factory: Factory | None = None) -> Sensor:
    """A break-beam sensor that pulls low while a pill passes; no debounce, pulses are short."""
    return Sensor(pin, put, PILL_DROP, None, pin_factory=pin_factory)
