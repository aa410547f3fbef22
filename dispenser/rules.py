"""The dose rules: what happens on a press, a hold, a refill, a new schedule or the passing of time.

Pure logic. `DoseRules` holds the `State`, which is nothing but a fold of the log:
every decision emits event drafts, and each draft is folded into the state the moment
it is emitted, exactly as it is folded when the log is replayed at start. So the state
after a restart is the state before it, by construction. No clock reads, no I/O: the
caller passes `now`, appends the drafts to the log, and carries out the releases.

Safety rules, in one place:
- a scheduled dose is released only inside its window, and only once (its key is
  `(medication_id, scheduled_at)`);
- every release keeps CONTRACT section 6 per active ingredient (`limits.py`): the day's
  plan, the minimum gap, separations, as-needed intervals and maxima across ids, and a
  compartment gives only what it was loaded with; a dose held back is `dose.held`;
- nothing is released from a compartment that holds fewer pills than the dose.
"""
from __future__ import annotations

import bisect
import copy
import itertools
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial

from .events import Draft
from .limits import FINAL_HOLDS, KEEP_EXACT, Hold, Limits, Load, Mark, compact, mark
from .schedule import AsNeeded, IntervalDosage, Medication, Schedule
from .scheduler import Dose, doses_between
from .sensor_rules import TAMPER_ALERT, UNSEEN_REASONS, LidState, fold_lid, opened_during, tamper_due_at
from .timeutil import format_at, format_utc, parse_utc, truncate_ms
from .vocabulary import (AlertKind, DoseStatus, EventType, FailReason, Feedback, HoldReason, PrnRefusal, RejectReason,
                         ScheduleSource, Severity, SideEffects, Unavailable)

CONFIRM_AFTER = timedelta(minutes=15)
REMINDER_EVERY = timedelta(minutes=30)
CONFIRM_LIMIT = timedelta(hours=24)
MAX_WINDOW_SIDE = timedelta(days=1)  # a window reaches at most a day before and after its dose
# As-needed releases are kept this long: the longest interval or rolling period a schedule may set.
PRN_HISTORY = timedelta(days=367)
DENIALS_PER_ALERT = 3
DENIAL_WINDOW = timedelta(hours=24)
STOCK_LOW_DAYS = 3
# A catch-up after a long downtime goes in slices, each committed before the next is
# computed, so memory does not grow with the outage: about CATCH_UP_DOSES doses of the
# schedule's time, at most a week of it, and never more than CATCH_UP_DOSES windows.
CATCH_UP_STEP = timedelta(days=7)
CATCH_UP_DOSES = 256
KEEP_FINAL = timedelta(days=3)  # final dose records are kept this long after their window ends
# Doses found missed while the device could not give them reach the caregiver as one alert.
MISSED_TOGETHER = AlertKind.DOSES_MISSED_WHILE_UNAVAILABLE
MISSED_TOGETHER_IDS = 100  # the event_ids it lists at most; `count` says how many there were

FINAL = {DoseStatus.TAKEN, DoseStatus.MISSED, DoseStatus.SKIPPED, DoseStatus.FAILED, DoseStatus.HELD}

HELD_TEXT = {
    HoldReason.ALREADY_GIVEN: "that medicine's planned amount for the day was already given",
    HoldReason.DAY_LIMIT: "it would give more of that medicine than the day's plan",
    HoldReason.MIN_GAP: "it came too soon after the last dose of the same medicine",
    HoldReason.SEPARATION: "it must be kept apart from another medicine given recently",
    HoldReason.UNLOADED: "the compartment has not been refilled since the schedule changed what it holds",
}


@dataclass(frozen=True)
class Released:
    """When the log released a scheduled dose, and the `dose.released` event that did."""

    at: datetime
    event_id: str | None


@dataclass
class DoseRecord:
    """What the log says about one scheduled dose: the dose as its events describe it, and where it stands."""

    dose: Dose
    status: DoseStatus = DoseStatus.PENDING
    due_logged: bool = False
    held: frozenset[str] = frozenset()  # reasons logged as dose.held
    reminders: int = 0
    released: Released | None = None  # set as the status becomes released; kept once taken
    unconfirmed_logged: bool = False

    def waiting(self) -> Released | None:
        """Its release while it waits for a confirming press (status released), else None."""
        return self.released if self.status == DoseStatus.RELEASED else None

    @property
    def key(self) -> tuple[str, datetime]:
        return self.dose.key

    @property
    def medication_id(self) -> str:
        return self.dose.medication_id

    @property
    def scheduled_at(self) -> datetime:
        return self.dose.scheduled_at

    @property
    def quantity(self) -> int:
        return self.dose.quantity

    @property
    def compartment(self) -> int:
        return self.dose.compartment

    @property
    def window_start(self) -> datetime:
        return self.dose.window_start

    @property
    def window_end(self) -> datetime:
        return self.dose.window_end


@dataclass
class State:
    """Everything the rules know, rebuilt from the log by folding its events."""

    schedule: Schedule | None = None
    schedule_applied_at: datetime | None = None
    doses: dict[tuple[str, datetime], DoseRecord] = field(default_factory=dict)
    # What each compartment was loaded with; `stock` is its view per medication in force.
    loads: dict[int, Load] = field(default_factory=dict)
    # Compartments whose missing load the clinic has heard of since their last refill or schedule change.
    unloaded_told: set[int] = field(default_factory=set)
    stock: dict[str, int] = field(default_factory=dict)
    stock_low: set[str] = field(default_factory=set)
    stock_empty: set[str] = field(default_factory=set)
    # Every release per active ingredient (Medication.substance), oldest first: section 6's history.
    releases: dict[str, list[Mark]] = field(default_factory=dict)
    prn_denied: dict[str, list[datetime]] = field(default_factory=dict)
    last_at: datetime | None = None
    # Every dose whose window ended at or before this moment has its final state logged.
    settled_until: datetime | None = None
    # As last logged by clock.synchronized / clock.unsynchronized (clocktrust.py).
    clock_trusted: bool = True
    # The latest stretches in which the device could not give a dose, in log times: off
    # (the last event before a start, to the start) and waiting for a trusted clock.
    off: tuple[datetime, datetime] | None = None
    clock_held: tuple[datetime, datetime | None] | None = None
    # A trusted wall clock seen behind the log (`clock.behind`): (its time, the log's time).
    behind: tuple[datetime, datetime] | None = None
    # Windows no step has judged yet although they end before `settled_until`: those of a
    # schedule applied while the log's time ran ahead (from, the log's time then).
    unjudged: tuple[datetime, datetime] | None = None
    # Doses missed while the device could not give them, not yet in an alert.
    missed_together: "MissedTogether | None" = None
    # The lid switch, releases and refills, as far as a tamper alert needs them (sensor_rules.py).
    lid: LidState = field(default_factory=LidState)


@dataclass
class MissedTogether:
    """Doses found missed together (after downtime, or a wrong clock): one alert for them all.

    Bounded however long the outage: a count, the span, and at most MISSED_TOGETHER_IDS ids.
    """

    first_end: datetime  # the earliest window end among them
    last_end: datetime
    count: int = 0
    event_ids: list[str] = field(default_factory=list)
    compartments: set[int] = field(default_factory=set)
    reasons: set[str] = field(default_factory=set)
    last_id: str | None = None  # the latest one's event_id


@dataclass(frozen=True)
class Release:
    """An effect: move a compartment's servo `quantity` times for the release event `event_id`."""

    event_id: str
    medication_id: str
    compartment: int
    quantity: int


@dataclass
class Outcome:
    """What one input led to: the drafts to log, the releases to carry out, and what to show."""

    drafts: list[Draft] = field(default_factory=list)
    releases: list[Release] = field(default_factory=list)
    feedback: Feedback = Feedback.NONE
    detail: dict = field(default_factory=dict)
    schedule_document: dict | None = None

    def extend(self, other: "Outcome") -> "Outcome":
        self.drafts += other.drafts
        self.releases += other.releases
        self.feedback = other.feedback or self.feedback
        self.detail = other.detail or self.detail
        self.schedule_document = other.schedule_document or self.schedule_document
        return self


UNAVAILABLE_TEXT: dict[str, str] = {  # keyed by the `while` of logged events
    Unavailable.DEVICE_OFF: "was off",
    Unavailable.CLOCK_UNSYNCHRONIZED: "was off or waiting for the correct time",
    Unavailable.CLOCK_BEHIND: "was waiting for its clock, set back, to pass the time it had logged",
}

