"""What may come out, per active ingredient (CONTRACT section 6): pure, no clock, no I/O.

The dose rules ask here before every release. Every limit holds per ingredient
(`Medication.substance`: the ingredient's code, else the medication id), summed across
medication ids, strengths and compartments, in the strength's unit where it is known:

1. the day: never more released for a local day than the schedule in force plans for it
   (a release counts for the local day of the dose it gave, whatever schedule, id,
   strength, time or time zone it was given under);
2. the minimum gap between two releases (`min_gap_h`, by default half the shortest
   planned interval between two of the ingredient's doses);
3. separation: never within `separate_from.hours` of the named ingredient, either way;
4. as needed: the interval since the ingredient's last release, and the rolling maximum;
5. a compartment gives only what it was loaded with (`Load`).

    >>> from importlib.resources import files
    >>> from dispenser.schedule import load_schedule_file
    >>> schedule = load_schedule_file(files("dispenser") / "demo" / "schedule.json")   # the contract's example
    >>> medication = schedule.medication("sertraline")                 # 08:00 in New York
    >>> now = datetime(2026, 11, 24, 12, 45, tzinfo=UTC)               # 07:45 there
    >>> [dose] = doses_between(schedule, now, now + timedelta(hours=1))
    >>> loads = {1: Load("sertraline", medication.substance, medication.strength, count=10)}
    >>> limits = Limits(schedule)
    >>> limits.scheduled_hold(dose, medication, {}, loads, now) is None          # it may go
    True
    >>> history = {medication.substance: [mark(medication, 1, now, dose.scheduled_at)]}   # given
    >>> limits.scheduled_hold(dose, medication, history, loads, now)
    Hold(reason=<HoldReason.ALREADY_GIVEN: 'already_given'>, allowed_at=None)
"""
from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from fractions import Fraction

from .schedule import AsNeeded, Medication, Schedule, Strength
from .scheduler import Dose, doses_between, occurrences
from .timeutil import UTC
from .vocabulary import HoldReason, PrnRefusal

# Reasons a scheduled dose is held (`dose.held`). The first two are final for that dose:
# nothing but a new schedule could change the day's plan. The others pass with time or a refill.
FINAL_HOLDS = frozenset({HoldReason.ALREADY_GIVEN, HoldReason.DAY_LIMIT})
# The default minimum gap is read off the plan around the dose: far enough to see a weekly rhythm.
_PLAN_REACH = timedelta(days=8)
# A release is at most a day from its dose (a window reaches a day each side), and a local
# day with its DST and offsets spans at most 26 hours: releases for one day lie in this reach.
_DAY_REACH = timedelta(days=3)
# Releases older than this are kept as one mark per UTC day (see `compact`).
KEEP_EXACT = timedelta(days=8)


@dataclass(frozen=True)
class Mark:
    """One release of an ingredient, as the limits count it."""

    at: datetime
    amount: Fraction
    unit: str
    medication_id: str
    scheduled_at: datetime | None = None  # None: an as-needed release


@dataclass(frozen=True)
class Load:
    """What a compartment was filled with (by a refill) and how many are left."""

    medication_id: str
    substance: str
    strength: Strength | None
    count: int

    def holds(self, medication: Medication) -> bool:
        """Is this load the medication? Same id, same ingredient, same strength."""
        return (self.medication_id, self.substance, self.strength) == \
            (medication.id, medication.substance, medication.strength)


@dataclass(frozen=True)
class Hold:
    """Why a release may not happen now, and when it could (None: not with time)."""

    reason: HoldReason
    allowed_at: datetime | None = None

    @property
    def final(self) -> bool:
        return self.reason in FINAL_HOLDS


def mark(medication: Medication, units: int, at: datetime, scheduled_at: datetime | None) -> Mark:
    return Mark(at=at, amount=medication.amount(units), unit=medication.amount_unit,
                medication_id=medication.id, scheduled_at=scheduled_at)


def total(marks: Iterable[Mark], unit: str) -> Fraction | None:
    """Sum of the marks in `unit`, or None when one was counted in another (not comparable)."""
    amount = Fraction(0)
    for item in marks:
        if item.unit != unit:
            return None
        amount += item.amount
    return amount


