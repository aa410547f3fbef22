"""Pure: one patient's stored events -> what their page shows (doses per day, adherence,
check-ins, stock). Every dose's outcome comes from dispenser/report.py's `adherence`, so
the page's numbers are the ones `dispenser report --json` prints for the same events.

    marks = dose_marks(events, tz)
    weeks = calendar(marks, today, days=28)
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from ...report import OUTCOMES, MedicationReport, adherence
from ...timeutil import parse_utc

PERIODS = (7, 30, 90)
CALENDAR_DAYS = 28
USE_DAYS = 7          # days left = what is in the compartment / the daily use over this many days
# The calendar's words for each outcome; "held": held back by the safety rules (docs/RULES.md).
LABELS = {"on_time": "on time", "late": "late", "confirmed_late": "confirmed late", "unconfirmed": "unconfirmed",
          "missed": "missed", "held": "held", "skipped": "skipped", "failed": "failed", "pending": "pending"}


@dataclass(frozen=True)
class DoseMark:
    """One scheduled dose and how it went."""

    medication_id: str
    scheduled_at: datetime
    outcome: str          # a key of LABELS

    @property
    def label(self) -> str:
        return LABELS[self.outcome]


@dataclass(frozen=True)
class Day:
    day: date
    marks: tuple[DoseMark, ...]
    in_range: bool       # False for the padding days that fill the first and last week


@dataclass(frozen=True)
class Checkin:
    at: datetime
    mood: int | None
    side_effects: str | None


@dataclass(frozen=True)
class Stock:
    medication_id: str
    count: int
    per_day: float | None    # pills used a day over the last USE_DAYS days
    days_left: float | None


def dose_marks(events: list[dict], tz: ZoneInfo) -> list[DoseMark]:
    """Every scheduled dose named in the events, with its outcome, oldest first."""
    per_dose: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for event in events:
        data = event.get("data") or {}
        if event["type"].startswith("dose.") and "scheduled_at" in data and "medication_id" in data:
            per_dose[(data["medication_id"], data["scheduled_at"])].append(event)
    marks = []
    for (medication_id, scheduled_text), group in per_dose.items():
        scheduled = parse_utc(scheduled_text)
        report = adherence(group, scheduled, scheduled + timedelta(seconds=1), tz)[medication_id]
        outcome = next((name for name in (*OUTCOMES, "pending") if getattr(report, name)), "pending")
        if outcome == "pending" and any(event["type"] == "dose.held" for event in group):
            outcome = "held"
        marks.append(DoseMark(medication_id, scheduled, outcome))
    return sorted(marks, key=lambda mark: (mark.scheduled_at, mark.medication_id))


def calendar(marks: list[DoseMark], today: date, tz: ZoneInfo, days: int = CALENDAR_DAYS) -> list[list[Day]]:
    """Weeks (Monday first) covering the `days` local days up to `today`, each day with its doses."""
    first = today - timedelta(days=days - 1)
    by_day: dict[date, list[DoseMark]] = defaultdict(list)
    for mark in marks:
        by_day[mark.scheduled_at.astimezone(tz).date()].append(mark)
    start = first - timedelta(days=first.weekday())
    end = today + timedelta(days=6 - today.weekday())
    weeks: list[list[Day]] = []
    day = start
    while day <= end:
        if day.weekday() == 0:
            weeks.append([])
        weeks[-1].append(Day(day, tuple(by_day.get(day, ())), first <= day <= today))
        day += timedelta(days=1)
    return weeks


def adherence_periods(events: list[dict], now: datetime, tz: ZoneInfo) -> dict[int, dict[str, MedicationReport]]:
    """`dispenser report --days N` for N in 7, 30, 90, over the same events."""
    return {days: adherence(events, now - timedelta(days=days), now, tz) for days in PERIODS}


def checkins(events: list[dict], start: datetime, end: datetime) -> list[Checkin]:
    """The check-ins logged in [start, end), oldest first."""
    found = []
    for event in events:
        if event["type"] != "checkin.recorded":
            continue
        at = parse_utc(event["at"])
        if start <= at < end:
            data = event.get("data") or {}
            mood = data.get("mood")
            found.append(Checkin(at, mood if isinstance(mood, int) else None, data.get("side_effects")))
    return found


def stock(events: list[dict], marks: list[DoseMark], now: datetime) -> list[Stock]:
    """What each compartment holds by the log (refills, releases, the device's own counts)
    and how many days that lasts at the last week's use."""
    count: dict[str, int] = {}
    used: dict[str, int] = defaultdict(int)
    since = now - timedelta(days=USE_DAYS)
    for event in events:
        data = event.get("data") or {}
        medication_id = data.get("medication_id")
        if not isinstance(medication_id, str):
            continue
        kind = event["type"]
        if kind == "stock.refilled":
            count[medication_id] = int(data["count"])
        elif kind in ("dose.released", "prn.released"):
            count[medication_id] = max(0, count.get(medication_id, 0) - int(data.get("quantity", 1)))
            if parse_utc(event["at"]) >= since:
                used[medication_id] += int(data.get("quantity", 1))
        elif kind in ("stock.low", "stock.empty") and isinstance(data.get("remaining"), int):
            count[medication_id] = data["remaining"]
    # Scheduled doses of the week that were not taken still count as use: the person needs them.
    for mark in marks:
        if since <= mark.scheduled_at < now and mark.outcome in ("missed", "held", "failed"):
            used[mark.medication_id] += 1
    rows = []
    for medication_id in sorted(count):
        per_day = used[medication_id] / USE_DAYS if used[medication_id] else None
        rows.append(Stock(medication_id, count[medication_id], per_day,
                          None if per_day is None else count[medication_id] / per_day))
    return rows


def missed_on(marks: list[DoseMark], day: date, tz: ZoneInfo) -> int:
    """Doses missed on one local day (the overview's "missed today")."""
    return sum(1 for mark in marks if mark.outcome == "missed" and mark.scheduled_at.astimezone(tz).date() == day)