# Logged before the catch-up they may trigger: they settle no window.
BEFORE_CATCH_UP = (EventType.DEVICE_STARTED, EventType.CLOCK_SYNCHRONIZED, EventType.CLOCK_UNSYNCHRONIZED,
                   EventType.CLOCK_BEHIND)


def fold(state: State, event: dict, schedule_loader: Callable[[int], Schedule | None]) -> None:
    """Apply one logged event to the state. The only place the state changes."""
    kind, data = event["type"], event["data"]
    at = parse_utc(event["at"])
    if kind == EventType.DEVICE_STARTED and state.last_at is not None:  # off since the catch-up got, if it was cut
        state.off = (min(state.last_at, state.settled_until or state.last_at), at)
    state.last_at = at
    if kind not in BEFORE_CATCH_UP:  # a catch-up slice's last event says how far it got
        state.settled_until = parse_utc(data["caught_up_to"]) if "caught_up_to" in data else at
    _fold_catch_up(state, kind, data, at, event.get("event_id"))
    if kind == EventType.SCHEDULE_APPLIED:
        state.schedule = schedule_loader(data["version"])
        state.schedule_applied_at = at
        _unload_reassigned(state)
    elif kind.startswith("dose."):
        _fold_dose(state, kind, data, at, event.get("event_id"))
    elif kind == EventType.CLOCK_UNSYNCHRONIZED:
        state.clock_trusted, state.clock_held = False, (at, None)
    elif kind == EventType.CLOCK_SYNCHRONIZED:
        state.clock_trusted = True
        state.clock_held = (state.clock_held[0] if state.clock_held else at, at)
    elif kind == EventType.PRN_RELEASED:
        _released(state, data["medication_id"], data.get("compartment"), data["quantity"], at, None)
    elif kind == EventType.PRN_DENIED:
        state.prn_denied.setdefault(data["medication_id"], []).append(at)
    elif kind == EventType.STOCK_REFILLED:
        _load(state, data["medication_id"], data.get("compartment"), data["count"])
    elif kind == EventType.STOCK_LOW:
        state.stock_low.add(data["medication_id"])
    elif kind == EventType.STOCK_EMPTY:
        state.stock_empty.add(data["medication_id"])
    if kind == EventType.DOSE_RELEASE_FAILED and data.get("reason") in UNSEEN_REASONS:
        _unseen(state, data)
    fold_lid(state.lid, kind, data, at, event.get("event_id"))


def _unseen(state: State, data: dict) -> None:
    """A release whose pill the drop sensor did not see (docs/RULES.md, "The lid and the drop
    sensor"). Its dose is open again in its window, and its release keeps counting for
    section 6 (the pill may have fallen unseen): a press asks section 6 again with it counted.
    The compartment's count is not believed any more: it holds 0 until a person refills it.
    The failure's alert said so: no stock.empty follows."""
    compartment = data["compartment"]
    if "scheduled_at" in data:
        record = state.doses.get((data["medication_id"], parse_utc(data["scheduled_at"])))
        if record is not None:
            record.status = DoseStatus.PENDING
    load = state.loads.get(compartment)
    if load is not None:
        state.loads[compartment] = Load(load.medication_id, load.substance, load.strength, 0)
        _stock_view(state)
    for medication in state.schedule.medications if state.schedule else ():
        if medication.compartment == compartment:
            state.stock_empty.add(medication.id)


def _fold_catch_up(state: State, kind: str, data: dict, at: datetime, event_id: str | None) -> None:
    """What the catch-up carries across its slices and restarts: the windows still to judge
    after a clock set back, and the missed doses the caregiver has not been told of yet."""
    if state.unjudged is not None and at > state.unjudged[1]:
        state.unjudged = None  # the clock has passed the log: the catch-up has taken them on
    if kind == EventType.DOSE_MISSED and data.get("while"):
        end = parse_utc(data["window_end"])
        together = state.missed_together = state.missed_together or MissedTogether(end, end)
        together.count += 1
        together.first_end = min(together.first_end, end)
        together.last_end = max(together.last_end, end)
        if event_id and len(together.event_ids) < MISSED_TOGETHER_IDS:
            together.event_ids.append(event_id)
        together.compartments.add(data["compartment"])
        together.reasons.add(data["while"])
        together.last_id = event_id
    elif kind == EventType.ALERT_RAISED and state.missed_together is not None and (
            data.get("kind") == MISSED_TOGETHER or state.missed_together.last_id in data.get("events", ())):
        state.missed_together = None  # told; or, in a log from before this alert, told one by one
    elif kind == EventType.CLOCK_BEHIND:
        wall = parse_utc(data["wall"])
        state.behind = (wall, at)
        applied = state.schedule_applied_at
        if applied is not None and wall < applied:
            # Applied while the log's time ran ahead: truly at or before `wall`, so its doses
            # since then exist, and none of them was judged.
            state.schedule_applied_at, state.unjudged = wall, (wall, at)


def copy_state(state: State) -> State:
    """An independent copy of a folded state: what copy.deepcopy gives, at a fraction of its cost.

    Every container and mutable record is new; what nothing changes in place is shared: the
    parsed schedule, frozen dataclasses (Dose, Released, Mark, Load), datetimes, tuples. A
    DoseRecord holds only such values, so a shallow copy of it is a whole one.
    """
    together = state.missed_together
    return replace(
        state,
        doses={key: copy.copy(record) for key, record in state.doses.items()},
        loads=dict(state.loads),
        unloaded_told=set(state.unloaded_told),
        stock=dict(state.stock),
        stock_low=set(state.stock_low),
        stock_empty=set(state.stock_empty),
        releases={substance: list(marks) for substance, marks in state.releases.items()},
        prn_denied={medication: list(times) for medication, times in state.prn_denied.items()},
        missed_together=None if together is None else replace(
            together, event_ids=list(together.event_ids), compartments=set(together.compartments),
            reasons=set(together.reasons)),
        lid=copy.copy(state.lid),
    )


def forget_old(state: State, now: datetime) -> None:
    """Drop final dose records long past and old as-needed history, as of `now` (a catch-up
    slice passes its own end, a replay of the log the time it has judged up to).

    Never a record whose window ends after the last judged moment: a catch-up still to
    come (after days with the clock untrusted) must find a dose already given as given,
    or it would judge it missed.
    """
    judged = now if state.settled_until is None else min(now, state.settled_until)
    if state.unjudged is not None:
        judged = min(judged, state.unjudged[0])
    cutoff = judged - KEEP_FINAL
    for key in [k for k, r in state.doses.items() if r.window_end < cutoff
                and (r.status in FINAL or r.status == DoseStatus.RELEASED)]:
        del state.doses[key]
    history, exact, denials = now - PRN_HISTORY, now - KEEP_EXACT, now - timedelta(days=8)
    for substance, marks in state.releases.items():
        if marks and marks[0].at < history:
            marks = [m for m in marks if m.at >= history]
        state.releases[substance] = compact(marks, exact)
    for medication, items in state.prn_denied.items():
        state.prn_denied[medication] = [at for at in items if at >= denials]


def _fold_dose(state: State, kind: str, data: dict, at: datetime, event_id: str | None) -> None:
    if "scheduled_at" not in data:
        return  # the failed or interrupted release of an as-needed dose: no scheduled dose to track
    key = (data["medication_id"], parse_utc(data["scheduled_at"]))
    record = state.doses.get(key)
    if record is None:
        if "window_start" not in data:
            return  # an event about a dose the log never described: nothing to track
        record = DoseRecord(Dose(
            medication_id=key[0], scheduled_at=key[1], quantity=data["quantity"],
            compartment=data["compartment"], window_start=parse_utc(data["window_start"]),
            window_end=parse_utc(data["window_end"]),
        ))
        state.doses[key] = record
    if kind == EventType.DOSE_DUE:
        record.due_logged = True
    elif kind == EventType.DOSE_HELD:
        record.held = record.held | {data["reason"]}
        if data["reason"] == HoldReason.UNLOADED:
            state.unloaded_told.add(data.get("compartment", record.compartment))
        if data["reason"] in FINAL_HOLDS:
            record.status = DoseStatus.HELD
    elif kind == EventType.DOSE_REMINDER:
        record.reminders = data["reminder"]
    elif kind == EventType.DOSE_RELEASED:
        record.status, record.released = DoseStatus.RELEASED, Released(at, event_id)
        # What was released, under the schedule then in force, not what an earlier event of the
        # dose (a dose.due under the schedule before) announced: its quantity, compartment, window.
        record.dose = replace(record.dose, quantity=data.get("quantity", record.quantity),
                              compartment=data.get("compartment", record.compartment))
        if "window_start" in data:
            record.dose = replace(record.dose, window_start=parse_utc(data["window_start"]),
                                  window_end=parse_utc(data["window_end"]))
        _released(state, record.medication_id, record.compartment, record.quantity, at, record.scheduled_at)
    elif kind == EventType.DOSE_TAKEN:
        record.status = DoseStatus.TAKEN
    elif kind == EventType.DOSE_UNCONFIRMED:
        record.unconfirmed_logged = True
    elif kind == EventType.DOSE_MISSED:
        record.status = DoseStatus.MISSED
    elif kind == EventType.DOSE_SKIPPED:
        record.status = DoseStatus.SKIPPED
    elif kind == EventType.DOSE_RELEASE_FAILED:
        record.status = DoseStatus.FAILED


