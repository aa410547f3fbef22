"""What reaches the daemon's queue: one small frozen dataclass per kind of input.

gpiozero, the terminal's key reader, paho and signal handlers run on threads of their
own; each only puts one of these on the daemon's queue, and the daemon's one thread
takes them in order and handles them with `match` (`daemon.py`). `Input` is the union
of them all: the daemon ends its `match` with `typing.assert_never`, so mypy refuses a
new kind of input that the daemon forgets to handle (the lid and the drop sensor were
once dropped as "ignored input" and nobody noticed).

    >>> from dispenser.daemon import Daemon
    >>> from dispenser.engine import Engine
    >>> from dispenser.store import Store
    >>> daemon = Daemon(Engine(Store.open(":memory:", "disp-0001"), 8), hardware=None)
    >>> daemon.put(Press())
    >>> daemon.put(Hold("hydroxyzine"))
    >>> daemon.inputs.get(), daemon.inputs.get()         # what its loop takes, in order
    (Press(), Hold(medication='hydroxyzine'))

Older callers put strings or tuples ("press", ("hold", id), ("schedule", payload));
`as_input` turns them into these, and refuses anything else.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias


@dataclass(frozen=True)
class Press:
    """A short press of the button (reported on release)."""


@dataclass(frozen=True)
class Hold:
    """The button held for `hold_s`; `medication` names an as-needed one (a scenario, a script)."""

    medication: str | None = None


@dataclass(frozen=True)
class Stop:
    """End the daemon's loop cleanly (SIGTERM, `q`, a closed terminal)."""


@dataclass(frozen=True)
class ScheduleMessage:
    """A `schedule/set` from the broker: a `sync.Inbound` (acknowledged once its answer is
    logged) or, from older callers and tests, the payload's bytes."""

    payload: Any


@dataclass(frozen=True)
class Refill:
    """A refill told to the running daemon: the compartment of `medication` now holds `count`."""

    medication: str
    count: int


@dataclass(frozen=True)
class ConnectionChanged:
    """The MQTT link went up or down: nothing to decide, the screen redraws."""


@dataclass(frozen=True)
class LidOpened:
    """The lid switch opened (only with `lid_pin`)."""


@dataclass(frozen=True)
class LidClosed:
    """The lid switch closed."""


@dataclass(frozen=True)
class PillSeen:
    """The drop sensor's beam was broken: a pill fell (only with `drop_pin`). Releases count
    their pills themselves (`hardware.inputs.DropSensor.count`); this wakes the daemon so a
    pill that falls outside any release is noticed."""


@dataclass(frozen=True)
class ChainCheckFailed:
    """The background check of the whole log (chaincheck.py) found the hash chain broken
    (at `seq`), or the file damaged (`PRAGMA quick_check`; `seq` None)."""

    seq: int | None
    reason: str


@dataclass(frozen=True)
class Tick:
    """Nothing happened but time: the loop wakes, lets the rules tick and redraws."""


Input: TypeAlias = (Press | Hold | Stop | ScheduleMessage | Refill | ConnectionChanged
                    | LidOpened | LidClosed | PillSeen | ChainCheckFailed | Tick)

_WORDS: dict[str, Input] = {
    "press": Press(), "hold": Hold(), "stop": Stop(), "connection": ConnectionChanged(),
    "lid_open": LidOpened(), "lid_closed": LidClosed(), "pill_drop": PillSeen(), "tick": Tick(),
}


class UnknownInput(ValueError):
    """Something was put on the daemon's queue that is no input."""


def as_input(item: object) -> Input:
    """An input from what a caller put: an `Input` as is, or the older string / tuple forms.

        >>> as_input(("hold", "hydroxyzine"))
        Hold(medication='hydroxyzine')
        >>> as_input("press")
        Press()
    """
    if isinstance(item, (Press, Hold, Stop, ScheduleMessage, Refill, ConnectionChanged,
                         LidOpened, LidClosed, PillSeen, ChainCheckFailed, Tick)):
        return item
    if isinstance(item, str) and item in _WORDS:
        return _WORDS[item]
    if isinstance(item, tuple) and item:
        kind, rest = item[0], item[1:]
        if kind == "hold" and len(rest) == 1 and (rest[0] is None or isinstance(rest[0], str)):
            return Hold(rest[0])
        if kind == "schedule" and len(rest) == 1:
            return ScheduleMessage(rest[0])
        if kind == "refill" and len(rest) == 2 and isinstance(rest[0], str) and isinstance(rest[1], int):
            return Refill(rest[0], rest[1])
    raise UnknownInput(f"not an input: {str(item)[:60]!r}")


class PillNotSeen(Exception):
    """A release's open-close cycles ended and the drop sensor saw fewer pills than it gave.

    Raised by the daemon's mover (a sensor reading, not a decision); the engine hands it to
    the rules, which log `dose.release_failed` with `reason` jam or empty.
    """

    def __init__(self, compartment: int, quantity: int, seen: int) -> None:
        super().__init__(f"compartment {compartment}: {seen} of {quantity} pill(s) seen by the drop sensor")
        self.compartment, self.quantity, self.seen = compartment, quantity, seen
