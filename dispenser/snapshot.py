"""The folded state as a document, so that a start folds only the events after it.

Pure: no clock, no I/O. A snapshot is what folding the log up to one event (its `seq`
and `hash`, the chain's head then) gave: `dump` turns a `State` into plain JSON data,
`restore` turns it back into an equal `State`. The engine writes one in the same
transaction as the events it reflects and, at a start, folds only the events after it.

It is believed only when everything about it holds, else the whole log is folded:
- the head it names is in the log (that `seq` has that `hash`), and the next event
  chains to it;
- it was written by this very code (`CODE`: the fold's sources and the format), so a
  change to how events fold can never meet a state folded the old way;
- its text is intact (its sha256 is stored beside it) and restores without error.

    >>> from datetime import timezone
    >>> from importlib.resources import files
    >>> from dispenser.rules import DoseRules
    >>> from dispenser.schedule import load_schedule_file
    >>> schedule = load_schedule_file(files("dispenser") / "demo" / "schedule.json")   # the contract's example
    >>> now = datetime(2026, 11, 24, 12, 45, tzinfo=timezone.utc)
    >>> rules = DoseRules(State(), compartments=8)
    >>> outcome = rules.apply_schedule(now, schedule, "local", stock={"sertraline": 10})
    >>> outcome = rules.press(now)                                      # sertraline released
    >>> state = rules.state
    >>> data = dump(state, schedule_seq=12)
    >>> data["loads"]
    [[1, 'sertraline', 'sertraline', None, 9]]
    >>> restore(json.loads(json.dumps(data)), lambda seq: schedule) == state
    True
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import fields
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

from . import __version__
from .limits import Load, Mark
from .rules import DoseRecord, MissedTogether, Released, State
from .sensor_rules import LidState
from .schedule import Schedule, Strength
from .scheduler import Dose
from .timeutil import UTC
from .vocabulary import DoseStatus

FORMAT = 1
# The modules whose code decides what a fold of the log gives: a change to any of them
# makes every older snapshot stale.
_FOLD_MODULES = ("rules", "limits", "sensor_rules", "schedule", "scheduler", "events", "timeutil", "snapshot",
                 "engine", "vocabulary", "dosage")

_STATE_FIELDS = frozenset({
    "schedule", "schedule_applied_at", "doses", "loads", "unloaded_told", "stock", "stock_low",
    "stock_empty", "releases", "prn_denied", "last_at", "settled_until", "clock_trusted", "off",
    "clock_held", "behind", "unjudged", "missed_together", "lid"})


class SnapshotError(Exception):
    """A snapshot that cannot be used; the whole log is folded instead."""


def code_version() -> str:
    """sha256 of the snapshot format, the package version and the fold's source files."""
    global _code
    if _code is None:
        digest = hashlib.sha256(f"{FORMAT}:{__version__}".encode())
        folder = Path(__file__).parent
        for name in _FOLD_MODULES:
            try:
                digest.update((folder / f"{name}.py").read_bytes())
            except OSError:  # installed without sources: the version and the format still count
                digest.update(name.encode())
        _code = digest.hexdigest()
    return _code


_code: str | None = None


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- State -> data -----------------------------------------------------------------------------


def dump(state: State, schedule_seq: int | None) -> dict[str, Any]:
    """The state as JSON data; `schedule_seq` names the schedule in force by the seq that applied it."""
    unknown = {f.name for f in fields(State)} ^ _STATE_FIELDS
    if unknown:  # a field this code does not know would be lost: refuse rather than drop it
        raise SnapshotError(f"State fields not covered: {sorted(unknown)}")
    if (state.schedule is None) != (schedule_seq is None):
        raise SnapshotError("the schedule in force and the seq that applied it go together")
    return {
        "format": FORMAT,
        "schedule_seq": schedule_seq,
        "schedule_applied_at": _time(state.schedule_applied_at),
        "doses": [_dose(record) for record in state.doses.values()],
        "loads": [[compartment, load.medication_id, load.substance, _strength(load.strength), load.count]
                  for compartment, load in state.loads.items()],
        "unloaded_told": sorted(state.unloaded_told),
        "stock": [[medication, count] for medication, count in state.stock.items()],
        "stock_low": sorted(state.stock_low),
        "stock_empty": sorted(state.stock_empty),
        "releases": [[substance, [_mark(item) for item in marks]] for substance, marks in state.releases.items()],
        "prn_denied": [[medication, [_time(at) for at in times]] for medication, times in state.prn_denied.items()],
        "last_at": _time(state.last_at),
        "settled_until": _time(state.settled_until),
        "clock_trusted": state.clock_trusted,
        "off": _pair(state.off),
        "clock_held": _pair(state.clock_held),
        "behind": _pair(state.behind),
        "unjudged": _pair(state.unjudged),
        "missed_together": _together(state.missed_together),
        "lid": _lid(state.lid),
    }


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _pair(pair: tuple[datetime | None, datetime | None] | None) -> list[str | None] | None:
    return None if pair is None else [_time(pair[0]), _time(pair[1])]


def _strength(strength: Strength | None) -> list[str] | None:
    return None if strength is None else [str(strength.value), strength.unit]


def _dose(record: DoseRecord) -> list[Any]:
    dose, released = record.dose, record.released
    return [dose.medication_id, _time(dose.scheduled_at), dose.quantity, dose.compartment,
            _time(dose.window_start), _time(dose.window_end), record.status, record.due_logged,
            sorted(record.held), record.reminders, None if released is None else _time(released.at),
            None if released is None else released.event_id, record.unconfirmed_logged]


