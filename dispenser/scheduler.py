"""Expand a Schedule into doses with windows: pure, no clock, no I/O.

>>> from datetime import datetime, timedelta, timezone
>>> from importlib.resources import files
>>> from dispenser.schedule import load_schedule_file
>>> schedule = load_schedule_file(files("dispenser") / "demo" / "schedule.json")   # the contract's example
>>> start = datetime(2026, 11, 24, 5, 0, tzinfo=timezone.utc); end = start + timedelta(days=1)
>>> doses_between(schedule, start, end)
[Dose(scheduled_at=datetime.datetime(2026, 11, 24, 13, 0, tzinfo=datetime.timezone.utc), medication_id='sertraline', ...),
 Dose(scheduled_at=datetime.datetime(2026, 11, 24, 14, 0, tzinfo=datetime.timezone.utc), medication_id='naltrexone', ...)]

Wall-clock entries (`d`, `wk`) are placed on local dates and localised with zoneinfo's
fold=0: a time in the spring-forward gap moves forward by the gap, a time that happens
twice is given once, at the first. `h` entries step in elapsed time from their start,
so they stay N real hours apart across a DST change.

Daylight saving never merges two doses into one release: two occurrences on one
instant are never summed. A time moved forward by the gap that lands on an instant the
medication already has a dose at (02:30 moved to 03:30 beside a 03:30 dose) is not
given: it would be the same dose twice. Entries of one medication never overlap
(schedule.py refuses it), so only one entry's times can meet.

Nothing is scheduled outside [EARLIEST, LATEST): the years a document may name, with a
margin for time zones. Every computation stays far from datetime's limits, whatever
range is asked for.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from dispenser.dosage import EARLIEST, LATEST, clamp, occurrences
from dispenser.schedule import Medication, Schedule

__all__ = ["Dose", "EARLIEST", "LATEST", "doses_between", "occurrences"]


@dataclass(frozen=True, order=True)
class Dose:
    """One scheduled dose, named by `key`; its window is [window_start, window_end)."""

    scheduled_at: datetime
    medication_id: str
    quantity: int
    compartment: int
    window_start: datetime
    window_end: datetime

    @property
    def key(self) -> tuple[str, datetime]:
        return (self.medication_id, self.scheduled_at)


def doses_between(schedule: Schedule, start: datetime, end: datetime) -> list[Dose]:
    """Doses with scheduled_at in [start, end), sorted by time then medication.

    A dose's key is unique: one medication never has two doses on one instant (see the
    module's note on daylight saving). Windows of one medication never overlap: the
    earlier closes when the later opens, also for a later dose outside the range.
    As-needed medications have no scheduled doses.
    """
    clamped = clamp(start, end)
    doses: list[Dose] = []
    if clamped is None:
        return doses
    start, end = clamped
    for medication in schedule.medications:
        if medication.dosages:
            doses.extend(_medication_doses(medication, schedule.tz, start, end))
    doses.sort(key=lambda dose: (dose.scheduled_at, dose.medication_id))
    return doses


def _medication_doses(medication: Medication, tz: ZoneInfo, start: datetime,
                      end: datetime) -> list[Dose]:
    # A dose just past `end` can still clip the window of the last one inside.
    horizon = end + medication.window_before + medication.window_after
    quantities: dict[datetime, int] = {}
    for dosage in medication.dosages:
        for moment in occurrences(dosage, tz, start, horizon):
            # Entries never overlap, so no instant comes twice; were it to, it stays one
            # dose of one entry's quantity, never a sum.
            quantities.setdefault(moment, dosage.quantity)
    moments = sorted(quantities)
    doses = []
    for index, moment in enumerate(moments):
        if moment >= end:
            break
        window_end = moment + medication.window_after
        if index + 1 < len(moments):
            window_end = min(window_end, moments[index + 1] - medication.window_before)
        doses.append(Dose(
            scheduled_at=moment,
            medication_id=medication.id,
            quantity=quantities[moment],
            compartment=medication.compartment,
            window_start=moment - medication.window_before,
            window_end=window_end,
        ))
    return doses