class Limits:
    """Section 6 for one schedule in force; caches its plan per day and ingredient."""

    def __init__(self, schedule: Schedule):
        self.schedule = schedule
        self._by_substance: dict[str, list[Medication]] = {}
        for medication in schedule.medications:
            self._by_substance.setdefault(medication.substance, []).append(medication)
        self._days: dict[date, list[Dose]] = {}
        self._plans: dict[tuple[str, date], list[tuple[Dose, Medication]]] = {}
        self._gaps: dict[tuple[str, date], timedelta] = {}
        self._amounts: dict[tuple[str, date, str], Fraction | None] = {}

    # -- the plan --------------------------------------------------------------------------

    def local_day(self, moment: datetime) -> date:
        return moment.astimezone(self.schedule.tz).date()

    def day_bounds(self, day: date) -> tuple[datetime, datetime]:
        """A local day as a UTC range [start, end) (23 or 25 hours on DST days)."""
        tz = self.schedule.tz
        start = datetime.combine(day, time()).replace(tzinfo=tz).astimezone(UTC)
        end = datetime.combine(day + timedelta(days=1), time()).replace(tzinfo=tz).astimezone(UTC)
        return start, end

    def _day_doses(self, day: date) -> list[Dose]:
        if day not in self._days:
            if len(self._days) > 16:
                self._days.clear()
            self._days[day] = doses_between(self.schedule, *self.day_bounds(day))
        return self._days[day]

    def plan(self, substance: str, day: date) -> list[tuple[Dose, Medication]]:
        """The ingredient's scheduled doses on a local day, with their medications."""
        key = (substance, day)
        if key not in self._plans:
            if len(self._plans) > 256:
                self._plans.clear()
            medications = {m.id: m for m in self._by_substance.get(substance, ())}
            self._plans[key] = [(d, medications[d.medication_id]) for d in self._day_doses(day)
                                if d.medication_id in medications]
        return self._plans[key]

    def planned_amount(self, substance: str, day: date, unit: str) -> Fraction | None:
        """What the day plans for the ingredient in `unit`; None when its medications mix units."""
        key = (substance, day, unit)
        if key not in self._amounts:
            if len(self._amounts) > 256:
                self._amounts.clear()
            amount = Fraction(0)
            for dose, medication in self.plan(substance, day):
                if medication.amount_unit != unit:
                    self._amounts[key] = None
                    break
                amount += medication.amount(dose.quantity)
            else:
                self._amounts[key] = amount
        return self._amounts[key]

    def min_gap(self, medication: Medication, near: datetime) -> timedelta:
        """`min_gap_h`, else half the shortest planned interval between two of the ingredient's doses.

        Read off the plan in the 2 days around `near`, or 8 where that plans fewer than two
        (a weekly rhythm); zero when even that plans fewer than two.
        """
        if medication.min_gap is not None:
            return medication.min_gap
        day = self.local_day(near)
        key = (medication.substance, day)
        if key not in self._gaps:
            if len(self._gaps) > 256:
                self._gaps.clear()
            steps: list[timedelta] = []
            for reach in (timedelta(days=2), _PLAN_REACH):
                moments = sorted(self._instants(medication.substance, near - reach, near + reach))
                steps = [b - a for a, b in zip(moments, moments[1:])]
                if steps:
                    break
            self._gaps[key] = min(steps) / 2 if steps else timedelta(0)
        return self._gaps[key]

    def _instants(self, substance: str, start: datetime, end: datetime) -> set[datetime]:
        """The distinct instants the ingredient's scheduled entries name in [start, end)."""
        tz = self.schedule.tz
        return {moment for medication in self._by_substance.get(substance, ())
                for dosage in medication.dosages for moment in occurrences(dosage, tz, start, end)}

    def separations(self, medication: Medication) -> list[tuple[str, timedelta]]:
        """(other ingredient, gap) pairs that keep `medication`'s ingredient apart: declared on
        any medication of that ingredient, or on another naming it (either way round)."""
        pairs = []
        for other in self.schedule.medications:
            for separation in other.separate_from:
                if other.substance == medication.substance:
                    pairs.append((separation.ingredient, separation.gap))
                if separation.ingredient == medication.substance:
                    pairs.append((other.substance, separation.gap))
        return pairs

    # -- the checks ------------------------------------------------------------------------

    def spacing_hold(self, medication: Medication, history: Mapping[str, list[Mark]],
                     now: datetime, scheduled_at: datetime | None = None) -> Hold | None:
        """Min gap and separation: limits that time lifts.

        Doses of one ingredient planned for the same instant (a 100 mg and a 50 mg tablet
        at 21:00) go out together: the day rule bounds their sum, the gap is between instants.
        """
        last = next((m for m in reversed(history.get(medication.substance, ()))
                     if scheduled_at is None or m.scheduled_at != scheduled_at), None)
        gap = self.min_gap(medication, now)
        if last is not None and gap and now < last.at + gap:
            return Hold(HoldReason.MIN_GAP, last.at + gap)
        for substance, apart in self.separations(medication):
            others = history.get(substance, ())
            if others and now < others[-1].at + apart:
                return Hold(HoldReason.SEPARATION, others[-1].at + apart)
        return None

    def scheduled_hold(self, dose: Dose, medication: Medication, history: Mapping[str, list[Mark]],
                       loads: Mapping[int, Load], now: datetime) -> Hold | None:
        """Why a scheduled dose may not be released now (section 6), or None if it may."""
        day_hold = self.day_hold(dose, medication, history)
        if day_hold is not None:
            return day_hold
        load = loads.get(medication.compartment)
        if load is None or not load.holds(medication):
            return Hold(HoldReason.UNLOADED)
        return self.spacing_hold(medication, history, now, dose.scheduled_at)

    def day_hold(self, dose: Dose, medication: Medication,
                 history: Mapping[str, list[Mark]]) -> Hold | None:
        """The day rule: already given (nothing of the day's plan is left) or past the day's plan."""
        day = self.local_day(dose.scheduled_at)
        start, end = self.day_bounds(day)
        given = [m for m in _recent(history.get(medication.substance, []), dose.scheduled_at - _DAY_REACH)
                 if m.scheduled_at is not None and start <= m.scheduled_at < end]
        if not given:
            return None
        unit = medication.amount_unit
        planned, released = self.planned_amount(medication.substance, day, unit), total(given, unit)
        if planned is None or released is None:  # amounts that cannot be compared: the safe side
            return Hold(HoldReason.DAY_LIMIT)
        if released >= planned:
            return Hold(HoldReason.ALREADY_GIVEN)
        if released + medication.amount(dose.quantity) > planned:
            return Hold(HoldReason.DAY_LIMIT)
        return None

    def as_needed_refusal(self, medication: Medication, prn: AsNeeded, history: Mapping[str, list[Mark]],
                          now: datetime) -> tuple[PrnRefusal | HoldReason, datetime | None] | None:
        """As needed (`prn`, the medication's as_needed): the interval and rolling maximum across
        ids, then gap and separation."""
        own = history.get(medication.substance, [])
        if own and now < own[-1].at + prn.min_interval:
            return PrnRefusal.INTERVAL, own[-1].at + prn.min_interval
        in_window = [m for m in _recent(own, now - prn.max_period) if m.at > now - prn.max_period]
        unit, limit = medication.amount_unit, medication.amount(prn.max_units)
        released = total(in_window, unit)
        if released is None or released + medication.amount(prn.quantity) > limit:
            return PrnRefusal.MAX_PER_PERIOD, _rolling_allowed_at(in_window, medication, prn, now)
        spacing = self.spacing_hold(medication, history, now)
        if spacing is not None:
            return spacing.reason, spacing.allowed_at
        return None


