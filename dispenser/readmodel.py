"""What the rest of the program may know of the dose rules' state: an immutable snapshot.

The rules' `State` is changed by the engine's thread at every input; the screen, the
buzzer, the live simulator's draw thread, the clinic's retained `state` and
`dispenser status` read a `ReadModel` instead. The engine builds a new one after every
input and replaces the old in one assignment, so a reader on any thread sees one whole
moment, never a half-changed one.

    >>> import json
    >>> from datetime import timezone
    >>> from importlib.resources import files
    >>> from dispenser.engine import Engine
    >>> from dispenser.store import Store
    >>> contract_example = json.loads(files("dispenser").joinpath("demo", "schedule.json").read_text())
    >>> engine = Engine(Store.open(":memory:", "disp-0001"), 8)
    >>> at_0745 = datetime(2026, 11, 24, 12, 45, tzinfo=timezone.utc)     # in New York
    >>> engine.apply_schedule(at_0745, contract_example, stock={"sertraline": 10}).feedback
    <Feedback.APPLIED: 'applied'>
    >>> model = engine.view                      # any thread, any time
    >>> [dose.name for dose in model.due]
    ['Sertraline 50 mg']
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class DoseView:
    """One scheduled dose as the snapshot shows it (times aware UTC)."""

    medication_id: str
    name: str
    scheduled_at: datetime
    quantity: int
    compartment: int
    window_start: datetime
    window_end: datetime
    reminders: int = 0


@dataclass(frozen=True)
class StockView:
    """A medication of the schedule in force and what its compartment holds."""

    medication_id: str
    name: str
    compartment: int
    count: int
    low: bool
    empty: bool
    as_needed: bool
    display: str | None = None  # the schedule's name for the LCD, when it gives one


@dataclass(frozen=True)
class ReadModel:
    """The device at one moment `at`, as of the log's event `seq`.

    `due`: doses a press would release now; `awaiting`: released, waiting for a press
    that confirms them; `next_dose`: the next dose whose window has not opened.
    `clock_trusted`: whether the clock was believed at the last input (before any input:
    what the log last said).
    """

    at: datetime | None = None
    seq: int = 0
    last_event: str | None = None      # the type of the event `seq`
    last_event_at: datetime | None = None
    schedule_version: int | None = None
    timezone: ZoneInfo | None = None   # the schedule's
    due: tuple[DoseView, ...] = ()
    awaiting: tuple[DoseView, ...] = ()
    next_dose: DoseView | None = None
    stock: tuple[StockView, ...] = ()
    clock_trusted: bool = True

    def name(self, medication_id: str) -> str:
        """The name the schedule in force gives a medication, or its id."""
        return next((item.name for item in self.stock if item.medication_id == medication_id), medication_id)

    def medication(self, medication_id: str) -> StockView | None:
        return next((item for item in self.stock if item.medication_id == medication_id), None)
