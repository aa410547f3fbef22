"""What the web view reads from the care database (and the one thing it writes, an
acknowledgement, goes through `care ack`'s own `acknowledge`)."""
from __future__ import annotations

import json
from dataclasses import dataclass

from ..database import Connection
from ..tokens import ack_token_opens, linked_device

__all__ = ["Alert", "alert_by_token", "alert_of", "device_events", "linked_device", "open_alerts"]


@dataclass(frozen=True)
class Alert:
    alert_id: str
    device: str
    kind: str
    severity: str
    at: str
    told: str
    acked_at: str | None
    acked_by: str | None


_ALERT = "SELECT alert_id, device, kind, severity, at, rung, acked_at, acked_by FROM alerts"


def _alert(row: tuple) -> Alert:
    alert_id, device, kind, severity, at, rung, acked_at, acked_by = row
    return Alert(alert_id, device, kind, severity, at, ["nobody yet", "people", "clinic"][min(int(rung), 2)],
                 acked_at, acked_by)


def device_events(conn: Connection, device: str) -> list[dict]:
    """The device's stored events in seq order (for a forked seq, the version stored first)."""
    events, seen = [], set()
    for seq, body in conn.execute("SELECT seq, body FROM events WHERE device = ? ORDER BY seq, received", (device,)):
        if seq not in seen:
            seen.add(seq)
            events.append(json.loads(body))
    return events


def open_alerts(conn: Connection, device: str) -> list[Alert]:
    """Alerts neither acknowledged nor resolved, as `care status` lists them."""
    return [_alert(row) for row in conn.execute(
        _ALERT + " WHERE device = ? AND acked_at IS NULL AND resolved_at IS NULL ORDER BY at, alert_id", (device,))]


def alert_by_token(conn: Connection, alert_id: str, token: str) -> Alert | None:
    """The alert an acknowledgement link names, when the token was handed out for it."""
    if not ack_token_opens(conn, alert_id, token):
        return None
    rows = conn.execute(_ALERT + " WHERE alert_id = ?", (alert_id,))
    return _alert(rows[0]) if rows else None


def alert_of(conn: Connection, alert_id: str, device: str) -> Alert | None:
    rows = conn.execute(_ALERT + " WHERE alert_id = ? AND device = ?", (alert_id, device))
    return _alert(rows[0]) if rows else None