def _recent(marks: list[Mark], since: datetime) -> list[Mark]:
    """The marks released at or after `since` (they are in time order): the history is a year long."""
    return marks[bisect.bisect_left(marks, since, key=lambda m: m.at):]


def compact(marks: list[Mark], before: datetime) -> list[Mark]:
    """Marks released before `before` merged into one per UTC day and unit, at the day's last release.

    Keeps a year of history small on a device that releases every few minutes. Only the
    rolling maximum looks that far back, and a merged mark errs on its safe side: it
    counts the whole day's amount as released at its last release, so it stays in the
    rolling period longer, never shorter. The day rule and the gaps read only recent marks.
    """
    old = _recent_index(marks, before)
    if old == 0:  # nothing old enough to merge (a fresh list, as below)
        return marks[:]
    merged: dict[tuple[date, str], Mark] = {}
    for item in marks[:old]:
        key = (item.at.date(), item.unit)
        kept = merged.get(key)
        merged[key] = item if kept is None else Mark(
            at=max(kept.at, item.at), amount=kept.amount + item.amount, unit=item.unit,
            medication_id=item.medication_id, scheduled_at=None)
    return sorted(merged.values(), key=lambda m: m.at) + marks[old:]


def _recent_index(marks: list[Mark], since: datetime) -> int:
    return bisect.bisect_left(marks, since, key=lambda m: m.at)


def _rolling_allowed_at(in_window: list[Mark], medication: Medication, prn: AsNeeded, now: datetime) -> datetime:
    """The first moment enough earlier releases have left the rolling window."""
    limit, unit = medication.amount(prn.max_units), medication.amount_unit
    remaining = list(in_window)
    while remaining:
        leaving = remaining.pop(0)
        rest = total(remaining, unit)
        if rest is not None and rest + medication.amount(prn.quantity) <= limit:
            return leaving.at + prn.max_period
    return now + prn.max_period
