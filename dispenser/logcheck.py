"""Check a dispenser's log against the safety rules, from the contract (`dispenser log verify --rules`).

`LogChecker` reads an event log (in `seq` order, fed incrementally or at once) and
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
rules' code: where they disagree, the checker says so. The randomized simulation that
drives the real engine through it lives beside the tests (`harness/simulation.py`).

    >>> import json
    >>> from importlib.resources import files
    >>> from dispenser.engine import Engine
    >>> contract_example = json.loads(files("dispenser").joinpath("demo", "schedule.json").read_text())
    >>> store = Store.open(":memory:", "disp-0001")
    >>> engine, now = Engine(store, 8), datetime(2026, 11, 24, 12, 45, tzinfo=UTC)   # 07:45 in New York
    >>> outcome = engine.apply_schedule(now, contract_example, stock={"sertraline": 10})
    >>> engine.press(now).feedback                  # sertraline, in its window
    <Feedback.RELEASED: 'released'>
    >>> check_store(store)
    []
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from fractions import Fraction

from .events import GENESIS, event_hash
from .schedule import AsNeeded, Medication, Schedule, parse_schedule
from .scheduler import Dose, doses_between
from .sensor_rules import UNSEEN_REASONS
from .store import Store
from .timeutil import UTC, format_at, parse_utc
from .vocabulary import DoseStatus, EventType, HoldReason

DAY = timedelta(days=1)
# A window is at most a day before and a day after its dose (schedule.MAX_WINDOW_MIN).
MAX_REACH = timedelta(days=1)

PRN_KEEP = timedelta(days=367)  # longer than any as-needed interval or rolling period a schedule may set
# The default minimum gap is read off the schedule's expansion this far around its
# apply and around each release: wide enough for weekly doses and nearby titration steps.
GAP_REACH = timedelta(days=8)

HELD_REASONS = frozenset(HoldReason)
# A dose held for these will never be given: it needs no other final state.
PERMANENT_HOLDS = frozenset({HoldReason.ALREADY_GIVEN, HoldReason.DAY_LIMIT})


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
    known = [(n, s) for n, s in items if s is not None]
    units = {s[1] for _, s in known}
    if len(known) == len(items) and len(units) == 1:
        return [n * s[0] for n, s in known], units.pop()
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
        self._hash: str | None = GENESIS
        self._at = ""
        self._last_at: datetime | None = None
        self.schedule: Schedule | None = None
        self._applied_at: datetime | None = None
        self._expanded_to: datetime | None = None  # the current schedule's doses with scheduled_at before this are known
        self._expected: dict[tuple[str, datetime], _Expected] = {}
        self._finals: dict[tuple[str, datetime], DoseStatus] = {}
        self._released: dict[tuple[str, datetime], tuple[datetime, datetime]] = {}
        self._taken: set[tuple[str, datetime]] = set()
        self._unconfirmed: set[tuple[str, datetime]] = set()
        self._given: dict[str, list[_Given]] = defaultdict(list)  # ingredient -> releases, in `at` order
        self._known: dict[str, Medication] = {}  # every medication id seen in a schedule, as last seen
        self._loads: dict[int, tuple[tuple | None, int]] = {}  # compartment -> (what it holds, count)
        self._unloaded_by: dict[int, int] = {}  # compartment -> the version that reassigned it
        self._held: dict[tuple[str, datetime], set[str | None]] = defaultdict(set)
        self._plans: dict[tuple, list[tuple[int, tuple | None]]] = {}
        self._gaps: dict[tuple, timedelta | None] = {}
        self._lookup: dict[tuple[int, str, datetime], Dose | None] = {}
        self._releases: dict[str | None, tuple[str, str | None]] = {}  # release event_id -> (type, scheduled_at)
        self._troubled: set[str | None] = set()

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
        if kind in (EventType.DOSE_RELEASED, EventType.PRN_RELEASED):
            self._releases[event.get("event_id")] = (kind, data.get("scheduled_at"))
        handler = _HANDLERS.get(kind)
        if handler is not None:
            handler(self, seq, at, data)

    # -- schedules ---------------------------------------------------------------------------

    def _on_applied(self, seq: int | None, at: datetime, data: dict) -> None:
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
        if schedule is None or self._expanded_to is None or self._applied_at is None or until <= self._expanded_to:
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

    def _final(self, seq: int | None, kind: DoseStatus, key: tuple[str, datetime]) -> None:
        if self._finals.get(key) == DoseStatus.HELD:
            # Held for good: missed or skipped may still follow; a release is reported apart.
            self._finals[key] = kind if kind != DoseStatus.RELEASED else DoseStatus.HELD
        elif key in self._finals:
            self._violate("two_final_states", f"{_name(key)} ended {self._finals[key]} and then {kind}", seq)
        else:
            self._finals[key] = kind

    def _on_held(self, seq: int | None, at: datetime, data: dict) -> None:
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
            self._finals[key] = DoseStatus.HELD

    def _on_released(self, seq: int | None, at: datetime, data: dict) -> None:
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
        held = PERMANENT_HOLDS.intersection(self._held.get(key, set()))
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
        self._final(seq, DoseStatus.RELEASED, key)

    def _on_missed(self, seq: int | None, at: datetime, data: dict) -> None:
        key = self._key(data)
        if at < parse_utc(data["window_end"]):
            self._violate("missed_early", f"{_name(key)} logged missed at {format_at(at)}, "
                                          f"before its window closed at {data['window_end']}", seq)
        self._final(seq, DoseStatus.MISSED, key)

    def _on_skipped(self, seq: int | None, at: datetime, data: dict) -> None:
        key = self._key(data)
        if at >= parse_utc(data["window_end"]):
            self._violate("skipped_late", f"{_name(key)} skipped after its window closed", seq)
        self._final(seq, DoseStatus.SKIPPED, key)

    def _on_taken(self, seq: int | None, at: datetime, data: dict) -> None:
        key = self._key(data)
        if key not in self._released:
            self._violate("taken_unreleased", f"{_name(key)} confirmed taken but never released", seq)
        if key in self._taken:
            self._violate("taken_twice", f"{_name(key)} confirmed taken twice", seq)
        self._taken.add(key)

    def _on_unconfirmed(self, seq: int | None, at: datetime, data: dict) -> None:
        key = self._key(data)
        if key not in self._released:
            self._violate("unconfirmed_unreleased", f"{_name(key)} unconfirmed but never released", seq)
        if key in self._unconfirmed:
            self._violate("unconfirmed_twice", f"{_name(key)} reported unconfirmed twice", seq)
        self._unconfirmed.add(key)

    def _on_uncertain(self, seq: int | None, at: datetime, data: dict) -> None:
        """A release a stop interrupted: reported once, naming its scheduled dose if it had one."""
        event_id = data.get("release_event_id")
        release = self._releases.get(event_id)
        if release is None:
            self._violate("uncertain_unknown", f"release_uncertain names no release ({event_id})", seq)
            return
        if event_id in self._troubled:
            self._violate("uncertain_twice", f"release {event_id} reported uncertain or failed twice", seq)
        self._troubled.add(event_id)
        if release[0] == EventType.DOSE_RELEASED and data.get("scheduled_at") != release[1]:
            self._violate("uncertain_without_dose", f"release_uncertain of the dose at {release[1]} "
                                                    f"names {data.get('scheduled_at')}", seq)

    def _on_failed(self, seq: int | None, at: datetime, data: dict) -> None:
        unseen = data.get("reason") in UNSEEN_REASONS  # the drop sensor saw no pill (docs/RULES.md)
        if unseen and "compartment" in data:  # its count is not believed: nothing more until a refill
            holds, _ = self._loads.get(data["compartment"], (None, 0))
            self._loads[data["compartment"]] = (holds, 0)
        if "scheduled_at" not in data:
            return  # an as-needed release that failed: it still counts against the limits
        key = self._key(data)
        if key not in self._released:
            self._violate("failed_unreleased", f"{_name(key)} release failed but it was never released", seq)
        elif unseen:
            # The dose may be released again in its window; the unseen release keeps counting
            # for section 6 (it stays in `_given`), so a second one is judged with it.
            del self._released[key]
            if self._finals.get(key) == "released":
                del self._finals[key]

    # -- as needed ---------------------------------------------------------------------------

    def _on_prn(self, seq: int | None, at: datetime, data: dict) -> None:
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

    def _judge(self, seq: int | None, at: datetime, medication: Medication, units: int,
               scheduled_at: datetime | None) -> None:
        """Section 6 for one release, with the schedule in force at it; then remember the release."""
        ingredient = medication.substance
        strength = (medication.strength.value, medication.strength.unit) if medication.strength else None
        given = _Given(at, medication.id, units, strength, scheduled_at, seq)
        schedule = self.schedule
        if schedule is not None:
            if scheduled_at is not None:
                self._check_day(seq, schedule, ingredient, given, scheduled_at)
            self._check_gap(seq, schedule, ingredient, given)
            self._check_separation(seq, schedule, ingredient, given)
            if scheduled_at is None and medication.as_needed is not None:
                self._check_as_needed(seq, medication, medication.as_needed, given)
        history = self._given[ingredient]
        history.append(given)
        if history[0].at < at - PRN_KEEP:
            history[:] = [g for g in history if g.at >= at - PRN_KEEP]

    def _check_day(self, seq: int | None, schedule: Schedule, ingredient: str, given: _Given,
                   scheduled_at: datetime) -> None:
        """Rule 1: a local day's amount within what the schedule in force plans for that day."""
        tz = schedule.tz
        day = scheduled_at.astimezone(tz).date()
        planned = self._plan(schedule, ingredient, day)
        released = [(g.units, g.strength) for g in self._given[ingredient]
                    if g.scheduled_at is not None and g.scheduled_at.astimezone(tz).date() == day]
        released.append((given.units, given.strength))
        amounts, unit = _amounts(planned + released)
        plan, total = sum(amounts[:len(planned)], Fraction(0)), sum(amounts[len(planned):], Fraction(0))
        if total > plan:
            self._violate("day_limit", f"{ingredient}: {_show_amount(total)} {unit} released for {day} "
                                       f"({schedule.timezone}) with {given.medication_id}@"
                                       f"{format_at(scheduled_at)}; version {schedule.version} plans "
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
        gaps = [g for g in (self._shortest(schedule, ingredient, self._applied_at or at),
                            self._shortest(schedule, ingredient, at)) if g is not None]
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

    def _check_gap(self, seq: int | None, schedule: Schedule, ingredient: str, given: _Given) -> None:
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

    def _check_separation(self, seq: int | None, schedule: Schedule, ingredient: str, given: _Given) -> None:
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

    def _check_as_needed(self, seq: int | None, medication: Medication, prn: AsNeeded, given: _Given) -> None:
        """Rule 4: the interval since any release of the ingredient, and the rolling maximum across ids."""
        ingredient = medication.substance
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

    def _on_refilled(self, seq: int | None, at: datetime, data: dict) -> None:
        medication = self.schedule.medication(data["medication_id"]) if self.schedule else None
        if medication is None:
            return  # nothing is loaded by naming a medication the schedule does not have
        self._loads[medication.compartment] = (_identity(medication), data["count"])
        self._unloaded_by.pop(medication.compartment, None)

    def _take_from(self, seq: int | None, compartment: int, medication: Medication, quantity: int, at: datetime) -> None:
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


_HANDLERS: dict[str, Callable[[LogChecker, int | None, datetime, dict], None]] = {
    EventType.SCHEDULE_APPLIED: LogChecker._on_applied,
    EventType.DOSE_RELEASED: LogChecker._on_released,
    EventType.DOSE_MISSED: LogChecker._on_missed,
    EventType.DOSE_SKIPPED: LogChecker._on_skipped,
    EventType.DOSE_TAKEN: LogChecker._on_taken,
    EventType.DOSE_UNCONFIRMED: LogChecker._on_unconfirmed,
    EventType.DOSE_RELEASE_FAILED: LogChecker._on_failed,
    EventType.DOSE_RELEASE_UNCERTAIN: LogChecker._on_uncertain,
    EventType.PRN_RELEASED: LogChecker._on_prn,
    EventType.DOSE_HELD: LogChecker._on_held,
    EventType.STOCK_REFILLED: LogChecker._on_refilled,
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
            cache[version] = None if document is None else parse_schedule(document, default_timezone, applied=True)
        return cache[version]
    return load


def check_store(store: Store, until: datetime | None = None, default_timezone: str = "UTC") -> list[Violation]:
    """Check everything a store holds: its chain (`store.verify`) and its log."""
    violations = []
    ok, seq, reason = store.verify()
    if not ok:
        violations.append(Violation("chain", f"store.verify: {reason}", seq))
    return violations + check_events(store.events(), store_loader(store, default_timezone), until)


