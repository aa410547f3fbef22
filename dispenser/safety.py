"""Prove it cannot hurt anyone: a log checker and a randomized safety simulation.

Two parts, both importable so that the tests and `bench/safety.py` share them:

- `LogChecker` reads an event log (in `seq` order, fed incrementally or at once) and
  reports every `Violation` of the safety rules: a release outside its window (per the
  schedule in force when it was logged), a dose released twice, and CONTRACT section 6
  judged per ingredient (summed across ids, strengths and compartments) with the
  schedule in force at each release: more released for a local day than that schedule
  plans, two releases closer than the minimum gap, a release within a separation of
  another ingredient, an as-needed interval or rolling maximum broken across ids, a
  release from a compartment not loaded with that medication (or holding too few),
  two doses merged into one release; a `dose.held` without a known reason or released
  after a permanent one; a dose whose window closed without exactly one final state
  (released, missed, skipped, or held for a permanent reason; a withdrawn dose whose
  window had not opened needs none), a final state logged at the wrong moment, a
  broken hash chain, a gap in `seq`, or an `at` that goes back. It is pure: events and
  a schedule loader in, violations out. It is written from the contract, not from the
  rules' code: where they disagree, the checker says so.

- `Simulation` runs one random patient through the REAL `Engine`, `DoseRules` and
  `Store` (SQLite, in memory or on a file) on a virtual clock: random schedules (several
  medications, titration, `h` and weekly entries, `dayOfWeek`, `when` codes, as-needed
  ones with random limits; section 6's ingredients shared between products, strengths,
  doses in mg, `min_gap_h`, `separate_from`) in several time zones (Lord Howe's
  30-minute DST and Santiago's at midnight among them), starting near DST changes;
  random presses, holds, refills, servo faults, power cuts (also in the middle of a
  release) with random downtime of minutes to days, wall-clock jumps (an hour forward
  and back, as NTP after a boot with no RTC) and frequent regimen changes: a product or
  strength switch, a dose moved after it was given, a corrected time zone, compartments
  swapped or moved (each followed by a refill naming the new load at once, later, or
  not at all), date-only titration, a separation or minimum gap added, medications
  added and removed. The device's clock is trusted as on a Pi with
  systemd-timesyncd: the real `ClockTrust` watches the simulated wall and steady clocks
  and the simulated synchronisation marker (emptied at each boot, touched at each NTP
  synchronisation, a few minutes to two hours after a boot or a step), and the engine is
  given the daemon's clock (`TrustedClock`: after a boot's first synchronisation, a step
  is not believed). After every
  simulated day it feeds the new events to a `LogChecker`, and it checks what only the
  harness can see: that no event is lost across a power cut, that nothing is released
  while the wall clock is behind the log (the rules' clamped time is not a real time),
  and that by the TRUE clock no dose is released outside its window nor logged missed
  before its window closed.

    >>> result = Simulation(seed=1, days=30).run()      # doctest: +SKIP
    >>> result.violations
    []
"""
from __future__ import annotations

import copy
import itertools
import random
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from fractions import Fraction
from zoneinfo import ZoneInfo

from .clocktrust import ClockTrust
from .engine import Engine
from .events import GENESIS, event_hash
from .schedule import Medication, Schedule, ScheduleError, parse_schedule
from .scheduler import Dose, doses_between
from .store import Store
from .timeutil import UTC, format_at, parse_utc, truncate_ms

DAY = timedelta(days=1)
# A window is at most a day before and a day after its dose (schedule.MAX_WINDOW_MIN).
MAX_REACH = timedelta(days=1)

PRN_KEEP = timedelta(days=367)  # longer than any as-needed interval or rolling period a schedule may set
# The default minimum gap is read off the schedule's expansion this far around its
# apply and around each release: wide enough for weekly doses and nearby titration steps.
GAP_REACH = timedelta(days=8)

HELD_REASONS = frozenset({"already_given", "min_gap", "separation", "day_limit", "unloaded"})
# A dose held for these will never be given: it needs no other final state.
PERMANENT_HOLDS = frozenset({"already_given", "day_limit"})


# ---------------------------------------------------------------------------------------
# The checker
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    """One broken safety rule: what, where in the log, and a line for people."""

    kind: str
    message: str
    seq: int | None = None
    context: str = ""

    def __str__(self) -> str:
        where = f" (seq {self.seq})" if self.seq is not None else ""
        context = f" [{self.context}]" if self.context else ""
        return f"{self.kind}{where}: {self.message}{context}"


@dataclass(frozen=True)
class _Given:
    """One release of an ingredient, as the schedule in force at the release described it."""

    at: datetime
    medication_id: str
    units: int
    strength: tuple[Fraction, str] | None
    scheduled_at: datetime | None  # None: an as-needed release
    seq: int | None


def _identity(medication: Medication) -> tuple:
    """What a compartment is loaded with: the medication id, its strength and its ingredient."""
    strength = (medication.strength.value, medication.strength.unit) if medication.strength else None
    return medication.id, strength, medication.substance


def _amounts(items: list[tuple[int, tuple[Fraction, str] | None]]) -> tuple[list[Fraction], str]:
    """Amounts in the strengths' one unit where every strength is known in it, else units (tablets)."""
    units = {s[1] if s else None for _, s in items}
    if len(units) == 1 and None not in units:
        return [n * s[0] for n, s in items], units.pop()
    return [Fraction(n) for n, _ in items], "tablet(s)"


