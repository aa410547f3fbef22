"""Inputs: the button and the optional lid switch and pill-drop sensor.

gpiozero calls back on its own threads, so these callbacks do nothing but hand an
input (`dispenser.inputs`: Press, Hold, LidOpened, LidClosed, PillSeen) to `put`, the
daemon's queue; the one thread that owns the state decides what it means.

Idle costs nothing: gpiozero's `Button` keeps a hold thread that wakes every 0.1 s
forever, so the button here is a plain `DigitalInputDevice` (gpiozero's edge
detection and `bounce_time` debouncing) and the hold is timed from the press itself:
a timer runs only while the button is down.
"""
from __future__ import annotations

import threading
from typing import Callable

from gpiozero import DigitalInputDevice, Factory

from ..inputs import Hold, Input, LidClosed, LidOpened, PillSeen, Press

Put = Callable[[Input], None]


class Button:
    """The one push button: a short press puts `Press()`, one held for `hold_s` puts `Hold()`.

    A press is reported on release, and only if the hold did not fire, so a hold
    never also counts as a press. The hold is a `threading.Timer` started at the
    press and cancelled at the release: no thread runs while nobody touches it.

        >>> from queue import Queue
        >>> from gpiozero.pins.mock import MockFactory
        >>> queue, factory = Queue(), MockFactory()
        >>> button = Button(17, queue.put, hold_s=2.0, pin_factory=factory)
        >>> button.device.pin.drive_low(); button.device.pin.drive_high()   # pressed, let go
        >>> queue.get(timeout=1)
        Press()
    """

    def __init__(self, pin: int, put: Put, *, pull_up: bool = True,
                 bounce_s: float | None = None, hold_s: float = 2.0, pin_factory: Factory | None = None) -> None:
        self._put = put
        self.hold_s = hold_s
        self._lock = threading.Lock()
        self._down = False
        self._held = False
        self._press = 0  # which press a timer belongs to: a late timer of an earlier one does nothing
        self._timer: threading.Timer | None = None
        self.device = DigitalInputDevice(pin, pull_up=pull_up, bounce_time=bounce_s,
                                         pin_factory=pin_factory)
        self.device.when_activated = self._pressed
        self.device.when_deactivated = self._released

    @property
    def is_pressed(self) -> bool:
        """The level now: the daemon may re-read it when it wakes, in case an edge was lost."""
        return bool(self.device.is_active)

    def _pressed(self) -> None:
        with self._lock:
            if self._down:
                return  # a second edge of one press
            self._down, self._held = True, False
            self._press += 1
            timer = threading.Timer(self.hold_s, self._on_held, args=(self._press,))
            timer.daemon = True
            self._timer = timer
        timer.start()

    def _on_held(self, press: int | None = None) -> None:
        with self._lock:
            if not self._down or self._held or (press is not None and press != self._press):
                return  # released meanwhile, already reported, or a timer of an earlier press
            self._held = True
        self._put(Hold())

    def _released(self) -> None:
        with self._lock:
            was_down, held = self._down, self._held
            self._down, self._held = False, False
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        if was_down and not held:
            self._put(Press())

    def close(self) -> None:
        with self._lock:
            timer, self._timer, self._down = self._timer, None, False
        if timer is not None:
            timer.cancel()
        self.device.close()


class Sensor:
    """A two-state contact that reports its changes: `on_active` / `on_inactive` are the
    inputs put when it becomes active / inactive (None: report nothing).

    With `pull_up` (the default) the contact is active when it pulls the pin low: a lid
    reed switch closing to ground, an IR break-beam receiver when a pill breaks the beam.
    """

    def __init__(self, pin: int, put: Put, on_active: Input | None,
                 on_inactive: Input | None = None, *, pull_up: bool = True,
                 bounce_s: float | None = None, pin_factory: Factory | None = None) -> None:
        self.device = DigitalInputDevice(pin, pull_up=pull_up, bounce_time=bounce_s,
                                         pin_factory=pin_factory)
        self._put = put
        if on_active is not None:
            self.device.when_activated = lambda: self._activated(on_active)
        if on_inactive is not None:
            self.device.when_deactivated = lambda: put(on_inactive)

    def _activated(self, item: Input) -> None:
        self._put(item)

    @property
    def is_active(self) -> bool:
        return bool(self.device.is_active)

    def close(self) -> None:
        self.device.close()


class DropSensor(Sensor):
    """The pill-drop sensor: counts every pill it sees, so a release can count its own.

    `count` only grows; `wait_for(n, timeout)` waits until it reaches `n` or the
    timeout passes and returns it. Each pill also puts `PillSeen()`, which lets the
    daemon notice one that falls when no release is going on.
    """

    def __init__(self, pin: int, put: Put, *, pin_factory: Factory | None = None) -> None:
        self._seen = threading.Condition()
        self.count = 0
        super().__init__(pin, put, PillSeen(), None, pin_factory=pin_factory)

    def _activated(self, item: Input) -> None:
        with self._seen:
            self.count += 1
            self._seen.notify_all()
        super()._activated(item)

    def wait_for(self, count: int, timeout: float) -> int:
        """The count once it reaches `count`, or after `timeout` seconds, whichever is first."""
        with self._seen:
            self._seen.wait_for(lambda: self.count >= count, timeout=max(0.0, timeout))
            return self.count


def lid_switch(pin: int, put: Put, *, pin_factory: Factory | None = None,
               bounce_s: float | None = 0.05) -> Sensor:
    """A lid switch that closes (pulls low) when the lid is shut."""
    return Sensor(pin, put, LidClosed(), LidOpened(), bounce_s=bounce_s, pin_factory=pin_factory)


def drop_sensor(pin: int, put: Put, *, pin_factory: Factory | None = None) -> DropSensor:
    """A break-beam sensor that pulls low while a pill passes; no debounce, pulses are short."""
    return DropSensor(pin, put, pin_factory=pin_factory)
