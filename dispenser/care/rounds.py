"""The timer's round, every `tick_s`: offline devices, gaps that stayed open, then the ladder.

The decisions are pure (ladder.py, chain.missing); this reads their inputs from the
database, raises the alerts they find, delivers the ladder's messages and records each
send on its alerts (rung, time) so that the next round carries on from there. `now` is
an argument: tests drive the ladder's clock, the service passes the wall clock.

    sent = care_round(conn, config, now, deliver)   # -> the Sends delivered
"""
from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Callable

from ..timeutil import format_at, parse_utc
from . import chain
from .config import CareConfig
from .database import Connection
from .ingest import care_alert_id, insert_alert
from .ladder import CLINIC, AlertState, Send, offline_due, plan
from .message import compose
from .tokens import issue_ack_tokens

Deliver = Callable[[tuple[str, ...], str, str], bool]


def care_round(conn: Connection, config: CareConfig, now: datetime, deliver: Deliver) -> list[Send]:
    """One round; returns the messages that went out."""
    find_offline(conn, config, now)
    find_gaps(conn, config, now)
    return run_ladder(conn, config, now, deliver)


def _time(text: str | None) -> datetime | None:
    return parse_utc(text) if text else None


def find_offline(conn: Connection, config: CareConfig, now: datetime) -> None:
    """"Device offline", the one alert a device cannot send itself: from its Last Will or silence."""
    for patient in config.patients:
        rows = conn.execute("SELECT online, status_since, last_heard FROM devices WHERE device = ?", (patient.device,))
        if not rows:
            continue
        online, since, heard = rows[0]
        went = offline_due(None if online is None else bool(online), _time(since), _time(heard), patient, now)
        if went is None:
            continue
        how = "its Last Will (the broker lost it)" if online is not None else "silence"
        with conn.transaction():
            insert_alert(conn, alert_id=care_alert_id(patient.device, f"offline:{format_at(went)}"),
                         device=patient.device, kind="device_offline", severity="warning", audience="people",
                         origin="care", detail=f"offline since {format_at(went)} by {how}", evidence=[],
                         at=went, now=now)


def find_gaps(conn: Connection, config: CareConfig, now: datetime) -> None:
    """A gap in a device's log still open `gap_after_s` after it appeared: a clinic alert."""
    limit = format_at(now - timedelta(seconds=config.alerts.gap_after_s))
    # A device whose gap already has an open alert since it opened is not looked at again.
    candidates = [row[0] for row in conn.execute(
        "SELECT device FROM devices WHERE gap_since IS NOT NULL AND gap_since <= ?"
        " AND NOT EXISTS (SELECT 1 FROM alerts WHERE alerts.device = devices.device AND alerts.kind = 'log_gap'"
        " AND alerts.resolved_at IS NULL AND alerts.received >= devices.gap_since)", (limit,))]
    for device in candidates:
        with conn.transaction():
            # Read again under the device row's lock, which ingest takes too: a gap a worker
            # filled since the look above is not alerted (ingest resolves only the alerts of a
            # gap it fills, so an alert raised after that would stay open for good).
            first, top, since = conn.execute(
                "UPDATE devices SET gap_since = gap_since WHERE device = ? RETURNING first_seq, top_seq, gap_since",
                (device,))[0]
            if since is None or since > limit:
                continue
            present = [row[0] for row in conn.execute(
                "SELECT DISTINCT seq FROM events WHERE device = ? AND seq BETWEEN ? AND ? ORDER BY seq",
                (device, first, top))]
            runs = chain.missing(first, top, present)
            if not runs:
                continue
            insert_alert(conn, alert_id=care_alert_id(device, f"gap:{runs}"), device=device, kind="log_gap",
                         severity="warning", audience="clinic", origin="care", detail=chain.gap_text(runs),
                         evidence=[], at=parse_utc(since), now=now)


def open_alerts(conn: Connection) -> list[AlertState]:
    """Every alert the ladder may still act on."""
    rows = conn.execute(
        "SELECT alert_id, device, kind, severity, audience, at, received, rung, notified_at, retry_at"
        " FROM alerts WHERE acked_at IS NULL AND resolved_at IS NULL AND rung < ?", (CLINIC,))
    return [AlertState(alert_id, device, kind, severity, audience, parse_utc(at), parse_utc(received), rung,
                       _time(notified), _time(retry))
            for alert_id, device, kind, severity, audience, at, received, rung, notified, retry in rows]


def run_ladder(conn: Connection, config: CareConfig, now: datetime, deliver: Deliver) -> list[Send]:
    patients = {patient.device: patient for patient in config.patients}
    sent = []
    for send in plan(now, open_alerts(conn), patients, config.alerts):
        ids = [alert.alert_id for alert in send.alerts]
        tokens = issue_ack_tokens(conn, ids, now)   # new ones per message; only their sha256 is kept
        title, body = compose(patients[send.device], send, config.public_url, tokens)
        ok = deliver(send.urls, title, body)
        stamp = format_at(now)
        with conn.transaction():
            for alert in send.alerts:
                if not ok:
                    retry = format_at(now + timedelta(seconds=config.alerts.retry_after_s))
                    conn.execute("UPDATE alerts SET retry_at = ? WHERE alert_id = ?", (retry, alert.alert_id))
                elif send.rung == CLINIC:
                    conn.execute("UPDATE alerts SET rung = ?, escalated_at = ?, retry_at = NULL WHERE alert_id = ?",
                                 (CLINIC, stamp, alert.alert_id))
                else:
                    conn.execute("UPDATE alerts SET rung = ?, notified_at = ?, retry_at = NULL WHERE alert_id = ?",
                                 (send.rung, stamp, alert.alert_id))
            conn.execute("INSERT INTO deliveries (delivery_id, device, rung, at, alerts, ok, title)"
                         " VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (str(uuid.uuid4()), send.device, send.rung, stamp, json.dumps(ids), int(ok), title))
        if ok:
            sent.append(send)
    return sent
