"""What each page shows, gathered from the database for the templates: the overview (who
needs attention first) and one patient's page. The overview's states, last events and
open alerts are `care status --json`'s own (`status_report`), so the two always agree.

Each page reads only the days it shows (the index on (device, at)): a patient's page the
90 days of its longest adherence table (and REACH before them, for the events of doses
scheduled at their start), the overview today's doses; so a page costs the same after ten
years of events as after one month (bench/care_web.py)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..cli import status_report
from ..config import CareConfig, Patient
from ..database import Connection
from ..message import describe
from ...report import REACH
from . import history, queries
from .charts import mood_chart

SEVERITY_RANK = {"critical": 3, "warning": 2, "info": 1}
TREND_DAYS = 30


@dataclass(frozen=True)
class OverviewRow:
    device: str
    name: str
    online: bool | None
    since: str | None
    last_event: dict | None
    open_alerts: int
    worst: str | None          # the most severe open alert's severity
    missed_today: int

    def attention(self) -> tuple:
        """Sort key, most urgent first: the worst open alert, offline, doses missed today, alerts."""
        return (-SEVERITY_RANK.get(self.worst or "", 0), self.online is not False,
                -self.missed_today, -self.open_alerts, self.name.lower())


def overview(conn: Connection, config: CareConfig, now: datetime) -> list[OverviewRow]:
    """Every configured patient, most urgent first."""
    report = {entry["device"]: entry for entry in status_report(conn, config, now)["devices"]}
    rows = []
    for patient in config.patients:
        entry = report[patient.device]
        today = now.astimezone(patient.tz).replace(hour=0, minute=0, second=0, microsecond=0)
        marks = history.dose_marks(queries.events_since(conn, patient.device, today - REACH), patient.tz)
        severities = [alert["severity"] for alert in entry["open_alerts"]]
        worst = max(severities, key=lambda s: SEVERITY_RANK.get(s, 0)) if severities else None
        rows.append(OverviewRow(patient.device, patient.name, entry["online"], entry["since"], entry["last_event"],
                                len(entry["open_alerts"]), worst,
                                history.missed_on(marks, now.astimezone(patient.tz).date(), patient.tz)))
    return sorted(rows, key=OverviewRow.attention)


def patient_page(conn: Connection, config: CareConfig, patient: Patient, now: datetime) -> dict[str, Any]:
    """The template context of one patient's page."""
    tz = patient.tz
    since = now - timedelta(days=max(history.PERIODS)) - REACH
    events = queries.events_since(conn, patient.device, since)
    marks = history.dose_marks(events, tz)
    status = status_report(conn, config, now, only=patient.device)["devices"][0]
    periods = history.adherence_periods(events, now, tz)
    medications = sorted({name for reports in periods.values() for name in reports})
    trend_start = now - timedelta(days=TREND_DAYS)
    checkins = history.checkins(events, trend_start, now)
    alerts = [(alert, describe(alert.kind)) for alert in queries.open_alerts(conn, patient.device)]
    return {
        "patient": patient, "status": status, "now": now, "today": now.astimezone(tz).date(),
        "weeks": history.calendar(marks, now.astimezone(tz).date(), tz),
        "periods": periods, "medications": medications,
        "chart": mood_chart(checkins, trend_start, now), "checkins": checkins, "trend_days": TREND_DAYS,
        "stock": history.stock(_with_stock_counts(conn, patient.device, events, since), marks, now),
        "alerts": alerts, "labels": history.LABELS,
    }


def _with_stock_counts(conn: Connection, device: str, events: list[dict], since: datetime) -> list[dict]:
    """The page's window, preceded by what stock needs from before it: for each medication
    of the window whose count was last set earlier (a refill two months ago), that count
    and the releases since. A medication nothing in the window names is not shown."""
    named = {data["medication_id"] for data in (event.get("data") or {} for event in events)
             if isinstance(data.get("medication_id"), str)}
    counted = {(event.get("data") or {}).get("medication_id") for event in events if queries.sets_count(event)}
    if named <= counted:
        return events
    return queries.stock_before(conn, device, since, named - counted) + events