def _medication(state: State, medication_id: str) -> Medication | None:
    return state.schedule.medication(medication_id) if state.schedule else None


def _released(state: State, medication_id: str, compartment: int | None, quantity: int,
              at: datetime, scheduled_at: datetime | None) -> None:
    """A release: the ingredient's history grows, the compartment's load shrinks."""
    medication = _medication(state, medication_id)
    if medication is not None:
        state.releases.setdefault(medication.substance, []).append(
            mark(medication, quantity, at, scheduled_at))
    load = state.loads.get(compartment) if compartment is not None else None
    if load is not None and compartment is not None:
        state.loads[compartment] = Load(load.medication_id, load.substance, load.strength,
                                        max(0, load.count - quantity))
    _stock_view(state)


def _load(state: State, medication_id: str, compartment: int | None, count: int) -> None:
    """A refill names what the compartment now holds: the medication in force there, and its count."""
    medication = _medication(state, medication_id)
    if medication is not None and compartment is not None:
        state.loads[compartment] = Load(medication.id, medication.substance, medication.strength, count)
        state.unloaded_told.discard(compartment)
    state.stock_low.discard(medication_id)
    state.stock_empty.discard(medication_id)
    _stock_view(state)


def _unload_reassigned(state: State) -> None:
    """A schedule that gives a compartment another medication, strength or ingredient empties it
    (for the rules) until a refill names the new load: it must never release the old pills."""
    for medication in state.schedule.medications if state.schedule else ():
        load = state.loads.get(medication.compartment)
        if load is not None and not load.holds(medication):
            del state.loads[medication.compartment]
    state.unloaded_told.clear()
    _stock_view(state)


def _stock_view(state: State) -> None:
    """Stock per medication in force: its compartment's count when that holds it, else 0."""
    stock = {}
    for medication in state.schedule.medications if state.schedule else ():
        load = state.loads.get(medication.compartment)
        stock[medication.id] = load.count if load is not None and load.holds(medication) else 0
    state.stock = stock


def dose_data(dose: Dose | DoseRecord, **extra: object) -> dict[str, object]:
    """The fields that name and describe a scheduled dose in every dose.* event."""
    return {
        "medication_id": dose.medication_id,
        "scheduled_at": format_utc(dose.scheduled_at),
        "quantity": dose.quantity,
        "compartment": dose.compartment,
        "window_start": format_utc(dose.window_start),
        "window_end": format_utc(dose.window_end),
        **extra,
    }


