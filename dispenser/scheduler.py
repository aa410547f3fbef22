"""Expand a Schedule into doses with windows: pure, no clock, no I/O.

>>> doses_between(schedule, start, end)     # doctest: +SKIP
[Dose(scheduled_at=datetime(2026, 11, 24, 13, 0, tzinfo=UTC), medication_id='sertraline', ...)]

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
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from typing import Iterator
from zoneinfo import ZoneInfo

from dispenser.schedule import FIRST_YEAR, LAST_YEAR, ClockDosage, IntervalDosage, Medication, Schedule, ScheduledDosage
from dispenser.timeutil import UTC

EARLIEST = datetime(FIRST_YEAR - 1, 12, 30, tzinfo=UTC)
LATEST = datetime(LAST_YEAR + 1, 1, 3, tzinfo=UTC)

# `when` + offset moves a time by at most a day either way: look a bit further.
_DATE_MARGIN = timedelta(days=2)
_MIDNIGHT = time()
_SECOND = timedelta(seconds=1)


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
    clamped = _clamp(start, end)
    doses: list[Dose] = []
    if clamped is None:
        return doses
    start, end = clamped
    for medication in schedule.medications:
        if medication.dosages:
            doses.extend(_medication_doses(medication, schedule.tz, start, end))
    doses.sort(key=lambda dose: (dose.scheduled_at, dose.medication_id))
    return doses


def occurrences(dosage: ScheduledDosage, tz: ZoneInfo, start: datetime,
                end: datetime) -> list[datetime]:
    """One dosage entry's instants (aware UTC) in [start, end), sorted, each once."""
    clamped = _clamp(start, end)
    if clamped is None:
        return []
    first, last = entry_span(dosage, tz)
    low = clamped[0] if first is None else max(clamped[0], first)
    high = clamped[1] if last is None else min(clamped[1], last)
    if low >= high:
        return []
    if isinstance(dosage, IntervalDosage):
        return _elapsed_times(dosage, low, high)
    return _clock_times(dosage, tz, low, high)


def entry_span(dosage: ScheduledDosage, tz: ZoneInfo) -> tuple[datetime | None, datetime | None]:
    """[start, exclusive end) of an entry, None where unbounded; `count` ends it at its last dose."""
    return dosage.bounds_start, _entry_end(dosage, tz)


def _clamp(start: datetime, end: datetime) -> tuple[datetime, datetime] | None:
    """[start, end) as UTC within [EARLIEST, LATEST), or None when nothing is left.

    Compared before converting: a datetime near year 1 or 9999 cannot be moved to UTC.
    """
    for moment, name in ((start, "start"), (end, "end")):
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError(f"{name} must be an aware datetime, got {moment!r}")
    if end <= start or end <= EARLIEST or start >= LATEST:
        return None
    return max(start, EARLIEST).astimezone(UTC), min(end, LATEST).astimezone(UTC)


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


def _elapsed_times(dosage: IntervalDosage, low: datetime, high: datetime) -> list[datetime]:
    """origin + k*interval in [low, high): arithmetic in UTC, so DST cannot shift it."""
    origin, step = dosage.bounds_start, dosage.interval
    index = -((origin - low) // step)  # ceil((low - origin) / step)
    moments = []
    moment = origin + index * step
    while moment < high:
        moments.append(moment)
        index += 1
        moment = origin + index * step
    return moments


def _clock_times(dosage: ClockDosage, tz: ZoneInfo, low: datetime,
                 high: datetime) -> list[datetime]:
    """Local dosing days' times in [low, high), sorted (a DST gap can reorder them).

    Each instant once: a time moved forward by a DST gap onto another time of the entry
    is that dose, not a second one (never two releases, never a sum).
    """
    first = low.astimezone(tz).date() - _DATE_MARGIN
    last = high.astimezone(tz).date() + _DATE_MARGIN
    moments = set()
    for day in _dosing_days(dosage, first, last):
        for moment in _localised_day(day, dosage.times, tz):
            if low <= moment < high:
                moments.add(moment)
    return sorted(moments)


def _dosing_days(dosage: ClockDosage, first: date, last: date) -> Iterator[date]:
    """Local dates in [first, last] that carry doses: every period_days from the start's day."""
    step = dosage.period_days
    day = first
    if step > 1 and dosage.start is not None:  # an entry of more than a day always has its start
        behind = (first - dosage.start.day).days
        day = dosage.start.day + timedelta(days=max(0, -(-behind // step)) * step)
    one_step = timedelta(days=step)
    while day <= last:
        if dosage.days_of_week is None or day.weekday() in dosage.days_of_week:
            yield day
        day += one_step


@lru_cache(maxsize=4096)
def _localised_day(day: date, times: tuple[timedelta, ...], tz: ZoneInfo) -> tuple[datetime, ...]:
    """UTC instants of naive local times on a day (fold=0); cached, as medications share times."""
    midnight = datetime.combine(day, _MIDNIGHT)
    return tuple((midnight + offset).replace(tzinfo=tz).astimezone(UTC) for offset in times)


@lru_cache(maxsize=1024)
def _entry_end(dosage: ScheduledDosage, tz: ZoneInfo) -> datetime | None:
    """Exclusive end of an entry: boundsPeriod.end (already exclusive, see schedule.py),
    or one second after its `count`th dose (times are whole seconds), whichever is first.
    A count running past LATEST ends there."""
    if dosage.count is None:
        return dosage.bounds_end
    if isinstance(dosage, IntervalDosage):
        steps = min(dosage.count - 1, (LATEST - dosage.bounds_start) // dosage.interval)
        end = dosage.bounds_start + steps * dosage.interval + _SECOND
        return end if dosage.bounds_end is None else min(end, dosage.bounds_end)
    if dosage.start is None:  # a counted entry always has its start (ClockDosage refuses one without)
        return dosage.bounds_end
    return _counted_clock_end(dosage, dosage.start.at, dosage.count, tz)


def _counted_clock_end(dosage: ClockDosage, start: datetime, count: int, tz: ZoneInfo) -> datetime:
    """Walk the entry from its start in chunks until `count` doses have been seen."""
    chunk = timedelta(days=dosage.period_days * 512)
    stop = LATEST if dosage.bounds_end is None else min(LATEST, dosage.bounds_end)
    seen, low = 0, start
    while low < stop:
        high = min(low + chunk, stop)
        moments = _clock_times(dosage, tz, low, high)
        if seen + len(moments) >= count:
            return moments[count - seen - 1] + _SECOND
        seen, low = seen + len(moments), high
    return stop
