"""Adherence per medication, computed from the log alone.

Definitions (docs/RULES.md, "The report", says the same for clinicians):
- on time: released no later than 30 minutes after its scheduled time, then confirmed;
- late: released later than that but inside its window, then confirmed;
- unconfirmed: released, never confirmed;
- missed: never released before its window closed (`missed_unavailable` counts those
  whose window closed while the dispenser was off or waiting for a trusted clock: the
  person could not have taken them from it);
- skipped: withdrawn by a schedule change while due;
- failed: the compartment failed while releasing it (or a restart interrupted it);
- PDC (proportion of days covered): of the local days on which the medication had
  scheduled doses, the share on which every dose was released.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from .timeutil import parse_utc

ON_TIME = timedelta(minutes=30)
OUTCOMES = ("on_time", "late", "unconfirmed", "missed", "skipped", "failed")


@dataclass
class MedicationReport:
    medication_id: str
    on_time: int = 0
    late: int = 0
    unconfirmed: int = 0
    missed: int = 0
    missed_unavailable: int = 0
    skipped: int = 0
    failed: int = 0
    pending: int = 0
    prn_released: int = 0
    prn_denied: int = 0
    pdc: float | None = None
    days: dict = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict:
        data = {name: getattr(self, name) for name in ("medication_id", *OUTCOMES, "missed_unavailable",
                                                        "pending", "prn_released", "prn_denied")}
        data["pdc"] = None if self.pdc is None else round(self.pdc, 3)
        return data


@dataclass
class CheckinTrend:
    count: int = 0
    mood_mean: float | None = None
    side_effects: dict = field(default_factory=dict)


def adherence(events: list[dict], start: datetime, end: datetime, tz: ZoneInfo) -> dict[str, MedicationReport]:
    """Reports for doses scheduled in [start, end) and as-needed events logged in it."""
    doses: dict[tuple[str, str], dict] = defaultdict(dict)
    reports: dict[str, MedicationReport] = {}

    def report(medication_id: str) -> MedicationReport:
        return reports.setdefault(medication_id, MedicationReport(medication_id))

    for event in events:
        kind, data = event["type"], event["data"]
        if kind == "prn.released" and start <= parse_utc(event["at"]) < end:
            report(data["medication_id"]).prn_released += 1
        if kind == "prn.denied" and start <= parse_utc(event["at"]) < end:
            report(data["medication_id"]).prn_denied += 1
        if not kind.startswith("dose.") or "scheduled_at" not in data:
            continue
        scheduled = parse_utc(data["scheduled_at"])
        if not start <= scheduled < end:
            continue
        dose = doses[(data["medication_id"], data["scheduled_at"])]
        dose["scheduled"] = scheduled
        dose.setdefault("window_end", data.get("window_end"))
        dose[kind] = parse_utc(event["at"])
        if kind == "dose.missed" and data.get("while"):
            dose["unavailable"] = True
    for (medication_id, _), dose in doses.items():
        outcome = _outcome(dose)
        medication = report(medication_id)
        setattr(medication, outcome, getattr(medication, outcome) + 1)
        if outcome == "missed" and dose.get("unavailable"):
            medication.missed_unavailable += 1
        day = dose["scheduled"].astimezone(tz).date()
        covered = outcome in ("on_time", "late", "unconfirmed")
        medication.days[day] = medication.days.get(day, True) and covered
    for medication in reports.values():
        if medication.days:
            medication.pdc = sum(medication.days.values()) / len(medication.days)
    return dict(sorted(reports.items()))


def _outcome(dose: dict) -> str:
    if "dose.release_failed" in dose or "dose.release_uncertain" in dose:
        return "failed"
    if "dose.released" in dose:
        if "dose.taken" in dose:
            return "on_time" if dose["dose.released"] <= dose["scheduled"] + ON_TIME else "late"
        return "unconfirmed" if "dose.unconfirmed" in dose else "pending"
    if "dose.missed" in dose:
        return "missed"
    if "dose.skipped" in dose:
        return "skipped"
    return "pending"


def checkin_trend(events: list[dict], start: datetime, end: datetime) -> CheckinTrend:
    """How the person said they felt after doses (1 to 5) and the side effects they reported."""
    moods, effects = [], defaultdict(int)
    for event in events:
        if event["type"] != "checkin.recorded" or not start <= parse_utc(event["at"]) < end:
            continue
        if event["data"].get("mood") is not None:
            moods.append(event["data"]["mood"])
        if event["data"].get("side_effects"):
            effects[event["data"]["side_effects"]] += 1
    return CheckinTrend(len(moods), round(sum(moods) / len(moods), 2) if moods else None, dict(effects))