class DoseRules:
    """Decides what happens. Every method takes `now` and returns an `Outcome`.

    >>> from datetime import timezone
    >>> from importlib.resources import files
    >>> from dispenser.schedule import load_schedule_file
    >>> schedule = load_schedule_file(files("dispenser") / "demo" / "schedule.json")   # the contract's example
    >>> now = datetime(2026, 11, 24, 12, 45, tzinfo=timezone.utc)      # 07:45 in New York
    >>> rules = DoseRules(State(), compartments=8)
    >>> rules.press(now).feedback                                      # no schedule yet
    <Feedback.NOTHING_DUE: 'nothing_due'>
    >>> rules.apply_schedule(now, schedule, "local", stock={"sertraline": 10}).feedback
    <Feedback.APPLIED: 'applied'>
    >>> outcome = rules.press(now)     # sertraline's window (07:30-10:00) is open
    >>> outcome.feedback, [draft.type for draft in outcome.drafts], outcome.releases[0].compartment
    (<Feedback.RELEASED: 'released'>, [<EventType.DOSE_RELEASED: 'dose.released'>], 1)
    """

    def __init__(
        self,
        state: State,
        compartments: int,
        schedule_loader: Callable[[int], Schedule | None] = lambda version: None,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ):
        self.state = state
        self.compartments = compartments
        self.schedule_loader = schedule_loader
        self.new_id = new_id
        self._expansion: tuple[int, datetime, datetime, list[Dose]] | None = None
        self._limits: Limits | None = None
        self._pending_schedules: dict[int, Schedule] = {}
        # Whether the wall clock can be believed (clocktrust.py); the engine sets it before
        # each call. While it cannot, nothing is released and no window is judged.
        self.clock_trusted = True

    # -- emitting ---------------------------------------------------------------------

    def _emit(self, outcome: Outcome, kind: EventType, data: dict, now: datetime) -> Draft:
        draft = Draft(type=kind, data=data, event_id=self.new_id())
        fold(self.state, {"type": kind, "data": data, "at": format_at(now), "event_id": draft.event_id},
             self._load_schedule)
        outcome.drafts.append(draft)
        return draft

    def _alert(self, outcome: Outcome, kind: AlertKind, severity: Severity, message: str,
               about: list[Draft], now: datetime) -> None:
        self._emit(outcome, EventType.ALERT_RAISED, {
            "alert_id": self.new_id(), "kind": kind, "severity": severity,
            "message": message, "events": [draft.event_id for draft in about],
        }, now)

    def _load_schedule(self, version: int) -> Schedule | None:
        return self._pending_schedules.get(version) or self.schedule_loader(version)

    def log_time(self, now: datetime) -> datetime:
        """The log's time: it never runs backwards, and stands still while the clock is untrusted.

        A clock set back does not reopen the past; a clock that may run ahead (not yet
        synchronised) writes no time into the log that could later lie ahead of the truth.
        """
        now = truncate_ms(now)
        last = self.state.last_at
        if last is not None and (now < last or not self.clock_trusted):
            return last
        return now

    def clock_behind(self, now: datetime) -> bool:
        """The wall clock reads earlier than the log's last event: one of the two times was wrong.

        Then the true time is unknown (after a clock that ran ahead was corrected, it is
        earlier than the log's time, which is all the rules can use), so nothing is released
        until the clock has passed the log again. Confirming and logging go on.
        """
        last = self.state.last_at
        return last is not None and truncate_ms(now) < last

    def time_unknown(self, now: datetime) -> str | None:
        """Why `now` may not be the true time, or None: "clock_unsynchronized" or "clock_behind"."""
        if not self.clock_trusted:
            return Unavailable.CLOCK_UNSYNCHRONIZED
        return Unavailable.CLOCK_BEHIND if self.clock_behind(now) else None

    # -- the doses of the schedule in force --------------------------------------------

    def _doses_near(self, now: datetime) -> list[Dose]:
        """Doses of the schedule in force whose windows can touch [now - 2 d, now + 2 d]."""
        schedule = self.state.schedule
        if schedule is None:
            return []
        cached = self._expansion
        if cached and cached[0] == schedule.version and cached[1] <= now - timedelta(days=2) \
                and now + timedelta(days=2) <= cached[2]:
            return cached[3]
        start, end = now - timedelta(days=4), now + timedelta(days=6)
        doses = doses_between(schedule, start, end)
        self._expansion = (schedule.version, start, end, doses)
        return doses

    def _doses_since(self, since: datetime | None, now: datetime) -> list[Dose]:
        """`_doses_near(now)`, and before them every dose whose window can end after `since`.

        After a downtime longer than the expansion reaches back, the catch-up at the start
        must still find every window that closed meanwhile. A slice of a long catch-up (see
        `catch_up`) needs only the doses whose windows can end within its own day.
        """
        schedule = self.state.schedule
        if schedule is not None and since is not None and now - since > self._catch_up_span():
            reach = self._catch_up_reach()  # windows end within `reach` of their dose
            return doses_between(schedule, since - reach, since + self._catch_up_span() + reach)
        near = self._doses_near(now)
        schedule, expanded_from = self.state.schedule, self._expansion[1] if self._expansion else now
        if schedule is None or since is None or since - 2 * MAX_WINDOW_SIDE >= expanded_from:
            return near
        return doses_between(schedule, since - 2 * MAX_WINDOW_SIDE, expanded_from) + near

    def _live_doses(self, now: datetime, since: datetime | None = None) -> list[Dose]:
        """Doses that exist: window ends after the schedule was applied, not covered by a release.

        With `since`, also the older doses whose windows may have closed after it (a catch-up).
        """
        return list(self._iter_live(now, since))

    def _iter_live(self, now: datetime, since: datetime | None = None,
                   closing_after: datetime | None = None) -> Iterator[Dose]:
        """`_live_doses`, one at a time in order of `scheduled_at`: a caller that needs only
        the windows opening by some moment stops early (see `_opening_after`). With
        `closing_after`, the doses whose windows all closed by then are passed over unread."""
        applied, settled = self.state.schedule_applied_at, self.state.settled_until
        records = self.state.doses
        doses = self._doses_near(now) if since is None else self._doses_since(since, now)
        first = 0
        if closing_after is not None:  # a window ends less than `_catch_up_reach` after its dose
            first = bisect.bisect_right(doses, closing_after - self._catch_up_reach(), key=_scheduled_at)
        for dose in itertools.islice(doses, first, None):
            end = dose.window_end
            if applied is not None and end <= applied:
                continue
            if settled is not None and end <= settled and (dose.medication_id, dose.scheduled_at) not in records:
                continue  # final long ago, and its record already forgotten
            yield dose

    def _opening_after(self, moment: datetime) -> datetime:
        """Doses scheduled after this open their windows after `moment`: no window of the
        schedule in force reaches further before its dose than `_catch_up_reach`. The doses
        are in order of `scheduled_at`, so a scan for windows opening by `moment` stops there."""
        return moment + self._catch_up_reach()

    # -- section 6: what may come out, per ingredient ------------------------------------

    def limits(self) -> Limits | None:
        schedule = self.state.schedule
        if schedule is None:
            return None
        if self._limits is None or self._limits.schedule is not schedule:
            self._limits = Limits(schedule)
        return self._limits

    def hold_for(self, dose: Dose, now: datetime) -> Hold | None:
        """Why section 6 keeps this dose in (see limits.py), or None if it may go out now."""
        limits, schedule = self.limits(), self.state.schedule
        medication = schedule.medication(dose.medication_id) if limits and schedule else None
        if medication is None or limits is None:
            return None
        hold = limits.scheduled_hold(dose, medication, self.state.releases, self.state.loads, now)
        record = self._record(dose)
        if hold is None and record is not None and record.released is not None:
            # Released once already, its pill not seen: that release may have given the pill, so
            # the minimum gap runs from it too (not only from other doses' releases).
            hold = limits.spacing_hold(medication, self.state.releases, now)
        return hold

    def _held(self, outcome: Outcome, dose: Dose | DoseRecord, hold: Hold, now: datetime) -> None:
        """Log a hold once per dose and reason; the clinic hears of the dose once."""
        record = self.state.doses.get(dose.key)
        if record is not None and hold.reason in record.held:
            return
        first = record is None or not record.held
        # A compartment waiting for its refill holds every dose from it: the clinic hears once.
        told = hold.reason == HoldReason.UNLOADED and dose.compartment in self.state.unloaded_told
        extra: dict[str, str] = {"reason": hold.reason}
        if hold.allowed_at is not None:
            extra["allowed_at"] = format_utc(hold.allowed_at)
        draft = self._emit(outcome, EventType.DOSE_HELD, dose_data(dose, **extra), now)
        if first and not told:
            self._alert(outcome, AlertKind.DOSE_HELD, Severity.WARNING,
                        f"The {self._local(dose.scheduled_at)} dose from compartment {dose.compartment} "
                        f"was held back: {HELD_TEXT[hold.reason]}.", [draft], now)

    def _record(self, dose: Dose) -> DoseRecord | None:
        return self.state.doses.get((dose.medication_id, dose.scheduled_at))

    # -- time passing ------------------------------------------------------------------

    def tick(self, now: datetime) -> Outcome:
        """Windows open and close, reminders fall due, releases go unconfirmed.

        Not while the clock is untrusted (one running ahead would close windows early), nor
        while it reads earlier than the log (the log's time may have been a wrong one): time
        stands still until the clock is trusted and has passed the log; the catch-up then
        judges every window that closed meanwhile. This runs the whole catch-up, for a
        decision that must come after it (a press, a refill); the engine commits a long one
        slice by slice first (`catch_up`), so this is then a single step.
        """
        if self._paused:
            return Outcome()
        outcome = self.catch_up(now)
        while self.catching_up(now):
            outcome.extend(self.catch_up(now))
        self._tamper(outcome, now)
        return outcome

    _more = False  # the last step stopped short of `now` (its slice was full)
    _paused = False  # `start` reports interrupted releases before a long catch-up's first slice

    def catching_up(self, now: datetime) -> bool:
        """Whether a long catch-up has slices left: the engine commits `catch_up` until not."""
        if self.time_unknown(now):
            return False
        since = self._judged_until()
        return since is not None and (truncate_ms(now) - since > self._catch_up_span()
                                      or (self._more and since < now))

    _span: tuple[Schedule | None, timedelta, timedelta] | None = None

    def _catch_up_span(self) -> timedelta:
        """The schedule time one slice covers: about CATCH_UP_DOSES doses of the schedule in
        force (counted as if all its entries ran at once), at most CATCH_UP_STEP."""
        return self._slicing()[1]

    def _catch_up_reach(self) -> timedelta:
        """How far from its dose a window of the schedule in force may end (plus a minute)."""
        return self._slicing()[2]

    def _slicing(self) -> tuple[Schedule | None, timedelta, timedelta]:
        """(schedule, span, reach), worked out once per schedule in force."""
        schedule = self.state.schedule
        if self._span is None or self._span[0] is not schedule:
            per_day, reach = 0.0, MAX_WINDOW_SIDE
            if schedule is not None:
                dosages = [(m, d) for m in schedule.medications for d in m.dosages]
                per_day = sum(timedelta(days=1) / d.interval if isinstance(d, IntervalDosage)
                              else len(d.times) / d.period_days
                              for _, d in dosages)
                reach = max((max(m.window_before, m.window_after) for m, _ in dosages), default=reach)
            # Whole seconds (a slice's end is logged in `caught_up_to`, with milliseconds), and
            # at least a minute, so that every slice gets somewhere.
            seconds = int(86400 * CATCH_UP_DOSES / per_day) if per_day else CATCH_UP_STEP.total_seconds()
            span = min(CATCH_UP_STEP, timedelta(seconds=max(60, seconds)))
            self._span = (schedule, span, reach + timedelta(minutes=1))
        return self._span

    def _judged_until(self) -> datetime | None:
        """Every window ending by then has been judged: `settled_until`, or earlier where a
        schedule was applied while the log ran ahead (`State.unjudged`)."""
        settled, unjudged = self.state.settled_until, self.state.unjudged
        if unjudged is not None and (settled is None or unjudged[0] < settled):
            return unjudged[0]
        return settled

    def catch_up(self, now: datetime) -> Outcome:
        """One bounded step of `tick`: up to `now`, or, after a long downtime, one slice.

        A slice judges the windows that closed within its span of schedule time (about
        CATCH_UP_DOSES doses, at most a week; never more than CATCH_UP_DOSES windows), all
        logged at `now`; its last event carries `caught_up_to`,
        so that the log says how far the catch-up got, and `_forget_old` drops what it
        judged. The doses missed while the device could not give them are told in one
        alert once the last slice is done.
        """
        outcome = Outcome()
        if self.time_unknown(now):
            self._note_clock_behind(outcome, now)
            return outcome
        now = truncate_ms(now)
        since = self._judged_until()
        self.state.settled_until, self.state.unjudged = since, None
        span = self._catch_up_span()
        horizon = now if since is None or now - since <= span else since + span
        closed: list[tuple[Dose, DoseRecord | None]] = []
        open_: list[tuple[Dose, DoseRecord | None]] = []
        records, last = self.state.doses, self._opening_after(horizon)
        for dose in self._iter_live(now, since=since):
            if dose.scheduled_at > last:
                break  # this and every later window opens after the horizon
            record = records.get((dose.medication_id, dose.scheduled_at))
            if (record is not None and record.status != DoseStatus.PENDING) or dose.window_start > horizon:
                continue
            (closed if dose.window_end <= horizon else open_).append((dose, record))
        if len(closed) > CATCH_UP_DOSES:  # a dense schedule: stop at the Nth window's end
            closed.sort(key=lambda item: item[0].window_end)
            horizon = closed[CATCH_UP_DOSES - 1][0].window_end
            closed = [item for item in closed if item[0].window_end <= horizon]
        happenings: list[tuple[datetime, int, Callable[[], None]]] = [
            (dose.window_end, 2, partial(self._missed, outcome, dose, now)) for dose, _ in closed]
        for dose, record in open_ if horizon == now else ():
            if not (record and record.due_logged):
                happenings.append((dose.window_start, 0, partial(self._due, outcome, dose, now)))
            reminder = self._reminders_passed(dose, now)
            if reminder > (record.reminders if record else 0):
                happenings.append((dose.scheduled_at, 1, partial(self._remind, outcome, dose, reminder, now)))
        for record in list(self.state.doses.values()):
            if record.status != DoseStatus.RELEASED or record.unconfirmed_logged:
                continue
            released = record.released
            if released is not None and released.at + CONFIRM_AFTER <= horizon:
                happenings.append((released.at + CONFIRM_AFTER, 3,
                                   partial(self._unconfirmed, outcome, record, released, now)))
        for _, _, happen in sorted(happenings, key=lambda item: (item[0], item[1])):
            happen()
        self._more = horizon < now
        if self._more and outcome.drafts:
            outcome.drafts[-1].data["caught_up_to"] = format_at(horizon)
        elif not self._more and self.state.missed_together is not None:
            self._alert_missed_together(outcome, now)
        self.state.settled_until = horizon
        self._forget_old(horizon)
        return outcome

    def _note_clock_behind(self, outcome: Outcome, now: datetime) -> None:
        """Log a trusted clock found behind the moment the schedule in force was logged applied.

        That schedule was applied while the log's time ran ahead (a first boot with the clock
        days ahead), so truly at or before this clock's time: the doses in between exist, and
        will be judged once the clock has passed the log (nothing can be released before).
        Not where the log's time ran ahead for longer than records are kept: a dose judged
        then and forgotten could be judged again.
        """
        applied, last, wall = self.state.schedule_applied_at, self.state.last_at, truncate_ms(now)
        if not self.clock_trusted or applied is None or last is None or wall >= applied \
                or applied < last - KEEP_FINAL:
            return
        self._emit(outcome, EventType.CLOCK_BEHIND, {"wall": format_at(wall)}, last)

    def _reminders_passed(self, dose: Dose, now: datetime) -> int:
        if now < dose.scheduled_at:
            return 0
        return int((min(now, dose.window_end) - dose.scheduled_at) / REMINDER_EVERY) + 1

    def _due(self, outcome: Outcome, dose: Dose, now: datetime) -> None:
        """A window opens: the dose is due, or held for good if the day's plan is already given."""
        hold = self.hold_for(dose, now)
        if hold is not None and hold.final:
            self._held(outcome, dose, hold, now)
            return
        self._emit(outcome, EventType.DOSE_DUE, dose_data(dose), now)
        if hold is not None and hold.reason == HoldReason.UNLOADED:
            self._held(outcome, dose, hold, now)
        elif self.state.stock.get(dose.medication_id, 0) < dose.quantity:
            self._stock_empty(outcome, dose.medication_id, dose.compartment, now)

    def _remind(self, outcome: Outcome, dose: Dose, number: int, now: datetime) -> None:
        self._emit(outcome, EventType.DOSE_REMINDER, dose_data(dose, reminder=number), now)

    def _missed(self, outcome: Outcome, dose: Dose, now: datetime) -> None:
        """A window closed unreleased. One alert each while the device could give it; the ones
        it could not (off, a wrong clock) are told together once caught up."""
        behind = self.state.behind
        unavailable = Unavailable.CLOCK_BEHIND if behind and behind[0] < dose.window_end <= behind[1] \
            else self._unavailable_at(dose.window_end)
        data = dose_data(dose, **({"while": unavailable} if unavailable else {}))
        draft = self._emit(outcome, EventType.DOSE_MISSED, data, now)
        if unavailable:
            return
        self._alert(outcome, AlertKind.DOSE_MISSED, Severity.WARNING,
                    f"The {self._local(dose.scheduled_at)} dose from compartment {dose.compartment} "
                    f"was not taken: its window closed at {self._local(dose.window_end)}.", [draft], now)

    def _alert_missed_together(self, outcome: Outcome, now: datetime) -> None:
        """One alert for the doses missed while the device could not give them: how many, from
        which compartments, over what span (local times), and their events (the first 100)."""
        together = self.state.missed_together
        if together is None:
            return
        count, ids = together.count, list(together.event_ids)
        reasons = sorted(together.reasons)
        why = UNAVAILABLE_TEXT[reasons[0] if len(reasons) == 1 else Unavailable.CLOCK_UNSYNCHRONIZED]
        compartments = sorted(together.compartments)
        which = f"compartment{'s' if len(compartments) > 1 else ''} {', '.join(map(str, compartments))}"
        first, last = self._local_day(together.first_end), self._local_day(together.last_end)
        span = f"its window closed at {first}" if count == 1 else \
            f"their windows closed between {first} and {last}"
        message = (f"{count} dose{'s' if count > 1 else ''} from {which} {'was' if count == 1 else 'were'} "
                   f"missed while the dispenser {why}, so it could not give "
                   f"{'it' if count == 1 else 'them'}: {span}.")
        if len(ids) < count:
            message += f" The first {len(ids)} are listed."
        self._emit(outcome, EventType.ALERT_RAISED, {
            "alert_id": self.new_id(), "kind": MISSED_TOGETHER, "severity": Severity.WARNING, "message": message,
            "events": ids, "count": count, "compartments": compartments,
            "first_window_end": format_utc(together.first_end), "last_window_end": format_utc(together.last_end),
            "while": sorted(together.reasons)}, now)

    def _local_day(self, moment: datetime) -> str:
        tz = self.state.schedule.tz if self.state.schedule else None
        return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M") if tz else moment.strftime("%Y-%m-%d %H:%M UTC")

    def _unavailable_at(self, moment: datetime) -> str | None:
        """Why the device could not give a dose at `moment`, when a window closed then: the
        person could not have taken it, and an honest adherence report says so."""
        held, off = self.state.clock_held, self.state.off
        if held and held[0] < moment and (held[1] is None or moment <= held[1]):
            return Unavailable.CLOCK_UNSYNCHRONIZED
        if off and off[0] < moment <= off[1]:
            return Unavailable.DEVICE_OFF
        return None

    def _unconfirmed(self, outcome: Outcome, record: DoseRecord, released: Released, now: datetime) -> None:
        draft = self._emit(outcome, EventType.DOSE_UNCONFIRMED, dose_data(record), now)
        self._alert(outcome, AlertKind.DOSE_UNCONFIRMED, Severity.WARNING,
                    f"The {self._local(record.scheduled_at)} dose from compartment {record.compartment} "
                    f"was released at {self._local(released.at)} but nobody confirmed taking it.",
                    [draft], now)

    def _forget_old(self, now: datetime) -> None:
        """Keep the state small on a device that runs for years: old final doses go."""
        forget_old(self.state, now)

    def next_wakeup(self, now: datetime) -> datetime | None:
        """The next moment at which `tick` would log something, for a loop that sleeps till then.

        None while the clock is untrusted: nothing is due until it is (the loop polls it).
        """
        if not self.clock_trusted:
            return None
        now = self.log_time(now)
        moments = []
        records, reach, first_start = self.state.doses, self._catch_up_reach(), None
        for dose in self._iter_live(now, closing_after=now):  # a moment at or before now is not looked for
            if first_start is not None and dose.scheduled_at - reach > first_start:
                break  # every later dose's moments come after a window start already found
            record = records.get((dose.medication_id, dose.scheduled_at))
            if record is not None and record.status != DoseStatus.PENDING:
                continue
            if dose.window_start > now:
                moments.append(dose.window_start)
                if first_start is None or dose.window_start < first_start:
                    first_start = dose.window_start
                continue
            moments.append(dose.window_end)
            reminder_at = dose.scheduled_at + REMINDER_EVERY * self._reminders_passed(dose, now)
            if reminder_at < dose.window_end:
                moments.append(reminder_at)
        for record in self.state.doses.values():
            if record.status == DoseStatus.RELEASED and record.released is not None and not record.unconfirmed_logged:
                moments.append(record.released.at + CONFIRM_AFTER)
        tamper = tamper_due_at(self.state.lid)
        if tamper is not None:
            moments.append(max(tamper, now + timedelta(milliseconds=1)))  # overdue: the next tick tells it
        future = [moment for moment in moments if moment > now]
        return min(future) if future else None

    # -- the button --------------------------------------------------------------------

    def press(self, now: datetime) -> Outcome:
        """Confirm what waits for confirmation; otherwise release every dose in its window."""
        outcome = self.tick(now)
        unknown = self.time_unknown(now)
        now = self.log_time(now)
        waiting = self._awaiting_confirmation(now)
        if waiting:
            for record in waiting:
                self._emit(outcome, EventType.DOSE_TAKEN, dose_data(record), now)
            outcome.feedback = Feedback.CONFIRMED
            outcome.detail = {"medications": [r.medication_id for r in waiting]}
            return outcome
        if unknown:  # an untrusted or clamped time is not a real one: a release now could be early
            outcome.feedback = Feedback.TOO_EARLY
            outcome.detail = {"opens_at": now if unknown == Unavailable.CLOCK_BEHIND else None, "reason": unknown}
            return outcome
        released, empty, held = [], [], []
        for dose in self._in_window(now):
            hold = self.hold_for(dose, now)  # asked again for each: the release before it counts
            if hold is not None:
                self._held(outcome, dose, hold, now)
                held.append((dose, hold))
                continue
            if self.state.stock.get(dose.medication_id, 0) < dose.quantity:
                empty.append(dose.medication_id)
                self._stock_empty(outcome, dose.medication_id, dose.compartment, now)
                continue
            draft = self._emit(outcome, EventType.DOSE_RELEASED, dose_data(dose), now)
            outcome.releases.append(Release(draft.event_id, dose.medication_id, dose.compartment, dose.quantity))
            released.append(dose.medication_id)
            self._check_stock(outcome, dose.medication_id, dose.compartment, now)
        if released:
            outcome.feedback, outcome.detail = Feedback.RELEASED, {"medications": released, "empty": empty}
        elif empty:
            outcome.feedback, outcome.detail = Feedback.EMPTY, {"medications": empty}
        elif held:
            waits = [h.allowed_at for _, h in held if h.allowed_at is not None]
            outcome.feedback = Feedback.HELD
            outcome.detail = {"medications": [d.medication_id for d, _ in held],
                              "reason": held[0][1].reason, "allowed_at": min(waits) if waits else None}
        else:
            opens = self._next_window_start(now)
            outcome.feedback = Feedback.TOO_EARLY if opens else Feedback.NOTHING_DUE
            outcome.detail = {"opens_at": opens} if opens else {}
        return outcome

    def releasable(self, now: datetime) -> list[Dose]:
        """Doses a press would release now (stock permitting): none while the time is unknown,
        none that section 6 holds back."""
        if self.time_unknown(now):
            return []
        now = self.log_time(now)
        return [d for d in self._in_window(now) if self.hold_for(d, now) is None]

    def _in_window(self, now: datetime) -> list[Dose]:
        """Pending doses whose window is open at `now`."""
        doses, last = [], self._opening_after(now)
        for dose in self._iter_live(now, closing_after=now):
            if dose.scheduled_at > last:
                break  # this and every later window opens after now
            if dose.window_start <= now < dose.window_end and self._pending(dose):
                doses.append(dose)
        return doses

    def _pending(self, dose: Dose) -> bool:
        record = self._record(dose)
        return record is None or record.status == DoseStatus.PENDING

    def awaiting_confirmation(self, now: datetime) -> list[DoseRecord]:
        return self._awaiting_confirmation(self.log_time(now))

    def upcoming(self, now: datetime) -> Dose | None:
        """The next dose whose window has not opened yet."""
        now = self.log_time(now)
        later: list[Dose] = []
        for dose in self._iter_live(now, closing_after=now):
            if later and dose.scheduled_at > later[0].scheduled_at:
                break  # in order of scheduled_at: no later dose comes first
            if dose.window_start > now and self._pending(dose):
                later.append(dose)
        return min(later) if later else None

    def _awaiting_confirmation(self, now: datetime) -> list[DoseRecord]:
        """Released doses not yet confirmed, until the medication's next window opens."""
        waiting = []
        for record in self.state.doses.values():
            released = record.waiting()
            if released is None:
                continue
            if now < self._confirmable_until(record, released):
                waiting.append(record)
        return sorted(waiting, key=lambda r: (r.scheduled_at, r.medication_id))

    def _confirmable_until(self, record: DoseRecord, released: Released) -> datetime:
        later = [d.window_start for d in self._doses_near(released.at)
                 if d.medication_id == record.medication_id and d.scheduled_at > record.scheduled_at]
        limit = released.at + CONFIRM_LIMIT
        return min([limit, *later])

    def _next_window_start(self, now: datetime) -> datetime | None:
        first, reach = None, self._catch_up_reach()
        for dose in self._iter_live(now, closing_after=now):
            if first is not None and dose.scheduled_at - reach > first:
                break  # every later window opens after the first one found
            if dose.window_start > now and self._pending(dose) and (first is None or dose.window_start < first):
                first = dose.window_start
        return first

    # -- as needed ---------------------------------------------------------------------

    def as_needed_medications(self, now: datetime) -> list[Medication]:
        return [medication for medication, _ in self._as_needed(now)]

    def _as_needed(self, now: datetime) -> list[tuple[Medication, AsNeeded]]:
        schedule = self.state.schedule
        if schedule is None:
            return []
        return [(m, m.as_needed) for m in schedule.medications
                if m.as_needed is not None and _in_bounds(m.as_needed, now)]

    def hold(self, now: datetime, medication_id: str | None = None) -> Outcome:
        """Ask for an as-needed dose: released, denied, or a menu when several could be meant."""
        outcome = self.tick(now)
        raw_now, now = now, self.log_time(now)
        choices = self._as_needed(now)
        if medication_id is not None:
            choices = [(m, prn) for m, prn in choices if m.id == medication_id]
        if not choices:
            outcome.feedback = Feedback.NO_AS_NEEDED
            return outcome
        if len(choices) > 1:
            outcome.feedback, outcome.detail = Feedback.MENU, {"medications": [m.id for m, _ in choices]}
            return outcome
        medication, prn = choices[0]
        unknown = self.time_unknown(raw_now)
        if unknown:  # not logged: not the person's doing, not a misuse signal
            outcome.feedback, outcome.detail = Feedback.DENIED, {
                "medication": medication.id, "reason": unknown,
                "allowed_at": now if unknown == Unavailable.CLOCK_BEHIND else None}
            return outcome
        reason, allowed_at = self.prn_refusal(medication, prn, now)
        if reason:
            self._deny(outcome, medication, reason, allowed_at, now)
            return outcome
        draft = self._emit(outcome, EventType.PRN_RELEASED, {
            "medication_id": medication.id, "quantity": prn.quantity, "compartment": medication.compartment,
        }, now)
        outcome.releases.append(Release(draft.event_id, medication.id, medication.compartment, prn.quantity))
        outcome.feedback, outcome.detail = Feedback.RELEASED, {"medications": [medication.id]}
        self._check_stock(outcome, medication.id, medication.compartment, now)
        return outcome

    def prn_refusal(self, medication: Medication, prn: AsNeeded,
                    now: datetime) -> tuple[PrnRefusal | HoldReason | None, datetime | None]:
        """Why an as-needed dose (`prn`, the medication's) may not go out now, and when it could;
        (None, None) if it may.

        The interval and the rolling maximum count every release of the ingredient, across
        ids and strengths (section 6); then the compartment must hold this medication.
        """
        limits = self.limits()
        refusal = limits.as_needed_refusal(medication, prn, self.state.releases, now) if limits else None
        if refusal is not None:
            return refusal
        load = self.state.loads.get(medication.compartment)
        if load is None or not load.holds(medication):
            return HoldReason.UNLOADED, None
        if self.state.stock.get(medication.id, 0) < prn.quantity:
            return PrnRefusal.EMPTY, None
        return None, None

    def _deny(self, outcome: Outcome, medication: Medication, reason: PrnRefusal | HoldReason,
              allowed_at: datetime | None, now: datetime) -> None:
        data = {"medication_id": medication.id, "reason": reason}
        if allowed_at is not None:
            data["next_allowed_at"] = format_utc(allowed_at)
        draft = self._emit(outcome, EventType.PRN_DENIED, data, now)
        outcome.feedback, outcome.detail = Feedback.DENIED, {"medication": medication.id, "reason": reason,
                                                      "allowed_at": allowed_at}
        if reason == PrnRefusal.EMPTY:
            self._stock_empty(outcome, medication.id, medication.compartment, now)
        recent = [at for at in self.state.prn_denied.get(medication.id, []) if at > now - DENIAL_WINDOW]
        if len(recent) % DENIALS_PER_ALERT == 0:
            self._alert(outcome, AlertKind.PRN_DENIED_REPEATEDLY, Severity.WARNING,
                        f"{len(recent)} as-needed requests from compartment {medication.compartment} "
                        f"were refused in the last 24 hours.", [draft], now)

    # -- stock -------------------------------------------------------------------------

    def refill(self, now: datetime, medication_id: str, count: int) -> Outcome:
        outcome = self.tick(now)
        now = self.log_time(now)
        self._refilled(outcome, medication_id, count, now)
        outcome.feedback = Feedback.REFILLED
        return outcome

    def _refilled(self, outcome: Outcome, medication_id: str, count: int, now: datetime) -> None:
        medication = self.state.schedule.medication(medication_id) if self.state.schedule else None
        compartment = medication.compartment if medication else None
        self._emit(outcome, EventType.STOCK_REFILLED, {
            "medication_id": medication_id, "compartment": compartment, "count": count,
            "previous": self.state.stock.get(medication_id, 0),
        }, now)

    def _check_stock(self, outcome: Outcome, medication_id: str, compartment: int, now: datetime) -> None:
        remaining = self.state.stock.get(medication_id, 0)
        if remaining == 0:
            self._stock_empty(outcome, medication_id, compartment, now)
            return
        threshold = self._low_threshold(medication_id, now)
        if remaining < threshold and medication_id not in self.state.stock_low:
            draft = self._emit(outcome, EventType.STOCK_LOW, {
                "medication_id": medication_id, "compartment": compartment,
                "remaining": remaining, "threshold": threshold}, now)
            self._alert(outcome, AlertKind.STOCK_LOW, Severity.INFO,
                        f"Compartment {compartment} is running low: {remaining} left. Please refill it soon.",
                        [draft], now)

    def _low_threshold(self, medication_id: str, now: datetime) -> int:
        """Low means fewer pills than the next few days need (a day's maximum for as-needed ones)."""
        medication = self.state.schedule.medication(medication_id) if self.state.schedule else None
        if medication is None:
            return 0
        if medication.as_needed is not None:
            return medication.as_needed.max_units
        horizon = now + timedelta(days=STOCK_LOW_DAYS)
        return sum(d.quantity for d in self._doses_near(now)
                   if d.medication_id == medication_id and now < d.scheduled_at <= horizon)

    def _stock_empty(self, outcome: Outcome, medication_id: str, compartment: int, now: datetime) -> None:
        if medication_id in self.state.stock_empty:
            return
        draft = self._emit(outcome, EventType.STOCK_EMPTY, {
            "medication_id": medication_id, "compartment": compartment,
            "remaining": self.state.stock.get(medication_id, 0)}, now)
        self._alert(outcome, AlertKind.STOCK_EMPTY, Severity.WARNING,
                    f"Compartment {compartment} is empty: no dose can be given from it until it is refilled.",
                    [draft], now)

    # -- schedules ---------------------------------------------------------------------

    def apply_schedule(self, now: datetime, schedule: Schedule, source: ScheduleSource, digest: str | None = None,
                       key_id: str | None = None,
                       last_signed: tuple[int, datetime | None] | None = None,
                       stock: Mapping[str, int] | None = None) -> Outcome:
        """Put a validated schedule in force, or refuse it (stale version, missing compartment).

        From the clinic (`source` "mqtt", signed), the version and issued_at must be newer than
        those of the clinic's last schedule (`last_signed`), whatever a local apply claimed
        since: a local apply can never lock the clinic out. A local apply must be newer than
        the schedule in force, and raises an alert carrying its digest, so the clinic sees it.
        """
        outcome = self.tick(now)
        now = self.log_time(now)
        stale = self._staleness(schedule, source, last_signed)
        if stale:
            return outcome.extend(self.reject_schedule(now, schedule.version, source, RejectReason.STALE_VERSION, stale))
        missing = sorted(m.compartment for m in schedule.medications if m.compartment > self.compartments)
        if missing:
            return outcome.extend(self.reject_schedule(
                now, schedule.version, source, RejectReason.UNKNOWN_COMPARTMENT,
                [f"compartment {c}: the device has {self.compartments}" for c in missing]))
        outcome.schedule_document = schedule.document
        open_before = [r for r in self.state.doses.values() if r.status == DoseStatus.PENDING and r.due_logged]
        # As the schedule in force defines them now: a `dose.due` may have announced another window.
        defined = {d.key: d for d in self._live_doses(now)}
        self._pending_schedules[schedule.version] = schedule
        signed = source == ScheduleSource.MQTT
        applied = self._emit(outcome, EventType.SCHEDULE_APPLIED, {
            "version": schedule.version, "source": source, "issued_at": format_utc(schedule.issued_at),
            "digest": digest, **({"signed": True, "key_id": key_id} if signed else {"signed": False})}, now)
        self._pending_schedules.clear()
        self._expansion = None
        if not signed:
            self._alert(outcome, AlertKind.SCHEDULE_APPLIED_LOCALLY, Severity.INFO,
                        f"The schedule was changed at the dispenser, not by the clinic (version {schedule.version}, "
                        f"unsigned, sha256 {digest}). The clinic's next schedule replaces it.", [applied], now)
        still = {d.key for d in self._live_doses(now)}
        skipped = [self._emit(outcome, EventType.DOSE_SKIPPED,
                              dose_data(defined.get(record.key, record), reason="schedule_changed"), now)
                   for record in open_before if record.key not in still]
        if skipped:  # the person was being told to take them: never silent
            times = ", ".join(f"{self._local(r.scheduled_at)} (compartment {r.compartment})"
                              for r in open_before if r.key not in still)
            self._alert(outcome, AlertKind.DOSE_WITHDRAWN, Severity.WARNING,
                        f"A schedule change withdrew the dose(s) due now: {times}. "
                        f"They will not be given; check the new schedule is what was meant.", skipped, now)
        for medication_id, count in (stock or {}).items():  # loaded before any window is judged
            self._refilled(outcome, medication_id, count, now)
        outcome.feedback = Feedback.APPLIED
        return outcome.extend(self.tick(now))

    def _staleness(self, schedule: Schedule, source: ScheduleSource,
                   last_signed: tuple[int, datetime | None] | None) -> list[str]:
        """Why `schedule` is not newer than what it must replace (empty: it is newer)."""
        if source == ScheduleSource.MQTT:
            if last_signed is None:
                return []
            version, issued_at = last_signed
            problems = []
            if schedule.version <= version:
                problems.append(f"version: {schedule.version} is not newer than {version}, the clinic's last schedule")
            if issued_at is not None and schedule.issued_at <= issued_at:
                problems.append(f"issued_at: {format_utc(schedule.issued_at)} is not after {format_utc(issued_at)}, "
                                f"when the clinic's last schedule was issued")
            return problems
        current = self.state.schedule
        if current is not None and schedule.version <= current.version:
            return [f"version: {schedule.version} is not newer than {current.version}, the schedule in force"]
        return []

    def reject_schedule(self, now: datetime, version: int | None, source: ScheduleSource, reason: RejectReason,
                        problems: list[str]) -> Outcome:
        outcome = self.tick(now)  # its events settle time up to now, so time must be caught up first
        now = self.log_time(now)
        outcome.feedback, outcome.detail = Feedback.REJECTED, {"reason": reason, "problems": problems}
        draft = self._emit(outcome, EventType.SCHEDULE_REJECTED, {
            "version": version, "source": source, "reason": reason, "problems": problems[:20]}, now)
        if source == ScheduleSource.MQTT:
            self._alert(outcome, AlertKind.SCHEDULE_REJECTED, Severity.INFO,
                        f"A schedule change from the clinic was refused ({reason}); the schedule in force is unchanged.",
                        [draft], now)
        return outcome

    # -- the device itself ---------------------------------------------------------------

    def release_failed(self, now: datetime, release: Release, error: str) -> Outcome:
        """The servo raised: the dose is not tried again (pills may have dropped); a person must look."""
        return self._release_trouble(now, release, EventType.DOSE_RELEASE_FAILED, AlertKind.RELEASE_FAILED,
                                     {"error": error},
                                     f"Compartment {release.compartment} failed while releasing a dose. "
                                     f"Please check the device and the compartment.")

    def release_uncertain(self, now: datetime, release: Release, record: DoseRecord | None = None) -> Outcome:
        """The device stopped between the release intent and its end: never repeated, reported.

        `record` is the dose it released, when the caller found it before a catch-up could forget it.
        """
        return self._release_trouble(now, release, EventType.DOSE_RELEASE_UNCERTAIN, AlertKind.RELEASE_UNCERTAIN,
                                     {"release_event_id": release.event_id},
                                     f"The device restarted while releasing from compartment "
                                     f"{release.compartment}; it will not release that dose again. "
                                     f"Please check whether it was taken.", record)

    def _release_trouble(self, now: datetime, release: Release, kind: EventType, alert_kind: AlertKind, extra: dict,
                         message: str, record: DoseRecord | None = None) -> Outcome:
        if record is None:
            record = next((r for r in self.state.doses.values()
                           if r.released and r.released.event_id == release.event_id), None)  # before a tick may forget it
        outcome = self.tick(now)  # at a start: catch up on the downtime before anything settles it
        now = self.log_time(now)
        data = {"medication_id": release.medication_id, "compartment": release.compartment,
                "quantity": release.quantity, **extra}
        if record is not None and kind == EventType.DOSE_RELEASE_FAILED:
            data = dose_data(record, **extra)
        elif record is not None:
            data["scheduled_at"] = format_utc(record.scheduled_at)
        draft = self._emit(outcome, kind, data, now)
        self._alert(outcome, alert_kind, Severity.CRITICAL, message, [draft], now)
        return outcome

    def release_unseen(self, now: datetime, release: Release, seen: int) -> Outcome:
        """The drop sensor saw fewer pills than the release gave: `dose.release_failed`.

        `reason` is what the device can tell: `empty` when the compartment's count says it
        gave its last pills, else `jam`. The dose stays releasable in its window, but its
        release keeps counting for section 6 (the pill may have fallen unseen, or may fall
        later), so a second pill goes out only where section 6 allows it on top of the
        first; and the compartment gives nothing until a person refills it.
        docs/RULES.md, "The lid and the drop sensor".
        """
        load = self.state.loads.get(release.compartment)
        reason = FailReason.EMPTY if load is None or load.count == 0 else FailReason.JAM
        what = "empty" if reason == FailReason.EMPTY else "jammed"
        return self._release_trouble(
            now, release, EventType.DOSE_RELEASE_FAILED, AlertKind.RELEASE_FAILED,
            {"reason": reason, "seen": seen, "release_event_id": release.event_id},
            f"Compartment {release.compartment} opened to release a dose but no pill was seen falling: "
            f"it looks {what}. It gives nothing more until it is refilled. The dispenser counts the pill "
            f"as given and will not give a second one beyond the day's plan: please check the compartment, "
            f"the chute and whether the person got the pill.")

    def lid(self, now: datetime, opened: bool) -> Outcome:
        """The lid switch changed: `lid.opened` (with `during` when a release or a refill explains
        it) or `lid.closed`; an unexplained opening becomes a tamper alert later (`_tamper`)."""
        outcome = self.tick(now)
        now = self.log_time(now)
        lid = self.state.lid
        if opened == lid.open:
            return outcome  # no change the log does not know (a bounce, the shut lid at start)
        if opened:
            during = opened_during(lid, now)
            self._emit(outcome, EventType.LID_OPENED, {"during": during} if during else {}, now)
        else:
            self._emit(outcome, EventType.LID_CLOSED, {}, now)
        return outcome

    def _tamper(self, outcome: Outcome, now: datetime) -> None:
        """An opening no release or refill explained, its grace over: the caregiver hears."""
        due, unexplained = tamper_due_at(self.state.lid), self.state.lid.unexplained
        if due is None or unexplained is None or now < due or self.time_unknown(now):
            return
        event_id, opened, shut = unexplained
        still = "" if shut is not None else " and is still open"
        self._emit(outcome, EventType.ALERT_RAISED, {
            "alert_id": self.new_id(), "kind": TAMPER_ALERT, "severity": Severity.WARNING,
            "message": f"The dispenser's lid was opened at {self._local(opened)}{still}, when no dose was "
                       f"being released and no refill followed. Please check that no pills are missing.",
            "events": [event_id]}, self.log_time(now))

    def pill_outside_release(self, now: datetime, count: int) -> Outcome:
        """The drop sensor saw pills no release gave (one falling late from a jam, two for one)."""
        outcome = self.tick(now)
        now = self.log_time(now)
        draft = self._emit(outcome, EventType.PILL_UNEXPECTED, {"count": count}, now)
        self._alert(outcome, AlertKind.PILL_UNEXPECTED, Severity.WARNING,
                    f"The dispenser saw {count} pill(s) fall that no release gave (a pill stuck earlier, "
                    f"or more than one at once). Please check what the person received.", [draft], now)
        return outcome

    def fault(self, now: datetime, component: str, error: str) -> Outcome:
        outcome = self.tick(now)
        now = self.log_time(now)
        draft = self._emit(outcome, EventType.DEVICE_FAULT, {"component": component, "error": error}, now)
        self._alert(outcome, AlertKind.DEVICE_FAULT, Severity.WARNING,
                    f"The dispenser reports a problem with its {component}. It keeps dispensing what it can.",
                    [draft], now)
        return outcome

    def clock_changed(self, now: datetime) -> Outcome:
        """Log that the clock became trusted or untrusted, so the log says when time stood still."""
        outcome = Outcome()
        kind = EventType.CLOCK_SYNCHRONIZED if self.clock_trusted else EventType.CLOCK_UNSYNCHRONIZED
        self._emit(outcome, kind, {}, self.log_time(now))
        return outcome

    def clock_unsynchronized(self, now: datetime, minutes: int) -> Outcome:
        """The clock has not been trusted for a while, so doses are held: the clinic must know."""
        outcome = Outcome()
        self._alert(outcome, AlertKind.CLOCK_UNSYNCHRONIZED, Severity.WARNING,
                    f"The dispenser has not been able to confirm the time for {minutes} minutes, so it "
                    f"holds every dose until it can. Check its internet connection.", [], self.log_time(now))
        return outcome

    def start(self, now: datetime, open_releases: list[Release], software: str) -> Outcome:
        """After a start: report releases a stop interrupted, then catch up on what passed meanwhile.

        Only the catch-up's first step is here: after a long downtime the engine commits the
        other slices (`catch_up`). The interrupted releases are reported before it, so that
        their reports go in the transaction that closes their intents.
        """
        raw, now = now, self.log_time(now)
        outcome = Outcome()
        self._emit(outcome, EventType.DEVICE_STARTED, {
            "software": software,
            "schedule_version": self.state.schedule.version if self.state.schedule else None}, now)
        # The doses they released, found before the catch-up (in the first report) forgets old records.
        released = {r.released.event_id: r for r in self.state.doses.values() if r.released and r.released.event_id}
        judged = self.state.settled_until, self.state.unjudged
        self._paused = True
        try:
            for release in open_releases:
                outcome.extend(self.release_uncertain(now, release, released.get(release.event_id)))
        finally:
            self._paused = False
        self.state.settled_until, self.state.unjudged = judged  # the reports judged no window
        outcome.extend(self.catch_up(raw))
        settled = self.state.settled_until
        if settled is not None and settled < now and outcome.drafts[-1].type not in BEFORE_CATCH_UP:
            # The reports settle no window, nor a slice cut short: the log must say so too.
            outcome.drafts[-1].data["caught_up_to"] = format_at(settled)
        return outcome

    def stop(self, now: datetime) -> Outcome:
        outcome = self.tick(now)
        self._emit(outcome, EventType.DEVICE_STOPPED, {}, self.log_time(now))
        return outcome

    def checkin(self, now: datetime, mood: int | None, side_effects: str | None,
                medication_ids: list[str]) -> Outcome:
        """How the person feels after a dose. Strong side effects or the lowest mood reach the clinic."""
        outcome = self.tick(now)
        now = self.log_time(now)
        draft = self._emit(outcome, EventType.CHECKIN_RECORDED, {
            "mood": mood, "side_effects": side_effects, "medications": medication_ids}, now)
        if side_effects == SideEffects.STRONG:
            self._alert(outcome, AlertKind.SIDE_EFFECTS_REPORTED, Severity.WARNING,
                        "The person reported strong side effects after a dose today.", [draft], now)
        if mood == 1:
            self._alert(outcome, AlertKind.LOW_MOOD_REPORTED, Severity.WARNING,
                        "The person reported feeling very bad (1 of 5) after a dose today.", [draft], now)
        return outcome

    def _local(self, moment: datetime) -> str:
        tz = self.state.schedule.tz if self.state.schedule else None
        return moment.astimezone(tz).strftime("%H:%M") if tz else moment.strftime("%H:%M UTC")


def _scheduled_at(dose: Dose) -> datetime:
    return dose.scheduled_at


def _in_bounds(prn: AsNeeded, now: datetime) -> bool:
    return (prn.bounds_start is None or prn.bounds_start <= now) and \
        (prn.bounds_end is None or now < prn.bounds_end)


