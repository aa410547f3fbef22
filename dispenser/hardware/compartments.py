"""The compartments: one hobby servo each, swung open and shut to drop pills.

This module moves servos when told to; whether a dose may go out is decided by the
dose rules before `release()` is ever called.

    >>> from gpiozero.pins.mock import MockFactory, MockPWMPin
    >>> servos = build_servos([12, 13], pin_factory=MockFactory(pin_class=MockPWMPin))
    >>> box = Compartments(servos, open_angles=[90, 90], closed_angles=[0, 0])
    >>> box.release(1, quantity=2, sleep=lambda s: None)
    >>> servos[0].angle is None       # detached after the release: no hum between doses
    True
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Protocol, Sequence

from gpiozero import AngularServo, Factory

from .errors import ServoFault

FRAME_S = 0.020  # 50 Hz, what hobby servos expect
MIN_ANGLE, MAX_ANGLE = 0.0, 180.0  # the angle range mapped onto [min_pulse, max_pulse]


def build_servos(pins: Sequence[int], *, pin_factory: Factory | None = None, min_pulse_ms: float = 1.0,
                 max_pulse_ms: float = 2.0) -> list[AngularServo]:
    """Servos on `pins` that do not move when created (`initial_angle=None`):
    the default would centre every servo, opening compartments at each restart."""
    servos: list[AngularServo] = []
    try:
        for pin in pins:
            servos.append(AngularServo(
                pin, initial_angle=None, min_angle=MIN_ANGLE, max_angle=MAX_ANGLE,
                min_pulse_width=min_pulse_ms / 1000, max_pulse_width=max_pulse_ms / 1000,
                frame_width=FRAME_S, pin_factory=pin_factory))
    except Exception:
        for servo in servos:
            servo.close()
        raise
    return servos


class Servo(Protocol):
    """A servo as the compartments drive it: gpiozero's AngularServo, or a PCA9685 channel's."""

    angle: float | None

    def detach(self) -> None: ...

    def close(self) -> None: ...


class Compartments:
    """Compartments 1..N, each a servo with its open and closed angle.

    `release(c, q)` runs q open-close cycles (open, dwell, close, dwell) and then
    detaches the servo, so it neither hums nor jitters between doses. `on_move`, if
    given, is called with (compartment, "open" | "closed" | "detached") for display.
    """

    def __init__(self, servos: Sequence[Servo], open_angles: Sequence[float], closed_angles: Sequence[float],
                 *, dwell_s: float = 0.5, sleep: Callable[[float], None] = time.sleep,
                 on_move: Callable[[int, str], None] | None = None) -> None:
        if not len(servos) == len(open_angles) == len(closed_angles):
            raise ValueError("one open and one closed angle per servo")
        self.servos = list(servos)
        self.open_angles = list(open_angles)
        self.closed_angles = list(closed_angles)
        self.dwell_s = dwell_s
        self.on_move = on_move
        self._sleep = sleep
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        return len(self.servos)

    def servo(self, compartment: int) -> Servo:
        if not 1 <= compartment <= len(self.servos):
            raise ServoFault(f"there is no compartment {compartment} (1 to {len(self.servos)})",
                             compartment)
        return self.servos[compartment - 1]

    def release(self, compartment: int, quantity: int,
                sleep: Callable[[float], None] | None = None) -> None:
        """Drop `quantity` pills from `compartment`; raises ServoFault if a servo fails.

        Blocks for about 2 x dwell x quantity. On failure the servo is detached (best
        effort) and the error is not retried: pills may already have dropped.
        """
        if not isinstance(quantity, int) or quantity < 1:
            raise ValueError(f"quantity must be a whole number of at least 1, not {quantity!r}")
        servo = self.servo(compartment)
        pause = sleep or self._sleep
        opened, closed = self.open_angles[compartment - 1], self.closed_angles[compartment - 1]
        with self._lock:
            try:
                for _ in range(quantity):
                    self._move(servo, compartment, opened, "open")
                    pause(self.dwell_s)
                    self._move(servo, compartment, closed, "closed")
                    pause(self.dwell_s)
            except Exception as error:
                raise ServoFault(f"compartment {compartment}: servo failed: "
                                 f"{type(error).__name__}: {error}", compartment, error) from error
            finally:
                self._detach(servo, compartment)

    def _move(self, servo: Servo, compartment: int, angle: float, state: str) -> None:
        servo.angle = angle
        if self.on_move is not None:
            self.on_move(compartment, state)

    def _detach(self, servo: Servo, compartment: int) -> None:
        try:
            servo.detach()
        except Exception:
            pass  # already failing, or already detached: the move's error is the one to report
        if self.on_move is not None:
            self.on_move(compartment, "detached")

    def close(self) -> None:
        for servo in self.servos:
            servo.close()