def _mark(item: Mark) -> list[Any]:
    return [_time(item.at), str(item.amount), item.unit, item.medication_id, _time(item.scheduled_at)]


def _lid(lid: LidState) -> dict[str, Any]:
    unexplained = None if lid.unexplained is None else \
        [lid.unexplained[0], _time(lid.unexplained[1]), _time(lid.unexplained[2])]
    return {"open": lid.open, "last_release_at": _time(lid.last_release_at),
            "last_refill_at": _time(lid.last_refill_at), "unexplained": unexplained}


def _lid_of(data: dict[str, Any]) -> LidState:
    unexplained = data["unexplained"]
    return LidState(open=_flag(data["open"]), last_release_at=_at(data["last_release_at"]),
                    last_refill_at=_at(data["last_refill_at"]),
                    unexplained=None if unexplained is None else
                    (str(unexplained[0]), _required(unexplained[1]), _at(unexplained[2])))


def _together(together: MissedTogether | None) -> dict[str, Any] | None:
    if together is None:
        return None
    return {"count": together.count, "first_end": _time(together.first_end), "last_end": _time(together.last_end),
            "event_ids": list(together.event_ids), "compartments": sorted(together.compartments),
            "reasons": sorted(together.reasons), "last_id": together.last_id}


# --- data -> State -----------------------------------------------------------------------------


def restore(data: dict[str, Any], schedule_for: Callable[[int], Schedule]) -> State:
    """The `State` a `dump` was made of; `schedule_for(seq)` gives the schedule that seq applied.

    Raises SnapshotError for anything that is not a whole snapshot of this format.
    """
    try:
        if data.get("format") != FORMAT:
            raise SnapshotError(f"format {data.get('format')!r}, not {FORMAT}")
        schedule_seq = data["schedule_seq"]
        state = State(
            schedule=None if schedule_seq is None else schedule_for(schedule_seq),
            schedule_applied_at=_at(data["schedule_applied_at"]),
            doses={},
            loads={int(c): Load(m, s, _strength_of(strength), int(n)) for c, m, s, strength, n in data["loads"]},
            unloaded_told={int(c) for c in data["unloaded_told"]},
            stock={str(m): int(n) for m, n in data["stock"]},
            stock_low=set(data["stock_low"]),
            stock_empty=set(data["stock_empty"]),
            releases={str(s): [_mark_of(item) for item in marks] for s, marks in data["releases"]},
            prn_denied={str(m): [_required(at) for at in times] for m, times in data["prn_denied"]},
            last_at=_at(data["last_at"]),
            settled_until=_at(data["settled_until"]),
            clock_trusted=_flag(data["clock_trusted"]),
            off=_pair_of(data["off"]),
            clock_held=_pair_of(data["clock_held"]),
            behind=_pair_of(data["behind"]),
            unjudged=_pair_of(data["unjudged"]),
            missed_together=_together_of(data["missed_together"]),
            lid=_lid_of(data["lid"]),
        )
        for item in data["doses"]:
            record = _dose_of(item)
            state.doses[record.key] = record
    except SnapshotError:
        raise
    except (KeyError, TypeError, ValueError, ZeroDivisionError, AttributeError) as error:
        raise SnapshotError(f"not a whole snapshot ({type(error).__name__})") from None
    return state


def _at(text: str | None) -> datetime | None:
    return None if text is None else _required(text)


def _required(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError("a time without its offset")
    return moment.astimezone(UTC)


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("not a boolean")
    return value


def _pair_of(pair: list[str | None] | None) -> Any:
    return None if pair is None else (_at(pair[0]), _at(pair[1]))


def _strength_of(strength: list[str] | None) -> Strength | None:
    return None if strength is None else Strength(Fraction(strength[0]), strength[1])


def _dose_of(item: list[Any]) -> DoseRecord:
    (medication_id, scheduled_at, quantity, compartment, window_start, window_end, status, due_logged,
     held, reminders, released_at, release_event_id, unconfirmed_logged) = item
    dose = Dose(medication_id=str(medication_id), scheduled_at=_required(scheduled_at), quantity=int(quantity),
                compartment=int(compartment), window_start=_required(window_start), window_end=_required(window_end))
    released_when = _at(released_at)
    if released_when is None and release_event_id is not None:
        raise ValueError("a release's event without its time")
    return DoseRecord(
        dose, status=DoseStatus(status), due_logged=_flag(due_logged), held=frozenset(held), reminders=int(reminders),
        released=None if released_when is None else Released(released_when, release_event_id),
        unconfirmed_logged=_flag(unconfirmed_logged))


def _mark_of(item: list[Any]) -> Mark:
    at, amount, unit, medication_id, scheduled_at = item
    return Mark(at=_required(at), amount=Fraction(amount), unit=unit, medication_id=medication_id,
                scheduled_at=_at(scheduled_at))


def _together_of(data: dict[str, Any] | None) -> MissedTogether | None:
    if data is None:
        return None
    return MissedTogether(count=int(data["count"]), first_end=_required(data["first_end"]),
                          last_end=_required(data["last_end"]),
                          event_ids=list(data["event_ids"]), compartments={int(c) for c in data["compartments"]},
                          reasons=set(data["reasons"]), last_id=data["last_id"])


def encode(data: dict[str, Any]) -> str:
    """The stored text: compact JSON (its sha256 is kept beside it)."""
    return _ENCODE(data)


_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
