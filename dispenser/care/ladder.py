"""Pure: who is told of which alerts, and when. A function of now and the alerts' state.

The ladder (contract section 7): an alert goes first to the patient's people (`notify`,
rung 1), then to the clinic (`clinic_notify`, rung 2) once it has stayed unacknowledged
for `escalate_after_min` after rung 1 went out. An alert meant for the clinic (a
broken log, a pattern) or a patient without `notify` goes to rung 2 at once. During
the patient's quiet hours only critical alerts go out; the rest wait for the morning.
A new alert waits `batch_s` for others of its device, so a device back after days,
whose backlog arrives in a burst, is told in one message (never longer than
6 x `batch_s`, so a steady stream cannot hold it back). Acknowledged or resolved
alerts are never sent again. A send that failed is tried again from `retry_at`.

    sends = plan(now, alerts, patients, settings)
    for send in sends: ...deliver, then record rung and time on each of send.alerts
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from .config import AlertSettings, Patient

PEOPLE, CLINIC = 1, 2
BATCH_LIMIT = 6          # a new alert waits at most this many batch_s for others to join it


@dataclass(frozen=True)
class AlertState:
    """What the ladder needs of one stored alert. `rung`: 0 nobody told yet, 1 the
    patient's people, 2 the clinic. `audience`: "people" or "clinic" (who it is for first)."""

    alert_id: str
    device: str
    kind: str
    severity: str
    audience: str
    at: datetime               # when it happened (the device's clock for a device's alert)
    received: datetime         # when the care service stored it
    rung: int = 0
    notified_at: datetime | None = None
    retry_at: datetime | None = None
    acked: bool = False
    resolved: bool = False

    @property
    def open(self) -> bool:
        return not self.acked and not self.resolved


@dataclass(frozen=True)
class Send:
    """One message: these alerts of one device to one rung's URLs."""

    device: str
    rung: int
    urls: tuple[str, ...]
    alerts: tuple[AlertState, ...]


def quiet(patient: Patient, now: datetime) -> bool:
    """Whether it is the patient's quiet hours at `now` (in the patient's time zone)."""
    if patient.quiet_hours is None:
        return False
    return patient.quiet_hours.covers(now.astimezone(patient.tz).time().replace(tzinfo=None))


def held(alert: AlertState, patient: Patient, now: datetime) -> bool:
    """Quiet hours hold all but critical alerts; a failed send waits for its retry time."""
    if alert.retry_at is not None and now < alert.retry_at:
        return True
    return alert.severity != "critical" and quiet(patient, now)


def next_rung(alert: AlertState, patient: Patient, now: datetime) -> int | None:
    """The rung this alert should go to now, or None (not yet, never, or nobody to tell)."""
    if not alert.open or alert.rung >= CLINIC:
        return None
    if alert.rung == 0:
        if alert.audience == "people" and patient.notify:
            return PEOPLE
        return CLINIC if patient.clinic_notify else None
    waited = alert.notified_at is not None and now - alert.notified_at >= timedelta(minutes=patient.escalate_after_min)
    return CLINIC if waited and patient.clinic_notify else None


def batch_ready(fresh: list[AlertState], now: datetime, settings: AlertSettings) -> bool:
    """New alerts of one device go once the newest has waited batch_s (or the oldest 6x that)."""
    batch = timedelta(seconds=settings.batch_s)
    newest = max(alert.received for alert in fresh)
    oldest = min(alert.received for alert in fresh)
    return now - newest >= batch or now - oldest >= BATCH_LIMIT * batch


def plan(now: datetime, alerts: list[AlertState], patients: dict[str, Patient],
         settings: AlertSettings) -> list[Send]:
    """Every message due at `now`: one per device and rung, its alerts oldest first."""
    groups: dict[tuple[str, int], list[AlertState]] = {}
    for alert in alerts:
        patient = patients.get(alert.device)
        if patient is None or held(alert, patient, now):
            continue
        rung = next_rung(alert, patient, now)
        if rung is not None:
            groups.setdefault((alert.device, rung), []).append(alert)
    sends = []
    for (device, rung), due in sorted(groups.items()):
        fresh = [alert for alert in due if alert.rung == 0]
        if fresh and not batch_ready(fresh, now, settings):
            due = [alert for alert in due if alert.rung != 0]   # escalations never wait for a batch
        if not due:
            continue
        patient = patients[device]
        urls = patient.notify if rung == PEOPLE else patient.clinic_notify
        sends.append(Send(device, rung, urls, tuple(sorted(due, key=lambda a: (a.at, a.alert_id)))))
    return sends


def offline_due(online: bool | None, since: datetime | None, last_heard: datetime | None,
                patient: Patient, now: datetime) -> datetime | None:
    """When the device went quiet, if that makes it offline now; else None.

    Offline: its retained status says `{"online": false}` (the Last Will, or a clean stop)
    since `offline_after_min` or more; or no status was ever heard and nothing else for
    that long. A standing `{"online": true}` means connected: the broker replaces it by
    the Last Will when the connection dies, so an idle device is not offline.
    """
    limit = timedelta(minutes=patient.offline_after_min)
    if online is False and since is not None and now - since >= limit:
        return since
    if online is None and last_heard is not None and now - last_heard >= limit:
        return last_heard
    return None
