"""What the web view reads from the care database (and the one thing it writes, an
acknowledgement, goes through `care ack`'s own `acknowledge`)."""
from __future__ import annotations

import json
from datetime import datetime
from dataclasses import dataclass

from ...timeutil import format_at
from ..database import Connection
from ..tokens import ack_token_opens, linked_device

__all__ = ["Alert", "alert_by_token", "alert_of", "device_events", "events_since", "linked_device", "open_alerts",
           "sets_count", "stock_before"]

STOCK_COUNTS = ("stock.refilled", "stock.low", "stock.empty")   # the events a compartment's count is taken from
RELEASES = ("dose.released", "prn.released")
PAGE = 64


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


def _first_per_seq(rows: list[tuple]) -> list[dict]:
    """Bodies in seq order, one per seq (for a forked seq, the version stored first)."""
    events, seen = [], set()
    for seq, body in rows:
        if seq not in seen:
            seen.add(seq)
            events.append(json.loads(body))
    return events


def device_events(conn: Connection, device: str) -> list[dict]:
    """The device's whole stored log in seq order (the pages read `events_since`, never this)."""
    return _first_per_seq(conn.execute(
        "SELECT seq, body FROM events WHERE device = ? ORDER BY seq, received", (device,)))


def events_since(conn: Connection, device: str, since: datetime) -> list[dict]:
    """The device's events logged at or after `since`, in seq order: by the index on
    (device, at), so the cost is the window's, whatever the log's age."""
    rows = conn.execute("SELECT seq, received, body FROM events WHERE device = ? AND at >= ? ORDER BY at",
                        (device, format_at(since)))   # by `at`, the index's order (not seq's index)
    return _first_per_seq([(seq, body) for seq, _, body in sorted(rows, key=lambda row: (row[0], row[1]))])


def _newest(conn: Connection, device: str, kind: str, before: tuple[str, int], limit: int) -> list[tuple]:
    """Events of one type logged before `before` (at, seq), newest first (the index on (device, type, at))."""
    at, seq = before
    return conn.execute(
        "SELECT seq, at, body FROM events WHERE device = ? AND type = ? AND at <= ? AND (at < ? OR seq < ?)"
        " ORDER BY at DESC, seq DESC LIMIT ?", (device, kind, at, at, seq, limit))   # `at <= ?`: a range of the index


def stock_before(conn: Connection, device: str, since: datetime, medications: set[str]) -> list[dict]:
    """What the stock of `medications` needs from before `since`: each one's last count
    (a refill, or the device's own count in stock.low / stock.empty) and the releases
    after it. Read newest first by type and stopped as soon as each medication has its
    count, so a refill a month old costs a month of releases, never the whole log."""
    start = (format_at(since), -1)
    found: dict[str, tuple[str, int, dict]] = {}
    for kind in STOCK_COUNTS:
        cursor = start
        while any(m not in found or found[m][:2] < cursor for m in medications):
            rows = _newest(conn, device, kind, cursor, PAGE)
            for seq, at, body in rows:
                event = json.loads(body)
                medication = (event.get("data") or {}).get("medication_id")
                if medication in medications and sets_count(event) and \
                        (medication not in found or (at, seq) > found[medication][:2]):
                    found[medication] = (at, seq, event)
            if len(rows) < PAGE:
                break
            cursor = (rows[-1][1], rows[-1][0])
    if not found:
        return []
    oldest = min(at for at, _, _ in found.values())
    releases = [json.loads(body) for kind in RELEASES for (body,) in conn.execute(
        "SELECT body FROM events WHERE device = ? AND type = ? AND at >= ? AND at < ?",
        (device, kind, oldest, start[0]))]
    after = [event for event in releases if (event.get("data") or {}).get("medication_id") in found
             and event["seq"] > found[event["data"]["medication_id"]][1]]
    chosen = {event["seq"]: event for event in [*(e for _, _, e in found.values()), *after]}
    return [chosen[seq] for seq in sorted(chosen)]


def sets_count(event: dict) -> bool:
    """Whether history.stock takes its count from this event (it forgets everything before)."""
    data = event.get("data") or {}
    return event["type"] == "stock.refilled" or isinstance(data.get("remaining"), int)


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
