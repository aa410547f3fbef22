"""Expand a Schedule into doses with windows: pure, no clock, no I/O.

>>> doses_between(schedule, start, end)     # doctest: +SKIP
[Dose(scheduled_at=datetime(2026, 11, 24, 13, 0, tzinfo=UTC), medication_id='sertraline', ...)]

Wall-clock entries (`d`, `wk`) are placed on local dates and localised with zoneinfo's
fold=0: a time in the spring-forward gap moves forward by the gap, a time that happens
twice is given once, at the first. `h` entries step in elapsed time from their start,
so they stay N real hours apart across a DST change.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from typing import Iterator
from zoneinfo import ZoneInfo

from dispenser.schedule import Medication, Schedule, ScheduledDosage
from dispenser.timeutil import UTC

# `when` + offset moves a time by at most a day either way: look a bit further.
_DATE_MARGIN = timedelta(days=2)
_MIDNIGHT = time()


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

    Two dosage entries of one medication falling on the same instant (titration entries
    sharing a boundary, or two times merged by a DST gap) are one dose whose quantity is
    their sum, so a dose's key stays unique. Windows of one medication never overlap:
    the earlier closes when the later opens, also for a later dose outside the range.
    As-needed medications have no scheduled doses.
    """
    start, end = _utc(start, "start"), _utc(end, "end")
    doses: list[Dose] = []
    if end <= start:
        return doses
    for medication in schedule.medications:
        if medication.dosages:
            doses.extend(_medication_doses(medication, schedule.tz, start, end))
    doses.sort(key=lambda dose: (dose.scheduled_at, dose.medication_id))
    return doses


def occurrences(dosage: ScheduledDosage, tz: ZoneInfo, start: datetime,
                end: datetime) -> list[datetime]:
    """One dosage entry's instants (aware UTC) in [start, end), sorted; repeats kept."""
    low = start if dosage.bounds_start is None else max(start, dosage.bounds_start)
    last = _entry_end(dosage, tz)
    high = end if last is None else min(end, last)
    if low >= high:
        return []
    if dosage.interval is not None:
        return _elapsed_times(dosage, low, high)
    return _clock_times(dosage, tz, low, high)


def _utc(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime, got {moment!r}")
    return moment.astimezone(UTC)


def _medication_doses(medication: Medication, tz: ZoneInfo, start: datetime,
                      end: datetime) -> list[Dose]:
    # A dose just past `end` can still clip the window of the last one inside.
    horizon = end + medication.window_before + medication.window_after
    quantities: dict[datetime, int] = {}
    for dosage in medication.dosages:
        for moment in occurrences(dosage, tz, start, horizon):
            quantities[moment] = quantities.get(moment, 0) + dosage.quantity
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


def _elapsed_times(dosage: ScheduledDosage, low: datetime, high: datetime) -> list[datetime]:
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


def _clock_times(dosage: ScheduledDosage, tz: ZoneInfo, low: datetime,
                 high: datetime) -> list[datetime]:
    """Local dosing days' times in [low, high), sorted (a DST gap can reorder them)."""
    first = low.astimezone(tz).date() - _DATE_MARGIN
    last = high.astimezone(tz).date() + _DATE_MARGIN
    moments = []
    for day in _dosing_days(dosage, first, last):
        for moment in _localised_day(day, dosage.times, tz):
            if low <= moment < high:
                moments.append(moment)
    moments.sort()
    return moments


def _dosing_days(dosage: ScheduledDosage, first: date, last: date) -> Iterator[date]:
    """Local dates in [first, last] that carry doses: every period_days from the anchor."""
    step = dosage.period_days
    day = first
    if step > 1:
        behind = (first - dosage.anchor_date).days
        day = dosage.anchor_date + timedelta(days=max(0, -(-behind // step)) * step)
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
    """Exclusive end of an entry: boundsPeriod.end, or just after its `count`th dose."""
    if dosage.count is None:
        return dosage.bounds_end
    if dosage.interval is not None:
        end = dosage.bounds_start + dosage.count * dosage.interval
        return end if dosage.bounds_end is None else min(end, dosage.bounds_end)
    return _counted_clock_end(dosage, tz)


def _counted_clock_end(dosage: ScheduledDosage, tz: ZoneInfo) -> datetime | None:
    """Walk the entry from its start in chunks until `count` doses have been seen."""
    chunk = timedelta(days=dosage.period_days * 512)
    seen, low = 0, dosage.bounds_start
    while dosage.bounds_end is None or low < dosage.bounds_end:
        high = low + chunk
        if dosage.bounds_end is not None:
            high = min(high, dosage.bounds_end)
        moments = _clock_times(dosage, tz, low, high)
        if seen + len(moments) >= dosage.count:
            return moments[dosage.count - seen - 1] + timedelta(microseconds=1)
        seen, low = seen + len(moments), high
    return dosage.bounds_end
