"""One dosage entry of a schedule: its shapes, and when its doses fall. Pure: no clock, no I/O.

`schedule.py` builds these from the document and refuses entries whose spans overlap
(`entry_span`); `scheduler.py` expands them into doses (`occurrences`). Both import this
module, and scheduler.py imports schedule.py, never the other way round.

Wall-clock entries (`d`, `wk`) are placed on local dates and localised with zoneinfo's
fold=0; `h` entries step in elapsed time from their start (see scheduler.py). Nothing
falls outside [EARLIEST, LATEST): the years a document may name, with a margin for
time zones, far from datetime's limits.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from typing import Iterator, TypeAlias
from zoneinfo import ZoneInfo

from dispenser.timeutil import UTC

# Dates a document may name. Far from datetime's limits (years 1 and 9999), so no
# arithmetic on a valid document can overflow; the expander gives no dose outside them.
FIRST_YEAR, LAST_YEAR = 2000, 2199
EARLIEST = datetime(FIRST_YEAR - 1, 12, 30, tzinfo=UTC)
LATEST = datetime(LAST_YEAR + 1, 1, 3, tzinfo=UTC)

# `when` + offset moves a time by at most a day either way: look a bit further.
_DATE_MARGIN = timedelta(days=2)
_MIDNIGHT = time()
_SECOND = timedelta(seconds=1)


@dataclass(frozen=True)
class Start:
    """Where an entry's period starts (`boundsPeriod.start`): the instant, and its local date,
    from which `count`, `wk` and periods longer than a day count."""

    at: datetime
    day: date


@dataclass(frozen=True)
class ClockDosage:
    """A `d` or `wk` entry: doses at local clock times on its dosing days.

    `times` are offsets from local midnight of a dosing day, already including `when` +
    `offset`, so they may be negative or past 24 h (the dose then falls on the
    neighbouring day). `period_days` is 1 for daily, 7*period for `wk`; days with a period
    above 1 count from `start.day`. `bounds_end` is exclusive: the document's inclusive end
    (FHIR's meaning) plus its last local day or second, so that [bounds_start, bounds_end)
    is the period. A `count`, `wk` or a period above a day needs a `start`.
    """

    quantity: int
    period_unit: str  # "d" or "wk"
    times: tuple[timedelta, ...]
    period_days: int = 1
    days_of_week: frozenset[int] | None = None
    start: Start | None = None
    bounds_end: datetime | None = None
    count: int | None = None

    def __post_init__(self) -> None:
        if self.start is None and (self.count is not None or self.period_days > 1 or self.period_unit == "wk"):
            raise ValueError("a counted, weekly or every-N-days entry counts from its start")

    @property
    def bounds_start(self) -> datetime | None:
        return self.start.at if self.start else None

    @property
    def anchor_date(self) -> date | None:
        return self.start.day if self.start else None


@dataclass(frozen=True)
class IntervalDosage:
    """An `h` entry: a dose every `interval` of elapsed time (not wall clock) from `bounds_start`.

    `bounds_end` is exclusive, as ClockDosage's; `count` ends it at its count-th dose.
    """

    quantity: int
    interval: timedelta
    bounds_start: datetime
    bounds_end: datetime | None = None
    count: int | None = None
    period_unit: str = "h"


# One scheduled dosage entry, its times resolved to plain numbers: clock times or an interval.
ScheduledDosage: TypeAlias = ClockDosage | IntervalDosage


def occurrences(dosage: ScheduledDosage, tz: ZoneInfo, start: datetime,
                end: datetime) -> list[datetime]:
    """One dosage entry's instants (aware UTC) in [start, end), sorted, each once."""
    clamped = clamp(start, end)
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


def clamp(start: datetime, end: datetime) -> tuple[datetime, datetime] | None:
    """[start, end) as UTC within [EARLIEST, LATEST), or None when nothing is left.

    Compared before converting: a datetime near year 1 or 9999 cannot be moved to UTC.
    """
    for moment, name in ((start, "start"), (end, "end")):
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError(f"{name} must be an aware datetime, got {moment!r}")
    if end <= start or end <= EARLIEST or start >= LATEST:
        return None
    return max(start, EARLIEST).astimezone(UTC), min(end, LATEST).astimezone(UTC)


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
