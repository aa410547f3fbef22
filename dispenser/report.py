"""Adherence per medication, computed from the log alone.

Definitions (docs/RULES.md, "The report", says the same for clinicians):
- on time: released no later than 30 minutes after its scheduled time, and confirmed
  (`dose.taken`) by its confirmation deadline: the end of the dose's window, or 15
  minutes after the release when that is later;
- late: released later than that but inside its window, and confirmed by that deadline;
- confirmed late: released, but confirmed only after the deadline (a press the next
  morning): it may have been taken, but the log cannot say when, so it is not counted
  as taken;
- unconfirmed: released, never confirmed;
- missed: never released before its window closed (`missed_unavailable` counts those
  whose window closed while the dispenser was off or waiting for a trusted clock: the
  person could not have taken them from it);
- skipped: withdrawn by a schedule change while due;
- failed: the compartment failed while releasing it (or a restart interrupted it) and it
  was not released again. A dose released again after a pill not seen (docs/RULES.md, "The
  lid and the drop sensor") counts by that release and its confirmation, as any other;
  `release_failures` still counts every failed or interrupted release;
- days all taken: of the local days on which the medication had settled scheduled
  doses, the share on which every dose was taken (on time or late). Skipped doses are
  not asked for; a day with a dose still pending is not counted yet. This is not PQA's
  PDC (proportion of days covered), which counts days' supply from pharmacy claims.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import TYPE_CHECKING

from .timeutil import parse_utc
from .vocabulary import AdherenceOutcome, EventType

if TYPE_CHECKING:
    from .store import Store

ON_TIME = timedelta(minutes=30)
# Every event about a dose is logged at or after its window opened, at most a day before the
# dose (scheduler.py): a report from `start` reads the log from this long before it, no more.
REACH = timedelta(days=2)
CONFIRM_AFTER = timedelta(minutes=15)  # as rules.CONFIRM_AFTER: a release waits this long for its press
# The report's columns: every outcome but `pending` (a dose not judged yet).
OUTCOMES = tuple(o for o in AdherenceOutcome if o is not AdherenceOutcome.PENDING)
TAKEN = (AdherenceOutcome.ON_TIME, AdherenceOutcome.LATE)


@dataclass
class MedicationReport:
    medication_id: str
    on_time: int = 0
    late: int = 0
    confirmed_late: int = 0
    unconfirmed: int = 0
    missed: int = 0
    missed_unavailable: int = 0
    release_failures: int = 0  # failed or interrupted releases, given on a retry or not
    skipped: int = 0
    failed: int = 0
    pending: int = 0
    prn_released: int = 0
    prn_denied: int = 0
    days_all_taken: float | None = None
    days: dict = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict:
        data = {name: getattr(self, name) for name in ("medication_id", *OUTCOMES, "missed_unavailable",
                                                        "release_failures", "pending", "prn_released",
                                                        "prn_denied")}
        data["days_all_taken"] = None if self.days_all_taken is None else round(self.days_all_taken, 3)
        return data


@dataclass
class CheckinTrend:
    count: int = 0
    mood_mean: float | None = None
    side_effects: dict = field(default_factory=dict)


def window_events(store: "Store", start: datetime) -> list[dict]:
    """The events a report from `start` needs: those logged from REACH before it on.

    `at` never decreases along the log, so the index on `at` gives the first seq and the
    rest is read by seq: the cost is the window's, not the log's.
    """
    return list(store.events(since_seq=store.first_seq_at(start - REACH) - 1))


def adherence(events: list[dict], start: datetime, end: datetime, tz: tzinfo) -> dict[str, MedicationReport]:
    """Reports for doses scheduled in [start, end) and as-needed events logged in it."""
    doses: dict[tuple[str, str], dict] = defaultdict(dict)
    reports: dict[str, MedicationReport] = {}

    def report(medication_id: str) -> MedicationReport:
        return reports.setdefault(medication_id, MedicationReport(medication_id))

    for event in events:
        kind, data = event["type"], event["data"]
        if kind == EventType.PRN_RELEASED and start <= parse_utc(event["at"]) < end:
            report(data["medication_id"]).prn_released += 1
        if kind == EventType.PRN_DENIED and start <= parse_utc(event["at"]) < end:
            report(data["medication_id"]).prn_denied += 1
        if not kind.startswith("dose.") or "scheduled_at" not in data:
            continue
        scheduled = parse_utc(data["scheduled_at"])
        if not start <= scheduled < end:
            continue
        dose = doses[(data["medication_id"], data["scheduled_at"])]
        dose["scheduled"] = scheduled
        if kind == EventType.DOSE_RELEASED and data.get("window_end"):
            dose["window_end"] = parse_utc(data["window_end"])  # the window it was released in
        if kind == EventType.DOSE_RELEASED:
            # The last release is the one that gave the dose: a retry after a pill not seen
            # replaces the failed one, and only what follows it says how it was taken.
            for replaced in (EventType.DOSE_RELEASE_FAILED, EventType.DOSE_TAKEN, EventType.DOSE_UNCONFIRMED):
                dose.pop(replaced, None)
            dose[kind] = parse_utc(event["at"])
        elif kind in (EventType.DOSE_RELEASE_FAILED, EventType.DOSE_RELEASE_UNCERTAIN):
            dose["failures"] = dose.get("failures", 0) + 1
            dose[EventType.DOSE_RELEASE_FAILED] = parse_utc(event["at"])
        else:
            dose.setdefault(kind, parse_utc(event["at"]))
        if kind == EventType.DOSE_MISSED and data.get("while"):
            dose["unavailable"] = True
    for (medication_id, _), dose in doses.items():
        outcome = _outcome(dose)
        medication = report(medication_id)
        setattr(medication, outcome, getattr(medication, outcome) + 1)
        if outcome == AdherenceOutcome.MISSED and dose.get("unavailable"):
            medication.missed_unavailable += 1
        medication.release_failures += dose.get("failures", 0)
        day = dose["scheduled"].astimezone(tz).date()
        if outcome == AdherenceOutcome.SKIPPED:
            continue  # withdrawn by the clinic: not asked of the person
        # None: a dose of that day is still pending, so the day is not judged yet.
        taken = None if outcome == AdherenceOutcome.PENDING else outcome in TAKEN
        before = medication.days.get(day, True)
        medication.days[day] = None if before is None or taken is None else before and taken
    for medication in reports.values():
        judged = [taken for taken in medication.days.values() if taken is not None]
        if judged:
            medication.days_all_taken = sum(judged) / len(judged)
    return dict(sorted(reports.items()))


def _outcome(dose: dict) -> AdherenceOutcome:
    if EventType.DOSE_RELEASE_FAILED in dose:  # its last release failed (or was interrupted)
        return AdherenceOutcome.FAILED
    if EventType.DOSE_RELEASED in dose:
        released = dose[EventType.DOSE_RELEASED]
        if EventType.DOSE_TAKEN in dose:
            if dose[EventType.DOSE_TAKEN] > confirm_deadline(released, dose.get("window_end")):
                return AdherenceOutcome.CONFIRMED_LATE
            return AdherenceOutcome.ON_TIME if released <= dose["scheduled"] + ON_TIME else AdherenceOutcome.LATE
        return AdherenceOutcome.UNCONFIRMED if EventType.DOSE_UNCONFIRMED in dose else AdherenceOutcome.PENDING
    if EventType.DOSE_MISSED in dose:
        return AdherenceOutcome.MISSED
    if EventType.DOSE_SKIPPED in dose:
        return AdherenceOutcome.SKIPPED
    return AdherenceOutcome.PENDING


def confirm_deadline(released: datetime, window_end: datetime | None) -> datetime:
    """The latest confirmation that still says the dose was taken: the window's end, or 15
    minutes after the release when that is later (a release near the end of its window)."""
    grace = released + CONFIRM_AFTER
    return grace if window_end is None else max(window_end, grace)


def checkin_trend(events: list[dict], start: datetime, end: datetime) -> CheckinTrend:
    """How the person said they felt after doses (1 to 5) and the side effects they reported."""
    moods: list[int] = []
    effects: defaultdict[str, int] = defaultdict(int)
    for event in events:
        if event["type"] != EventType.CHECKIN_RECORDED or not start <= parse_utc(event["at"]) < end:
            continue
        if event["data"].get("mood") is not None:
            moods.append(event["data"]["mood"])
        if event["data"].get("side_effects"):
            effects[event["data"]["side_effects"]] += 1
    return CheckinTrend(len(moods), round(sum(moods) / len(moods), 2) if moods else None, dict(effects))