def _span(delta: timedelta) -> str:
    """A duration for people: 2 d 3 h, 22 min 30 s, 0 s."""
    seconds = int(delta.total_seconds())
    parts = [(seconds // 86400, "d"), (seconds % 86400 // 3600, "h"), (seconds % 3600 // 60, "min"),
             (seconds % 60, "s")]
    return " ".join(f"{n} {unit}" for n, unit in parts if n) or "0 s"


def _show_amount(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{float(value):g}"


@dataclass
class _Expected:
    """A dose that must end in exactly one final state once `deadline` has passed."""

    dose: Dose
    deadline: datetime
    version: int


class LogChecker:
    """Checks an event log against the safety rules, event by event.

    `schedule_loader(version)` returns the `Schedule` a `schedule.applied` event put in
    force (from the store's `schedules` table, or a dict in tests). Call `feed` with
    events in `seq` order (all at once or a few at a time), then `settle(until)` with a
    moment up to which the device has been running: every dose whose window closed by
    then must have its final state. `violations` collects everything found.

    Section 6 is judged per ingredient with the schedule in force at each release: the
    releases of the last 367 days are kept per ingredient (`_given`), compartments by
    what a refill loaded into them (`_loads`), so that a switch of id, strength, time,
    time zone or compartment never resets what counts.
    """

    def __init__(self, schedule_loader: Callable[[int], Schedule | None], context: str = ""):
        self.loader = schedule_loader
        self.context = context
        self.violations: list[Violation] = []
        self.events = 0
        self._seq = 0
        self._hash = GENESIS
        self._at = ""
        self._last_at: datetime | None = None
        self.schedule: Schedule | None = None
        self._applied_at: datetime | None = None
        self._expanded_to: datetime | None = None  # the current schedule's doses with scheduled_at before this are known
        self._expected: dict[tuple[str, datetime], _Expected] = {}
        self._finals: dict[tuple[str, datetime], str] = {}
        self._released: dict[tuple[str, datetime], tuple[datetime, datetime]] = {}
        self._taken: set[tuple[str, datetime]] = set()
        self._unconfirmed: set[tuple[str, datetime]] = set()
        self._given: dict[str, list[_Given]] = defaultdict(list)  # ingredient -> releases, in `at` order
        self._known: dict[str, Medication] = {}  # every medication id seen in a schedule, as last seen
        self._loads: dict[int, tuple[tuple | None, int]] = {}  # compartment -> (what it holds, count)
        self._unloaded_by: dict[int, int] = {}  # compartment -> the version that reassigned it
        self._held: dict[tuple[str, datetime], set[str]] = defaultdict(set)
        self._plans: dict[tuple, list[tuple[int, tuple | None]]] = {}
        self._gaps: dict[tuple, timedelta | None] = {}
        self._lookup: dict[tuple[int, str, datetime], Dose | None] = {}
        self._releases: dict[str, tuple[str, str | None]] = {}  # release event_id -> (type, scheduled_at)
        self._troubled: set[str] = set()

    # -- reporting -------------------------------------------------------------------------

    def _violate(self, kind: str, message: str, seq: int | None = None) -> None:
        self.violations.append(Violation(kind, message, seq, self.context))

    # -- feeding ---------------------------------------------------------------------------

    def feed(self, events: Iterable[dict]) -> list[Violation]:
        """Check more events (in `seq` order); returns the violations they added."""
        before = len(self.violations)
        for event in events:
            self._feed_one(event)
        return self.violations[before:]

    def _feed_one(self, event: dict) -> None:
        self.events += 1
        seq = event.get("seq")
        if seq != self._seq + 1:
            self._violate("seq_gap", f"expected seq {self._seq + 1}, got {seq} (an event lost or repeated)", seq)
        if event.get("prev_hash") != self._hash:
            self._violate("chain", "prev_hash does not match the previous event's hash", seq)
        if event_hash(event.get("prev_hash", ""), event) != event.get("hash"):
            self._violate("chain", "hash does not match the event's content", seq)
        at_text = event.get("at", "")
        if at_text < self._at:
            self._violate("time_backwards", f"at {at_text} is before the previous event's {self._at}", seq)
        self._seq, self._hash, self._at = seq if isinstance(seq, int) else self._seq + 1, event.get("hash"), at_text
        at = parse_utc(at_text)
        self._last_at = at
        kind, data = event["type"], event["data"]
        if kind in ("dose.released", "prn.released"):
            self._releases[event.get("event_id")] = (kind, data.get("scheduled_at"))
        handler = _HANDLERS.get(kind)
        if handler is not None:
            handler(self, seq, at, data)

    # -- schedules ---------------------------------------------------------------------------

    def _on_applied(self, seq: int, at: datetime, data: dict) -> None:
        schedule = self.loader(data["version"])
        if schedule is None:
            self._violate("schedule_missing", f"schedule version {data['version']} is not stored", seq)
            return
        if self.schedule is not None:
            # The outgoing schedule's doses whose window had opened must still end; those not
            # yet open are withdrawn (they need no final state, unless the new one has them too).
            self._expand(at + 2 * MAX_REACH)
            for key in [k for k, item in self._expected.items()
                        if item.version == self.schedule.version and item.dose.window_start > at]:
                del self._expected[key]
        self.schedule, self._applied_at = schedule, at
        self._expanded_to = at - 2 * MAX_REACH
        for medication in schedule.medications:
            self._known[medication.id] = medication
            # A compartment given to another medication, strength or ingredient holds nothing
            # until a refill names the new one (section 6); one left unassigned keeps its load.
            load = self._loads.get(medication.compartment)
            if load is not None and load[0] is not None and load[0] != _identity(medication):
                self._loads[medication.compartment] = (None, 0)
                self._unloaded_by[medication.compartment] = schedule.version

    def _expand(self, until: datetime) -> None:
        """Register the current schedule's existing doses with scheduled_at before `until`."""
        schedule = self.schedule
        if schedule is None or self._expanded_to is None or until <= self._expanded_to:
            return
        for dose in doses_between(schedule, self._expanded_to, until):
            if dose.window_end <= self._applied_at:
                continue  # never existed: nothing is missed retroactively
            known = self._expected.get(dose.key)
            deadline = dose.window_end if known is None else max(known.deadline, dose.window_end)
            self._expected[dose.key] = _Expected(dose, deadline, schedule.version)
        self._expanded_to = until

    def _dose(self, key: tuple[str, datetime]) -> Dose | None:
        """The dose `key` of the schedule in force, with its window as that schedule has it."""
        schedule = self.schedule
        if schedule is None:
            return None
        cache_key = (schedule.version, *key)
        if cache_key not in self._lookup:
            medication_id, scheduled_at = key
            found = [d for d in doses_between(schedule, scheduled_at, scheduled_at + timedelta(seconds=1))
                     if d.medication_id == medication_id]
            self._lookup[cache_key] = found[0] if found else None
        return self._lookup[cache_key]

    # -- scheduled doses -----------------------------------------------------------------------

    @staticmethod
    def _key(data: dict) -> tuple[str, datetime]:
        return data["medication_id"], parse_utc(data["scheduled_at"])

    def _final(self, seq: int, kind: str, key: tuple[str, datetime]) -> None:
        if self._finals.get(key) == "held":
            # Held for good: missed or skipped may still follow; a release is reported apart.
            self._finals[key] = kind if kind != "released" else "held"
        elif key in self._finals:
            self._violate("two_final_states", f"{_name(key)} ended {self._finals[key]} and then {kind}", seq)
        else:
            self._finals[key] = kind

    def _on_held(self, seq: int, at: datetime, data: dict) -> None:
        """A dose the rules hold back: a known reason, heard once; held for good is a final state."""
        key = self._key(data)
        reason = data.get("reason")
        if reason not in HELD_REASONS:
            self._violate("held_without_reason", f"{_name(key)} held with reason {reason!r} "
                                                 f"(one of {', '.join(sorted(HELD_REASONS))})", seq)
        if reason in self._held[key]:
            self._violate("held_twice", f"{_name(key)} held for {reason} twice (the clinic hears once)", seq)
        self._held[key].add(reason)
        if reason in PERMANENT_HOLDS and key not in self._finals:
            self._finals[key] = "held"

    def _on_released(self, seq: int, at: datetime, data: dict) -> None:
        key = self._key(data)
        dose = self._dose(key)
        if dose is None:
            self._violate("released_unknown_dose",
                          f"{_name(key)} released at {format_at(at)}, but the schedule in force "
                          f"(version {self.schedule.version if self.schedule else None}) has no such dose", seq)
        else:
            if not dose.window_start <= at < dose.window_end:
                self._violate("released_outside_window",
                              f"{_name(key)} released at {format_at(at)}, outside its window "
                              f"[{format_at(dose.window_start)}, {format_at(dose.window_end)})", seq)
            if (parse_utc(data["window_start"]), parse_utc(data["window_end"])) != \
                    (dose.window_start, dose.window_end):
                self._violate("window_mismatch", f"{_name(key)} logged a window the schedule in force does not give",
                              seq)
        if key in self._released:
            self._violate("released_twice", f"{_name(key)} released a second time at {format_at(at)}", seq)
        held = self._held.get(key, set()) & PERMANENT_HOLDS
        if held:
            self._violate("released_after_held", f"{_name(key)} released at {format_at(at)} after it was held "
                                                 f"({', '.join(sorted(held))}): it must never be given", seq)
        start, end = parse_utc(data["window_start"]), parse_utc(data["window_end"])
        self._released[key] = (start, end)
        quantity = data["quantity"]
        medication = (self.schedule.medication(key[0]) if self.schedule else None) or self._known.get(key[0])
        if medication is not None:
            if medication.dosages and quantity > max(d.quantity for d in medication.dosages):
                self._violate("doses_merged", f"{_name(key)} released {quantity} at once, more than any one of its "
                                              f"dosages gives (two doses merged into one release)", seq)
            self._judge(seq, at, medication, quantity, key[1])
            self._take_from(seq, data.get("compartment", medication.compartment), medication, quantity, at)
        self._final(seq, "released", key)

    def _on_missed(self, seq: int, at: datetime, data: dict) -> None:
        key = self._key(data)
        if at < parse_utc(data["window_end"]):
            self._violate("missed_early", f"{_name(key)} logged missed at {format_at(at)}, "
                                          f"before its window closed at {data['window_end']}", seq)
        self._final(seq, "missed", key)

    def _on_skipped(self, seq: int, at: datetime, data: dict) -> None:
        key = self._key(data)
        if at >= parse_utc(data["window_end"]):
            self._violate("skipped_late", f"{_name(key)} skipped after its window closed", seq)
        self._final(seq, "skipped", key)

    def _on_taken(self, seq: int, at: datetime, data: dict) -> None:
        key = self._key(data)
        if key not in self._released:
            self._violate("taken_unreleased", f"{_name(key)} confirmed taken but never released", seq)
        if key in self._taken:
            self._violate("taken_twice", f"{_name(key)} confirmed taken twice", seq)
        self._taken.add(key)

    def _on_unconfirmed(self, seq: int, at: datetime, data: dict) -> None:
        key = self._key(data)
        if key not in self._released:
            self._violate("unconfirmed_unreleased", f"{_name(key)} unconfirmed but never released", seq)
        if key in self._unconfirmed:
            self._violate("unconfirmed_twice", f"{_name(key)} reported unconfirmed twice", seq)
        self._unconfirmed.add(key)

    def _on_uncertain(self, seq: int, at: datetime, data: dict) -> None:
        """A release a stop interrupted: reported once, naming its scheduled dose if it had one."""
        event_id = data.get("release_event_id")
        release = self._releases.get(event_id)
        if release is None:
            self._violate("uncertain_unknown", f"release_uncertain names no release ({event_id})", seq)
            return
        if event_id in self._troubled:
            self._violate("uncertain_twice", f"release {event_id} reported uncertain or failed twice", seq)
        self._troubled.add(event_id)
        if release[0] == "dose.released" and data.get("scheduled_at") != release[1]:
            self._violate("uncertain_without_dose", f"release_uncertain of the dose at {release[1]} "
                                                    f"names {data.get('scheduled_at')}", seq)

    def _on_failed(self, seq: int, at: datetime, data: dict) -> None:
        if "scheduled_at" not in data:
            return  # an as-needed release that failed: it still counts against the limits
        key = self._key(data)
        if key not in self._released:
            self._violate("failed_unreleased", f"{_name(key)} release failed but it was never released", seq)

    # -- as needed ---------------------------------------------------------------------------

    def _on_prn(self, seq: int, at: datetime, data: dict) -> None:
        medication_id, quantity = data["medication_id"], data["quantity"]
        medication = self.schedule.medication(medication_id) if self.schedule else None
        if medication is None or medication.as_needed is None:
            self._violate("prn_unknown", f"as-needed {medication_id} released but the schedule in force "
                                         f"has no such as-needed medication", seq)
        else:
            prn = medication.as_needed
            if (prn.bounds_start is not None and at < prn.bounds_start) or \
                    (prn.bounds_end is not None and at >= prn.bounds_end):
                self._violate("prn_out_of_bounds", f"as-needed {medication_id} released outside its boundsPeriod", seq)
            if prn.quantity != quantity:
                self._violate("prn_quantity", f"as-needed {medication_id} released {quantity}, not {prn.quantity}",
                              seq)
        medication = medication or self._known.get(medication_id)
        if medication is not None:
            self._judge(seq, at, medication, quantity, None)
            self._take_from(seq, data.get("compartment", medication.compartment), medication, quantity, at)

    # -- section 6: per ingredient ------------------------------------------------------------

    def _judge(self, seq: int, at: datetime, medication: Medication, units: int,
               scheduled_at: datetime | None) -> None:
        """Section 6 for one release, with the schedule in force at it; then remember the release."""
        ingredient = medication.substance
        strength = (medication.strength.value, medication.strength.unit) if medication.strength else None
        given = _Given(at, medication.id, units, strength, scheduled_at, seq)
        schedule = self.schedule
        if schedule is not None:
            if scheduled_at is not None:
                self._check_day(seq, schedule, ingredient, given)
            self._check_gap(seq, schedule, ingredient, given)
            self._check_separation(seq, schedule, ingredient, given)
            if scheduled_at is None and medication.as_needed is not None:
                self._check_as_needed(seq, medication, given)
        history = self._given[ingredient]
        history.append(given)
        if history[0].at < at - PRN_KEEP:
            history[:] = [g for g in history if g.at >= at - PRN_KEEP]

    def _check_day(self, seq: int, schedule: Schedule, ingredient: str, given: _Given) -> None:
        """Rule 1: a local day's amount within what the schedule in force plans for that day."""
        tz = schedule.tz
        day = given.scheduled_at.astimezone(tz).date()
        planned = self._plan(schedule, ingredient, day)
        released = [(g.units, g.strength) for g in self._given[ingredient]
                    if g.scheduled_at is not None and g.scheduled_at.astimezone(tz).date() == day]
        released.append((given.units, given.strength))
        amounts, unit = _amounts(planned + released)
        plan, total = sum(amounts[:len(planned)], Fraction(0)), sum(amounts[len(planned):], Fraction(0))
        if total > plan:
            self._violate("day_limit", f"{ingredient}: {_show_amount(total)} {unit} released for {day} "
                                       f"({schedule.timezone}) with {given.medication_id}@"
                                       f"{format_at(given.scheduled_at)}; version {schedule.version} plans "
                                       f"{_show_amount(plan)}", seq)

    def _plan(self, schedule: Schedule, ingredient: str, day: date) -> list[tuple[int, tuple | None]]:
        """The doses of `ingredient` the schedule plans for a local day: (units, strength) each."""
        key = (schedule.version, ingredient, day)
        if key not in self._plans:
            medications = {m.id: m for m in schedule.medications if m.substance == ingredient and m.dosages}
            start = datetime.combine(day, time()).replace(tzinfo=schedule.tz).astimezone(UTC)
            planned = []
            if medications:
                for dose in doses_between(schedule, start - timedelta(hours=3), start + DAY + timedelta(hours=3)):
                    medication = medications.get(dose.medication_id)
                    if medication is not None and dose.scheduled_at.astimezone(schedule.tz).date() == day:
                        strength = (medication.strength.value, medication.strength.unit) \
                            if medication.strength else None
                        planned.append((dose.quantity, strength))
            if len(self._plans) > 4096:
                self._plans.clear()
            self._plans[key] = planned
        return self._plans[key]

    def _min_gap(self, schedule: Schedule, ingredient: str, at: datetime) -> timedelta | None:
        """`min_gap_h` (the largest its medications set), else half the shortest planned interval
        between two of its doses, read off the expansion around the apply and around `at`."""
        medications = [m for m in schedule.medications if m.substance == ingredient]
        explicit = [m.min_gap for m in medications if m.min_gap]
        if explicit:
            return max(explicit)
        if not any(m.dosages for m in medications):
            return None
        gaps = [self._shortest(schedule, ingredient, self._applied_at or at),
                self._shortest(schedule, ingredient, at)]
        gaps = [g for g in gaps if g is not None]
        return min(gaps) / 2 if gaps else None

    def _shortest(self, schedule: Schedule, ingredient: str, around: datetime) -> timedelta | None:
        key = (schedule.version, ingredient, around.date())
        if key not in self._gaps:
            ids = {m.id for m in schedule.medications if m.substance == ingredient}
            moments = sorted({d.scheduled_at for d in doses_between(schedule, around - GAP_REACH, around + GAP_REACH)
                              if d.medication_id in ids})
            intervals = [b - a for a, b in zip(moments, moments[1:])]
            if len(self._gaps) > 4096:
                self._gaps.clear()
            self._gaps[key] = min(intervals) if intervals else None
        return self._gaps[key]

    def _check_gap(self, seq: int, schedule: Schedule, ingredient: str, given: _Given) -> None:
        """Rule 2: two releases of one ingredient never closer than its minimum gap. Doses planned
        for the same instant are one intake, not two."""
        gap = self._min_gap(schedule, ingredient, given.at)
        if not gap:
            return
        for earlier in reversed(self._given[ingredient]):
            if given.at - earlier.at >= gap:
                break
            if given.scheduled_at is not None and earlier.scheduled_at == given.scheduled_at:
                continue
            self._violate("min_gap", f"{ingredient}: {given.medication_id} released at {format_at(given.at)}, "
                                     f"{_span(given.at - earlier.at)} after {earlier.medication_id} (seq {earlier.seq}); "
                                     f"minimum gap {_span(gap)} under version {schedule.version}", seq)
            return

    def _check_separation(self, seq: int, schedule: Schedule, ingredient: str, given: _Given) -> None:
        """Rule 3: never within `separate_from.hours` of the named ingredient, either way round."""
        apart: dict[str, timedelta] = {}
        for medication in schedule.medications:
            for separation in medication.separate_from:
                if medication.substance == ingredient:
                    other = separation.ingredient
                elif separation.ingredient == ingredient:
                    other = medication.substance
                else:
                    continue
                if other != ingredient:
                    apart[other] = max(apart.get(other, timedelta(0)), separation.gap)
        for other, gap in sorted(apart.items()):
            history = self._given.get(other)
            if history and given.at - history[-1].at < gap:
                last = history[-1]
                self._violate("separation", f"{ingredient}: {given.medication_id} released at "
                                            f"{format_at(given.at)}, {_span(given.at - last.at)} after {other} "
                                            f"({last.medication_id}, seq {last.seq}); they must be {_span(gap)} apart", seq)

    def _check_as_needed(self, seq: int, medication: Medication, given: _Given) -> None:
        """Rule 4: the interval since any release of the ingredient, and the rolling maximum across ids."""
        prn, ingredient = medication.as_needed, medication.substance
        history = self._given[ingredient]
        if history and given.at - history[-1].at < prn.min_interval:
            last = history[-1]
            self._violate("prn_interval", f"as-needed {medication.id} released at {format_at(given.at)}, only "
                                          f"{_span(given.at - last.at)} after {ingredient} ({last.medication_id}, seq "
                                          f"{last.seq}); minimum {_span(prn.min_interval)}", seq)
        recent = [(g.units, g.strength) for g in history
                  if g.scheduled_at is None and g.at > given.at - prn.max_period]
        limit_strength = (medication.strength.value, medication.strength.unit) if medication.strength else None
        amounts, unit = _amounts(recent + [(given.units, given.strength), (prn.max_units, limit_strength)])
        total, limit = sum(amounts[:-1], Fraction(0)), amounts[-1]
        if total > limit:
            self._violate("prn_max", f"as-needed {ingredient}: {_show_amount(total)} {unit} in the rolling "
                                     f"{_span(prn.max_period)} up to {format_at(given.at)} with {medication.id} "
                                     f"(maximum {_show_amount(limit)})", seq)

    # -- stock: a compartment gives only what it was loaded with --------------------------------

    def _on_refilled(self, seq: int, at: datetime, data: dict) -> None:
        medication = self.schedule.medication(data["medication_id"]) if self.schedule else None
        if medication is None:
            return  # nothing is loaded by naming a medication the schedule does not have
        self._loads[medication.compartment] = (_identity(medication), data["count"])
        self._unloaded_by.pop(medication.compartment, None)

    def _take_from(self, seq: int, compartment: int, medication: Medication, quantity: int, at: datetime) -> None:
        holds, count = self._loads.get(compartment, (None, 0))
        if holds != _identity(medication):
            if compartment in self._unloaded_by:
                why = (f"version {self._unloaded_by[compartment]} gave it to {medication.id} and no refill "
                       f"named it since")
            elif holds is None:
                why = "it was never refilled with it"
            else:
                why = f"it holds {holds[0]}"
            self._violate("released_unloaded", f"{medication.id}: {quantity} released from compartment "
                                               f"{compartment} at {format_at(at)}, but {why}", seq)
            return
        if count < quantity:
            self._violate("released_from_empty", f"{medication.id}: {quantity} released at {format_at(at)} "
                                                 f"with {count} in compartment {compartment}", seq)
        self._loads[compartment] = (holds, max(0, count - quantity))

    # -- completeness ------------------------------------------------------------------------

    def settle(self, until: datetime) -> list[Violation]:
        """Every existing dose whose window closed at or before `until` must have ended once."""
        before = len(self.violations)
        self._expand(until + 2 * MAX_REACH)
        for key in [k for k, item in self._expected.items() if item.deadline <= until]:
            item = self._expected.pop(key)
            if key in self._finals:
                continue
            self._violate("no_final_state",
                          f"{_name(key)} (window [{format_at(item.dose.window_start)}, "
                          f"{format_at(item.dose.window_end)}) of version {item.version}) closed by "
                          f"{format_at(until)} without a final state")
        for key in [k for k in self._finals if k[1] < until - 4 * DAY]:
            del self._finals[key]  # long settled: keep the checker small on long runs
        for key in [k for k in self._released if k[1] < until - 4 * DAY]:
            del self._released[key]
        for key in [k for k in self._held if k[1] < until - 4 * DAY]:
            del self._held[key]
        return self.violations[before:]


_HANDLERS: dict[str, Callable[[LogChecker, int, datetime, dict], None]] = {
    "schedule.applied": LogChecker._on_applied,
    "dose.released": LogChecker._on_released,
    "dose.missed": LogChecker._on_missed,
    "dose.skipped": LogChecker._on_skipped,
    "dose.taken": LogChecker._on_taken,
    "dose.unconfirmed": LogChecker._on_unconfirmed,
    "dose.release_failed": LogChecker._on_failed,
    "dose.release_uncertain": LogChecker._on_uncertain,
    "prn.released": LogChecker._on_prn,
    "dose.held": LogChecker._on_held,
    "stock.refilled": LogChecker._on_refilled,
}


def _name(key: tuple[str, datetime]) -> str:
    return f"{key[0]}@{format_at(key[1])}"


def check_events(events: Iterable[dict], schedule_loader: Callable[[int], Schedule | None],
                 until: datetime | None = None) -> list[Violation]:
    """Check a whole log at once; with `until`, also that every window closed by then has ended."""
    checker = LogChecker(schedule_loader)
    checker.feed(events)
    if until is not None:
        checker.settle(until)
    return checker.violations


def store_loader(store: Store, default_timezone: str = "UTC") -> Callable[[int], Schedule | None]:
    """A schedule loader reading the documents the store saved with their `schedule.applied`."""
    cache: dict[int, Schedule | None] = {}

    def load(version: int) -> Schedule | None:
        if version not in cache:
            document = store.schedule_document(version)
            cache[version] = None if document is None else parse_schedule(document, default_timezone)
        return cache[version]
    return load


def check_store(store: Store, until: datetime | None = None, default_timezone: str = "UTC") -> list[Violation]:
    """Check everything a store holds: its chain (`store.verify`) and its log."""
    violations = []
    ok, seq, reason = store.verify()
    if not ok:
        violations.append(Violation("chain", f"store.verify: {reason}", seq))
    return violations + check_events(store.events(), store_loader(store, default_timezone), until)


# ---------------------------------------------------------------------------------------
# Random schedules
# ---------------------------------------------------------------------------------------

ZONES = ("America/New_York", "Europe/London", "Australia/Lord_Howe", "America/Santiago", "Asia/Kolkata", "UTC")
ROUTINE_CODES = ("WAKE", "MORN", "CD", "CV", "HS")


def dst_changes(tz: ZoneInfo, year: int) -> list[date]:
    """Local dates on which the zone's UTC offset changes (none for Asia/Kolkata)."""
    changes, previous = [], None
    day = datetime(year, 1, 1, 12, tzinfo=UTC)
    while day.year == year:
        offset = day.astimezone(tz).utcoffset()
        if previous is not None and offset != previous:
            changes.append((day - DAY).astimezone(tz).date())
        previous, day = offset, day + DAY
    return changes


def _clock(minutes: int) -> str:
    minutes %= 24 * 60
    return f"{minutes // 60:02d}:{minutes % 60:02d}:00"


def _local_text(moment: datetime, tz: ZoneInfo) -> str:
    return moment.astimezone(tz).replace(tzinfo=None, microsecond=0).isoformat()


# Active ingredients (RxNorm-like codes) and the strengths their tablets come in (mg).
# Scheduled and as-needed ones are kept apart: an ingredient is either planned or asked for.
SCHEDULED_INGREDIENTS = {
    "51272": ("quetiapine", (25, 50, 100, 200, 300)),
    "36437": ("sertraline", (25, 50, 100)),
    "7243": ("naltrexone", (25, 50)),
    "42351": ("lithium carbonate", (150, 300)),
    "1897": ("calcium carbonate", (500, 1250)),
    "89013": ("aripiprazole", (2, 2.5, 5, 10)),
    "1819": ("buprenorphine", (1, 2)),
}
PRN_INGREDIENTS = {
    "5553": ("hydroxyzine", (10, 25, 50)),
    "6470": ("lorazepam", (0.5, 1, 2)),
    "5640": ("ibuprofen", (200, 400)),
}
MAX_TABLETS = 10  # a plausible dose: the v2 parser refuses more
# Two times a spring-forward gap would merge (minutes after local midnight): the first
# does not exist that night and moves forward onto the second.
GAP_PAIRS = {"America/New_York": (120, 180), "Europe/London": (60, 120),
             "Australia/Lord_Howe": (120, 150), "America/Santiago": (0, 60)}


class ScheduleMaker:
    """Random but valid schedule documents, and random changes to them (section 6's kinds too).

    Documents are valid for today's parser and for v2's: `timeOfDay` as HH:MM:SS, no two
    dosages of one medication with overlapping periods (an end is inclusive in v2: a
    date-only step ends the day before the next starts), `doseQuantity` in tablets or in
    the strength's unit as a whole multiple of it, at most 10 tablets a dose.
    """

    def __init__(self, rng: random.Random, timezone: str):
        self.rng = rng
        self.timezone = timezone
        self.tz = ZoneInfo(timezone)
        self._ids = itertools.count(1)

    # -- pieces -----------------------------------------------------------------------------

    def window(self) -> dict:
        rng = self.rng
        before = rng.choice([0, 0, 10, 15, 30, 30, 60, 120, 240, 1440])
        after = rng.choice([15, 30, 60, 120, 120, 180, 240, 480, 1440])
        return {"before_min": before, "after_min": after}

    def times(self, count: int) -> list[str]:
        """`count` distinct times of day, some in the small hours where DST changes happen, some
        a pair a spring-forward gap would merge (02:00 and 03:00 in New York; 02:00 and 02:30 at
        Lord Howe; 01:00 and 02:00 in London; 00:00 and 01:00 in Santiago)."""
        picks: set[int] = set()
        if count >= 2 and self.timezone in GAP_PAIRS and self.rng.random() < 0.25:
            picks.update(GAP_PAIRS[self.timezone])
        while len(picks) < count:
            if self.rng.random() < 0.2:
                picks.add(self.rng.choice([60, 90, 120, 135, 150, 180, 0, 23 * 60 + 30]))
            else:
                picks.add(self.rng.randrange(0, 24 * 4) * 15)
        return [_clock(m) for m in sorted(picks)]

    def entry(self, now: datetime, quantity: int | None = None) -> dict:
        """One scheduled dosage entry: daily, dayOfWeek, every n days, weekly, `h`, or `when`."""
        rng = self.rng
        quantity = quantity or rng.choice([1, 1, 1, 2])
        start_text = _local_text(now - timedelta(hours=rng.randrange(0, 72)), self.tz)
        roll = rng.random()
        if roll < 0.4:
            times = self.times(rng.choice([1, 1, 2, 3, 4]))
            repeat = {"frequency": len(times), "period": 1, "periodUnit": "d", "timeOfDay": times}
        elif roll < 0.5:
            times = self.times(rng.choice([1, 2]))
            days = sorted(rng.sample(range(7), rng.randrange(1, 7)))
            repeat = {"frequency": len(times), "period": 1, "periodUnit": "d", "timeOfDay": times,
                      "dayOfWeek": [("mon", "tue", "wed", "thu", "fri", "sat", "sun")[d] for d in days]}
        elif roll < 0.6:
            times = self.times(1)
            repeat = {"frequency": 1, "period": rng.choice([2, 3]), "periodUnit": "d", "timeOfDay": times,
                      "boundsPeriod": {"start": start_text[:10]}}
        elif roll < 0.65:
            times = self.times(rng.choice([1, 2]))
            repeat = {"frequency": len(times), "period": 1, "periodUnit": "wk", "timeOfDay": times,
                      "boundsPeriod": {"start": start_text[:10]}}
        elif roll < 0.85:
            repeat = {"frequency": rng.choice([1, 1, 2]), "period": rng.choice([4, 6, 8, 12, 24, 36]),
                      "periodUnit": "h", "boundsPeriod": {"start": start_text}}
            if rng.random() < 0.2:
                repeat["count"] = rng.randrange(3, 40)
        else:
            codes = rng.sample(ROUTINE_CODES, rng.choice([1, 2, 3]))
            repeat = {"frequency": len(codes), "period": 1, "periodUnit": "d", "when": codes}
            if rng.random() < 0.4:
                repeat["offset"] = rng.choice([15, 30, 60])
        return {"timing": {"repeat": repeat}, "doseAndRate": [{"doseQuantity": {"value": quantity}}]}

    def titration(self, now: datetime) -> list[dict]:
        """Two or three entries split by boundsPeriod: a dose that steps up (or down) on a date.

        A step on a date ends the day before the next starts (FHIR's end is inclusive); a
        step at an instant ends a second before it, so no two steps ever share a moment."""
        rng = self.rng
        times = self.times(rng.choice([1, 1, 2]))
        cut = (now + timedelta(hours=rng.randrange(-48, 96))).astimezone(self.tz)
        cuts = [cut.date().isoformat() if rng.random() < 0.6 else _local_text(cut, self.tz)]
        if rng.random() < 0.3:
            cuts.append((cut + timedelta(days=rng.randrange(2, 6))).date().isoformat())
        entries, previous = [], None
        for index in range(len(cuts) + 1):
            bounds = {}
            if previous is not None:
                bounds["start"] = previous
            if index < len(cuts):
                bounds["end"] = _end_before(cuts[index])
                previous = cuts[index]
            repeat = {"frequency": len(times), "period": 1, "periodUnit": "d", "timeOfDay": times}
            if bounds:
                repeat["boundsPeriod"] = bounds
            entries.append({"timing": {"repeat": repeat},
                            "doseAndRate": [{"doseQuantity": {"value": index + 1 if rng.random() < 0.7 else 1}}]})
        return entries

    def ingredient(self, pool: dict, document_codes: list[str]) -> str | None:
        """An ingredient code: often one the document already has (two products of one drug)."""
        rng = self.rng
        shared = [c for c in document_codes if c in pool]
        if shared and rng.random() < 0.35:
            return rng.choice(shared)
        return rng.choice(sorted(pool)) if rng.random() < 0.9 else None

    def dress(self, medication: dict, code: str | None, pool: dict, strength: float | None = None) -> dict:
        """Give a medication its ingredient and (mostly) a strength; some doses then in mg."""
        rng = self.rng
        if code is None:
            return medication
        name, strengths = pool[code]
        medication["ingredient"] = {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": code,
                                    "display": name}
        if strength is None and rng.random() < 0.8:
            strength = rng.choice(strengths)
        if strength is not None:
            medication["strength"] = {"value": strength, "unit": "mg"}
            medication["name"] = f"{name.title()} {strength:g} mg"
            if rng.random() < 0.3:
                for entry in medication["dosage"]:
                    _in_mg(entry, strength)
        return medication

    def scheduled(self, med_id: str, compartment: int, now: datetime, codes: list[str] = ()) -> dict:
        dosage = self.titration(now) if self.rng.random() < 0.25 else [self.entry(now)]
        medication = {"id": med_id, "name": med_id.title(), "compartment": compartment,
                      "window": self.window(), "dosage": dosage}
        return self.dress(medication, self.ingredient(SCHEDULED_INGREDIENTS, list(codes)), SCHEDULED_INGREDIENTS)

    def as_needed(self, med_id: str, compartment: int, codes: list[str] = ()) -> dict:
        medication = {"id": med_id, "name": med_id.title(), "compartment": compartment,
                      "dosage": self.prn_dosage()}
        return self.dress(medication, self.ingredient(PRN_INGREDIENTS, list(codes)), PRN_INGREDIENTS)

    def prn_dosage(self) -> list[dict]:
        rng = self.rng
        quantity = rng.choice([1, 1, 2])
        every_h = rng.choice([0.5, 1, 2, 4, 6, 8, 24, 240])
        per_value, per_unit = rng.choice([(12, "h"), (1, "d"), (1, "d"), (2, "d"), (1, "wk"), (2, "wk")])
        return [{"asNeededBoolean": True,
                 "timing": {"repeat": {"frequency": 1, "period": every_h, "periodUnit": "h"}},
                 "maxDosePerPeriod": {"numerator": {"value": quantity * rng.randrange(1, 5)},
                                      "denominator": {"value": per_value, "unit": per_unit}},
                 "doseAndRate": [{"doseQuantity": {"value": quantity}}]}]

    def routine(self) -> dict:
        minutes = sorted(self.rng.sample(range(5 * 4, 23 * 4), len(ROUTINE_CODES)))
        return {code: _clock(m * 15)[:5] for code, m in zip(ROUTINE_CODES, minutes)}

    def document(self, now: datetime, version: int = 1) -> dict:
        """A valid random document (a draw that happens to be invalid, e.g. two `when` codes
        landing on one time, is drawn again)."""
        while True:
            document = self._document(now, version)
            if _valid(document):
                return document

    def _document(self, now: datetime, version: int) -> dict:
        rng = self.rng
        compartments = list(range(1, 9))
        rng.shuffle(compartments)
        medications: list[dict] = []
        for _ in range(rng.choice([1, 2, 2, 3, 3, 4])):
            medications.append(self.scheduled(f"m{next(self._ids)}", compartments.pop(), now, _codes(medications)))
        for _ in range(rng.choice([0, 1, 1, 2])):
            medications.append(self.as_needed(f"p{next(self._ids)}", compartments.pop(), _codes(medications)))
        document = {"schema": "dispenser.schedule/1", "version": version,
                    "issued_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "timezone": self.timezone,
                    "routine": self.routine(), "medications": medications}
        if rng.random() < 0.15:
            self.min_gap(document)
        if rng.random() < 0.15:
            self.separation(document)
        return document

    def min_gap(self, document: dict) -> str | None:
        """`min_gap_h` on every medication of one ingredient (one value, so no reading can differ)."""
        codes = _codes([m for m in document["medications"] if not _is_prn(m)])
        if not codes:
            return None
        code, hours = self.rng.choice(codes), self.rng.choice([2, 4, 6, 8, 12])
        for medication in document["medications"]:
            if _code(medication) == code:
                medication["min_gap_h"] = hours
        return code

    def separation(self, document: dict) -> str | None:
        """One ingredient never within a few hours of another (calcium and quetiapine, say)."""
        meds = [m for m in document["medications"] if _code(m)]
        pairs = [(a, b) for a in meds for b in meds if _code(a) != _code(b)]
        if not pairs:
            return None
        first, second = self.rng.choice(pairs)
        if any(s["ingredient"] == _code(second) for s in first.get("separate_from", [])):
            return None
        first.setdefault("separate_from", []).append({"ingredient": _code(second),
                                                      "hours": self.rng.choice([1, 2, 4, 6])})
        return first["id"]

    # -- changes ------------------------------------------------------------------------------

    def change(self, document: dict, now: datetime, released_today: list[str]) -> tuple[dict, str, list[str]]:
        """A new version, and the ids a caregiver may now refill: a switch of product or strength,
        a moved time, a corrected time zone, compartments swapped or moved, titration, separation,
        minimum gap, a medication removed or added, windows, limits."""
        self.timezone = document["timezone"]
        self.tz = ZoneInfo(self.timezone)
        for _ in range(20):
            new, what, touched = self._change(document, now, released_today)
            if _valid(new):
                self.timezone, self.tz = new["timezone"], ZoneInfo(new["timezone"])
                return new, what, touched
        new = copy.deepcopy(document)
        new["version"] = document["version"] + 1
        return new, "reissued", []

    def _change(self, document: dict, now: datetime, released_today: list[str]) -> tuple[dict, str, list[str]]:
        rng = self.rng
        new = copy.deepcopy(document)
        new["version"] = document["version"] + 1
        new["issued_at"] = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        meds = new["medications"]
        scheduled = [m for m in meds if not _is_prn(m)]
        prn = [m for m in meds if _is_prn(m)]
        used = {m["compartment"] for m in meds}
        free = [c for c in range(1, 9) if c not in used]
        given = [m for m in scheduled if m["id"] in released_today]
        kind = rng.choices(
            ["product", "strength", "move_time", "timezone", "swap", "move_compartment", "titration",
             "separation", "min_gap", "remove", "add", "window", "limits", "timing"],
            [8, 10, 14, 6, 6, 6, 12, 4, 3, 6, 8, 6, 5, 6])[0]
        if kind == "product" and meds:
            # The same ingredient from another maker: a new id, in its compartment or a free one.
            old = rng.choice(given or meds)
            medication = copy.deepcopy(old)
            medication["id"] = f"{'p' if _is_prn(old) else 'm'}{next(self._ids)}"
            if free and rng.random() < 0.3:
                medication["compartment"] = rng.choice(free)
            meds[meds.index(old)] = medication
            return new, f"product switch: {old['id']} -> {medication['id']}", [medication["id"]]
        if kind == "strength" and [m for m in meds if "strength" in m]:
            # quetiapine 100 mg -> 200 mg: a new id and strength, the same slot and compartment.
            old = rng.choice([m for m in given if "strength" in m] or [m for m in meds if "strength" in m])
            medication = copy.deepcopy(old)
            pool = PRN_INGREDIENTS if _is_prn(old) else SCHEDULED_INGREDIENTS
            strengths = [s for s in pool[_code(old)][1] if s != old["strength"]["value"]]
            if not strengths:
                return new, "reissued", []
            strength = rng.choice(strengths)
            medication["id"] = f"{'p' if _is_prn(old) else 'm'}{next(self._ids)}"
            medication["strength"] = {"value": strength, "unit": "mg"}
            medication["name"] = f"{pool[_code(old)][0].title()} {strength:g} mg"
            for entry in medication["dosage"]:
                _in_tablets(entry, old["strength"]["value"])
            meds[meds.index(old)] = medication
            return new, f"strength switch: {old['id']} -> {medication['id']} ({strength:g} mg)", [medication["id"]]
        if kind == "move_time" and scheduled:
            # Move a dose time, preferably of a medication given today, preferably later (08:00 -> 13:00).
            medication = rng.choice(given or scheduled)
            for entry in medication["dosage"]:
                repeat = entry["timing"]["repeat"]
                if "timeOfDay" in repeat:
                    index = rng.randrange(len(repeat["timeOfDay"]))
                    hh, mm, _ = map(int, repeat["timeOfDay"][index].split(":"))
                    shift = rng.choice([-360, -120, -60, -30, -15, 15, 30, 60, 90, 120, 300, 300, 360])
                    candidate = _clock(hh * 60 + mm + shift)
                    if candidate not in repeat["timeOfDay"]:
                        repeat["timeOfDay"][index] = candidate
                        repeat["timeOfDay"].sort()
                elif "boundsPeriod" in repeat and repeat.get("periodUnit") == "h":
                    start = datetime.fromisoformat(repeat["boundsPeriod"]["start"])
                    repeat["boundsPeriod"]["start"] = (start + timedelta(minutes=rng.choice([-90, -30, 30, 90]))
                                                       ).isoformat()
                elif "when" in repeat:
                    repeat["offset"] = rng.choice([0, 15, 45, 90])
            return new, f"moved time: {medication['id']}", []
        if kind == "timezone":
            # The clinic corrects the zone (UTC -> America/New_York): local times stay, instants move.
            new["timezone"] = rng.choice([z for z in ZONES if z != document["timezone"]])
            return new, f"time zone: {document['timezone']} -> {new['timezone']}", []
        if kind == "swap" and len(meds) > 1:
            first, second = rng.sample(meds, 2)
            first["compartment"], second["compartment"] = second["compartment"], first["compartment"]
            return new, f"compartments swapped: {first['id']} and {second['id']}", [first["id"], second["id"]]
        if kind == "move_compartment" and meds and free:
            medication = rng.choice(meds)
            medication["compartment"] = rng.choice(free)
            return new, f"compartment moved: {medication['id']} to {medication['compartment']}", [medication["id"]]
        if kind == "titration" and scheduled:
            medication = rng.choice(scheduled)
            medication["dosage"] = self.titration(now)
            if "strength" in medication and rng.random() < 0.3:
                for entry in medication["dosage"]:
                    _in_mg(entry, medication["strength"]["value"])
            return new, f"titration: {medication['id']}", []
        if kind == "separation":
            named = self.separation(new)
            if named:
                return new, f"separation: {named}", []
        if kind == "min_gap":
            code = self.min_gap(new)
            if code:
                return new, f"minimum gap: {code}", []
        if kind == "remove" and len(meds) > 1:
            medication = rng.choice(meds)
            meds.remove(medication)
            _drop_separations(new, _code(medication))
            return new, f"removed: {medication['id']}", []
        if kind == "add" and free:
            if rng.random() < 0.7:
                meds.append(self.scheduled(f"m{next(self._ids)}", rng.choice(free), now, _codes(meds)))
            else:
                meds.append(self.as_needed(f"p{next(self._ids)}", rng.choice(free), _codes(meds)))
            _harmonise_gaps(new)
            return new, f"added: {meds[-1]['id']}", [meds[-1]["id"]]
        if kind == "window" and scheduled:
            medication = rng.choice(scheduled)
            medication["window"] = self.window()
            return new, f"window: {medication['id']}", []
        if kind == "limits" and prn:
            medication = rng.choice(prn)
            medication["dosage"] = self.prn_dosage()
            return new, f"as-needed limits: {medication['id']}", []
        if scheduled:
            medication = rng.choice(scheduled)
            medication["dosage"] = [self.entry(now)]
            return new, f"timing: {medication['id']}", []
        return new, "reissued", []


def _is_prn(medication: dict) -> bool:
    return bool(medication["dosage"][0].get("asNeededBoolean"))


def _code(medication: dict) -> str | None:
    return (medication.get("ingredient") or {}).get("code")


def _codes(medications: list[dict]) -> list[str]:
    return sorted({c for c in map(_code, medications) if c})


def _end_before(cut: str) -> str:
    """The inclusive end of a step that the next starts at `cut` (a date, or a local date-time)."""
    if len(cut) == 10:
        return (date.fromisoformat(cut) - DAY).isoformat()
    return (datetime.fromisoformat(cut) - timedelta(seconds=1)).isoformat()


def _in_mg(entry: dict, strength: float) -> None:
    """Write a dose in mg where a whole number of mg gives it (10 mg at 5 mg a tablet = 2)."""
    quantity = entry["doseAndRate"][0]["doseQuantity"]
    if "unit" in quantity:
        return
    mg = Fraction(str(strength)) * quantity["value"]
    # Today's parser reads the value as tablets: keep it a plausible count under both readings.
    if mg.denominator == 1 and mg <= MAX_TABLETS and quantity["value"] <= MAX_TABLETS:
        entry["doseAndRate"][0]["doseQuantity"] = {"value": int(mg), "unit": "mg"}


def _in_tablets(entry: dict, strength: float) -> None:
    """Back to tablets (before a strength changes, so that an mg value never becomes a fraction)."""
    quantity = entry["doseAndRate"][0]["doseQuantity"]
    if quantity.get("unit") == "mg":
        tablets = Fraction(quantity["value"]) / Fraction(str(strength))
        entry["doseAndRate"][0]["doseQuantity"] = {"value": max(1, int(tablets))}


def _drop_separations(document: dict, code: str | None) -> None:
    """Keep separations naming ingredients still in the document (harmless otherwise, but tidy)."""
    codes = set(_codes(document["medications"]))
    for medication in document["medications"]:
        if "separate_from" in medication:
            medication["separate_from"] = [s for s in medication["separate_from"] if s["ingredient"] in codes]
            if not medication["separate_from"]:
                del medication["separate_from"]


def _harmonise_gaps(document: dict) -> None:
    """One `min_gap_h` per ingredient: a medication added to an ingredient takes its gap."""
    gaps = {}
    for medication in document["medications"]:
        if "min_gap_h" in medication and _code(medication):
            gaps[_code(medication)] = medication["min_gap_h"]
    for medication in document["medications"]:
        if _code(medication) in gaps and not _is_prn(medication):
            medication["min_gap_h"] = gaps[_code(medication)]


def _v2_ready(document: dict) -> bool:
    """What the v2 parser adds to today's checks, so that a document is valid for both: times
    as HH:MM:SS, no two dosages of one medication with overlapping periods (ends inclusive),
    mg only as a whole multiple of the strength, at most 10 tablets a dose."""
    tz = ZoneInfo(document["timezone"])
    for medication in document["medications"]:
        strength = medication.get("strength")
        periods = []
        for entry in medication["dosage"]:
            repeat = entry["timing"]["repeat"]
            if any(len(t) != 8 for t in repeat.get("timeOfDay", [])):
                return False
            quantity = entry["doseAndRate"][0]["doseQuantity"]
            tablets = Fraction(quantity["value"])
            if "unit" in quantity:
                if strength is None or quantity["unit"] != strength["unit"]:
                    return False
                tablets = tablets / Fraction(str(strength["value"]))
            if tablets.denominator != 1 or not 1 <= tablets <= MAX_TABLETS or quantity["value"] > MAX_TABLETS:
                return False
            bounds = repeat.get("boundsPeriod", {})
            periods.append((_instant(bounds.get("start"), tz, False), _instant(bounds.get("end"), tz, True)))
        periods.sort(key=lambda p: p[0])
        for (_, end), (start, _) in zip(periods, periods[1:]):
            if start < end:
                return False
    return True


def _instant(text: str | None, tz: ZoneInfo, is_end: bool) -> datetime:
    """A boundsPeriod value as an instant; an end is inclusive, so its exclusive instant is after it."""
    if text is None:
        return datetime.max.replace(tzinfo=UTC) if is_end else datetime.min.replace(tzinfo=UTC)
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    if is_end:
        moment += DAY if len(text) == 10 else timedelta(seconds=1)
    return moment.astimezone(UTC)


def _valid(document: dict) -> bool:
    try:
        parse_schedule(document)
    except ScheduleError:
        return False
    return _v2_ready(document)


# ---------------------------------------------------------------------------------------
# The simulation
# ---------------------------------------------------------------------------------------


class PowerCut(BaseException):
    """The power goes in the middle of a release: not an `Exception`, so nothing catches it."""


@dataclass
class SimResult:
    seed: int
    days: int
    events: int
    violations: list[Violation]
    counts: dict[str, int] = field(default_factory=dict)


class Simulation:
    """One random patient for `days` days on the real engine and store, on a virtual clock."""

    def __init__(self, seed: int, days: int, db: str = ":memory:", *, jumps: bool = True,
                 changes: bool = True, long_outages: bool = True):
        self.seed = seed
        self.days = days
        self.db = db
        self.rng = random.Random(seed)
        self.jumps, self.changes, self.long_outages = jumps, changes, long_outages
        rng = self.rng
        self.timezone = rng.choice(ZONES)
        self.tz = ZoneInfo(self.timezone)
        changes_list = dst_changes(self.tz, 2026) + dst_changes(self.tz, 2027)
        if changes_list and rng.random() < 0.85:
            day = rng.choice(changes_list) - timedelta(days=rng.randrange(0, 4))
        else:
            day = date(2026, 1, 1) + timedelta(days=rng.randrange(0, 700))
        local_start = datetime(day.year, day.month, day.day, rng.randrange(0, 24), rng.choice([0, 15, 30, 45]))
        self.true = local_start.replace(tzinfo=self.tz).astimezone(UTC)
        self.offset = timedelta(0)  # the wall clock is `true + offset`
        self.maker = ScheduleMaker(rng, self.timezone)
        self.document = self.maker.document(self.true)
        self.counts: dict[str, int] = defaultdict(int)
        self.counts[f"zone: {self.timezone}"] = 1
        self.violations: list[Violation] = []
        ids = itertools.count(1)
        self.new_id = lambda: f"00000000-0000-4000-8000-{next(ids):012d}"
        self.store = Store.open(db, "disp-sim", id_factory=self.new_id)
        self.checker = LogChecker(store_loader(self.store, self.timezone), context=f"seed {seed}")
        self.engine: Engine | None = None
        self.back_at: datetime | None = None  # while the power is off: when it comes back (true time)
        self.fed_seq = 0
        self.release_walls: dict[str, tuple[datetime, datetime]] = {}
        self.true_at: dict[str, datetime] = {}  # event_id of a dose.missed: the true time it was logged
        self.synced_at: float | None = None  # timesyncd's marker: its mtime, None until a sync since boot
        self.trust: ClockTrust | None = None
        self.day_index = 0
        self._pending_fix: list[datetime] = []  # when NTP synchronises after the last boot
        self._parsed: tuple[int, Schedule] | None = None
        self._later: list[tuple[datetime, str, int]] = []  # refills after a change: (true time, id, count)

    # -- clocks -------------------------------------------------------------------------------

    def wall(self) -> datetime:
        return self.true + self.offset

    def given(self) -> datetime:
        """The time the daemon's clock gives the engine (clocktrust.TrustedClock): the wall
        clock, less a step after the boot's first synchronisation that is not believed."""
        away = self.trust.stepped_away if self.trust is not None and self.trust.check() else None
        return self.wall() if away is None else self.wall() - timedelta(seconds=round(away, 3))

    def _context(self) -> str:
        return (f"seed {self.seed}, day {self.day_index}, {self.timezone}, "
                f"true {format_at(self.true)}, wall {format_at(self.wall())}")

    def _violate(self, kind: str, message: str, seq: int | None = None) -> None:
        self.violations.append(Violation(kind, message, seq, self._context()))

    # -- the device ---------------------------------------------------------------------------

    def _mover(self, compartment: int, quantity: int) -> None:
        roll = self.rng.random()
        if roll < 0.01:
            raise RuntimeError("servo stalled")
        if roll < 0.025:
            raise PowerCut()

    def _listen(self, events: list[dict]) -> None:
        wall = truncate_ms(self.given())
        for event in events:
            if event["type"] in ("dose.released", "prn.released"):
                self.release_walls[event["event_id"]] = (wall, self.true)
            elif event["type"] == "dose.missed":
                self.true_at[event["event_id"]] = self.true

    def _boot(self) -> None:
        if self.store is None:
            self.store = Store.open(self.db, "disp-sim", id_factory=self.new_id)
            self.checker.loader = store_loader(self.store, self.timezone)
        # /run is emptied at a boot: the marker is gone until NTP synchronises again.
        self.synced_at = None
        self.trust = ClockTrust("synchronized" if self.jumps else "always",
                                synchronized_at=lambda: self.synced_at,
                                wall=lambda: self.wall().timestamp(), steady=lambda: self.true.timestamp())
        self.engine = Engine(self.store, 8, self.timezone, mover=self._mover, new_id=self.new_id,
                             clock_trusted=self.trust.check, read_model=False)
        self.engine.listeners.append(self._listen)
        self._call(lambda wall: self.engine.start(wall))
        self.counts["boots"] += 1

    def _cut(self, downtime: timedelta) -> None:
        """The power goes: memory is lost; the log on disk must hold every event it held."""
        self.counts["power_cuts"] += 1
        before = self.store.event_count()
        last = self.store.last_event()
        self.engine = None
        if self.db != ":memory:":
            self.store.close()
            self.store = Store.open(self.db, "disp-sim", id_factory=self.new_id)
            self.checker.loader = store_loader(self.store, self.timezone)
        after = self.store.event_count()
        again = self.store.last_event() if last is None else next(self.store.events(last["seq"] - 1), None)
        if after < before or (last is not None and (again is None or again["hash"] != last["hash"])):
            self._violate("event_lost", f"{before} events before the power cut, {after} after")
        if self.db != ":memory:":  # a file reopened: its whole chain must still verify
            ok, seq, reason = self.store.verify()
            if not ok:
                self._violate("chain", f"store.verify after a power cut: {reason}", seq)
        if self.jumps:
            # A boot without an RTC: the clock may start an hour wrong; NTP synchronises it
            # (and steps it right) a little later, usually within minutes.
            if self.rng.random() < 0.25:
                self.offset += timedelta(hours=self.rng.choice([1, -1]))
                self.counts["wrong_clock_boots"] += 1
            delay = timedelta(minutes=self.rng.choice([1, 1, 2, 5, 15, 60, 119]))
            self._pending_fix = [self.true + downtime + delay]
        self.back_at = self.true + downtime
        if downtime == timedelta(0):
            self.back_at = None
            self._boot()

    def _call(self, action: Callable[[datetime], object]) -> object:
        """Run one engine call at the daemon clock's time; a power cut inside it ends the device."""
        try:
            return action(self.given())
        except PowerCut:
            self.counts["cuts_mid_release"] += 1
            self._cut(self._downtime())
            return None

    def _downtime(self) -> timedelta:
        rng = self.rng
        roll = rng.random()
        if roll < 0.4:
            return timedelta(0)
        if roll < 0.8:
            return timedelta(minutes=rng.randrange(1, 180))
        if roll < 0.95 or not self.long_outages:
            return timedelta(minutes=rng.randrange(180, 30 * 60))
        return timedelta(minutes=rng.randrange(30 * 60, 6 * 24 * 60))

    # -- time passing -------------------------------------------------------------------------

    def _advance(self, target: datetime) -> None:
        """Move the true clock to `target`, ticking at every moment the engine asks for."""
        while True:
            if self.engine is None:
                if self.back_at is not None and self.back_at <= target:
                    self.true = max(self.true, self.back_at)
                    self.back_at = None
                    self._boot()
                    continue
                self.true = max(self.true, target)
                return
            given = self.given()
            wakeup = self.engine.next_wakeup(given)
            if wakeup is None or wakeup - (given - self.true) > target:
                break
            self.true = max(self.true, wakeup - (given - self.true))
            self._call(lambda wall: self.engine.tick(wall))
            self.counts["ticks"] += 1
        self.true = max(self.true, target)
        self._call(lambda wall: self.engine.tick(wall))

    # -- a day ------------------------------------------------------------------------------

    def _plan(self, day_start: datetime) -> list[tuple[datetime, int, str, tuple]]:
        rng = self.rng
        day_end = day_start + DAY
        plan: list[tuple[datetime, int, str, tuple]] = []
        order = itertools.count()

        def at(moment: datetime, kind: str, *args) -> None:
            if day_start <= moment < day_end:
                plan.append((moment, next(order), kind, args))

        if self._parsed is None or self._parsed[0] != self.document["version"]:
            self._parsed = (self.document["version"], parse_schedule(self.document))
        schedule = self._parsed[1]
        for dose in doses_between(schedule, day_start - MAX_REACH, day_end + MAX_REACH):
            if rng.random() < 0.8:
                span = (dose.window_end - dose.window_start).total_seconds()
                moment = dose.window_start + timedelta(seconds=rng.uniform(-600, span + 600))
                at(moment, "press")
                if rng.random() < 0.6:
                    at(moment + timedelta(seconds=rng.uniform(5, 1800)), "press")  # confirm
                if rng.random() < 0.05:
                    at(moment + timedelta(seconds=rng.uniform(0, 2)), "press")  # a double press
            if rng.random() < 0.05:  # exactly at the edges
                at(dose.window_end - timedelta(milliseconds=rng.choice([0, 1])), "press")
                at(dose.window_start - timedelta(milliseconds=rng.choice([0, 1])), "press")
        for _ in range(rng.randrange(0, 3)):
            at(day_start + timedelta(seconds=rng.uniform(0, 86400)), "press")
        as_needed = [m["id"] for m in self.document["medications"] if m["dosage"][0].get("asNeededBoolean")]
        if as_needed:
            for _ in range(rng.choice([0, 1, 2, 3, 5, 8])):
                named = rng.choice(as_needed) if rng.random() < 0.7 else None
                at(day_start + timedelta(seconds=rng.uniform(0, 86400)), "hold", named)
        for medication in self.document["medications"]:
            if rng.random() < 0.15:
                at(day_start + timedelta(seconds=rng.uniform(0, 86400)), "refill", medication["id"],
                   rng.choice([0, 1, 2, 5, 10, 30, 60]))
        if rng.random() < 0.12:
            at(day_start + timedelta(seconds=rng.uniform(0, 86400)), "cut")
        if self.jumps and rng.random() < 0.08:
            moment = day_start + timedelta(seconds=rng.uniform(0, 86400))
            step = timedelta(hours=rng.choice([1, 1, 1, -1]))
            at(moment, "jump", step)  # the wall clock steps (set by hand, a wrong time source) ...
            at(moment + timedelta(minutes=rng.choice([1, 5, 30, 59, 61, 90, 180])), "ntp")  # ... NTP fixes it
        if self.changes and rng.random() < 0.25:  # regimens change often in recovery care
            at(day_start + timedelta(seconds=rng.uniform(0, 86400)), "change")
        plan.sort()
        return plan

    def _do(self, kind: str, args: tuple) -> None:
        self.counts[kind] += 1
        if kind == "jump":
            self.offset += args[0]
            return
        if kind == "ntp":
            self._synchronise()
            return
        if self.engine is None:
            self.counts["ignored_while_off"] += 1
            return
        engine = self.engine
        outcome = None
        if kind == "press":
            outcome = self._call(lambda wall: engine.press(wall))
        elif kind == "hold":
            outcome = self._call(lambda wall: engine.hold(wall, args[0]))
        elif kind == "refill":
            self._call(lambda wall: engine.refill(wall, args[0], args[1]))
        elif kind == "cut":
            self._cut(self._downtime())
        elif kind == "change":
            released_today = [e["data"]["medication_id"] for e in self.store.events(self.fed_seq)
                              if e["type"] == "dose.released"]
            document, what, touched = self.maker.change(self.document, self.given(), released_today)
            outcome = self._call(lambda wall: engine.apply_schedule(wall, document, "local"))
            if outcome is not None and outcome.feedback == "applied":
                self.document = document
                self.timezone = document["timezone"]
                self.counts["schedule_changes"] += 1
                self.counts["change: " + what.split(":")[0]] += 1
                self._follow_up(touched)
            elif outcome is not None:
                self._violate("schedule_refused", f"a valid schedule change ({what}) was refused: {outcome.detail}")
        if outcome is not None and (outcome.detail or {}).get("reason") == "clock_unsynchronized":
            self.counts["held_clock_unsynchronized"] += 1  # the cost of waiting for NTP

    def _follow_up(self, touched: list[str]) -> None:
        """After a change of what a compartment holds, a caregiver refills it at once, later, or not
        at all (then only the day's random refills will)."""
        for medication_id in touched:
            roll = self.rng.random()
            count = self.rng.choice([0, 3, 10, 30])
            if roll < 0.4 and self.engine is not None:
                self.counts["refills_after_change"] += 1
                self._call(lambda wall, m=medication_id, c=count: self.engine.refill(wall, m, c))
            elif roll < 0.7:
                self._later.append((self.true + timedelta(minutes=self.rng.randrange(1, 600)), medication_id, count))

    def _refills_due(self, until: datetime) -> None:
        """Refills a caregiver does some time after a change (while the device is on)."""
        for moment, medication_id, count in sorted(self._later):
            if moment <= until:
                self._later.remove((moment, medication_id, count))
                self._fix_clock(moment)
                self._advance(moment)
                if self.engine is not None and self.document_has(medication_id):
                    self.counts["refills_after_change"] += 1
                    self._call(lambda wall, m=medication_id, c=count: self.engine.refill(wall, m, c))

    def document_has(self, medication_id: str) -> bool:
        return any(m["id"] == medication_id for m in self.document["medications"])

    def _check_day(self) -> None:
        events = list(self.store.events(self.fed_seq))
        self.checker.context = self._context()
        self.violations += self.checker.feed(events)
        for event in events:
            if event["type"] in ("dose.released", "prn.released"):
                wall, true = self.release_walls.pop(event["event_id"], (None, None))
                if wall is not None and wall < parse_utc(event["at"]):
                    self._violate("released_while_clock_behind",
                                  f"{event['type']} logged at {event['at']} while the wall clock read "
                                  f"{format_at(wall)}: a clamped time, not a real one", event["seq"])
                if event["type"] == "dose.released" and true is not None and not \
                        parse_utc(event["data"]["window_start"]) <= true < parse_utc(event["data"]["window_end"]):
                    self._violate("released_outside_window_by_true_clock",
                                  f"{event['data']['medication_id']} released at true time {format_at(true)}, "
                                  f"outside its window [{event['data']['window_start']}, "
                                  f"{event['data']['window_end']})", event["seq"])
            elif event["type"] == "dose.missed":
                true = self.true_at.pop(event["event_id"], None)
                if true is not None and true < parse_utc(event["data"]["window_end"]):
                    self._violate("missed_early_by_true_clock",
                                  f"{event['data']['medication_id']} logged missed at true time {format_at(true)}, "
                                  f"before its window closed at {event['data']['window_end']}", event["seq"])
        if events:
            self.fed_seq = events[-1]["seq"]
        if self.engine is not None and self.engine.rules.clock_trusted:
            # The engine has ticked at this moment: every window closed by its time has ended
            # (not while its clock is untrusted: windows wait for the synchronisation then).
            effective = max(truncate_ms(self.given()), parse_utc(self.store.last_event()["at"]))
            self.violations += self.checker.settle(effective)

    def run(self) -> SimResult:
        self._boot()
        self._synchronise()  # installed and set up on a network: the clock is right from the start
        outcome = self._call(lambda wall: self.engine.apply_schedule(wall, self.document, "local"))
        if outcome is not None and outcome.feedback != "applied":
            self._violate("schedule_refused", f"the first schedule was refused: {outcome.detail}")
        for medication in self.document["medications"]:
            count = self.rng.choice([0, 3, 10, 30, 60])
            self._call(lambda wall, m=medication["id"], c=count: self.engine.refill(wall, m, c))
        day_start = self.true
        for self.day_index in range(self.days):
            plan = self._plan(day_start)
            for moment, _, kind, args in plan:
                self._refills_due(moment)
                self._fix_clock(moment)
                self._advance(moment)
                self._do(kind, args)
            self._refills_due(day_start + DAY)
            self._fix_clock(day_start + DAY)
            self._advance(day_start + DAY)
            self._check_day()
            day_start += DAY
        ok, seq, reason = self.store.verify()
        if not ok:
            self._violate("chain", f"store.verify: {reason}", seq)
        events = self.store.event_count()
        self.store.close()
        return SimResult(self.seed, self.days, events, self.violations, dict(self.counts))

    def _fix_clock(self, until: datetime) -> None:
        """NTP corrections due before `until` (after a boot with a wrong clock)."""
        for moment in sorted(self._pending_fix):
            if moment <= until:
                self._advance(moment)
                self._pending_fix.remove(moment)
                self._synchronise()

    def _synchronise(self) -> None:
        """NTP: the clock steps to the true time, and timesyncd touches its marker."""
        self.offset = timedelta(0)
        if self.engine is not None:
            self.synced_at = self.wall().timestamp()
            self.counts["ntp_syncs"] += 1
