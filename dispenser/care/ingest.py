"""One MQTT message into the care database: stored once, checked, alerts raised.

The device is the topic's (`{prefix}/{device}/events`), never the payload's. An event is
stored once per (device, event_id); in the same transaction its seq and chain are judged
against the stored neighbours (chain.py), the device's gap bookkeeping is updated, a
device's `alert.raised` becomes an alert for its people, and a broken log or a pattern
becomes an alert for the clinic. The transaction starts by writing the device's row,
which serializes the events of one device across workers and processes.

    ingest = Ingest(conn, config)
    ingest.handle("pilldispenser/disp-0001/events", payload, now)   # -> "stored"
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from datetime import datetime, timedelta
from typing import Any

from ..clinic import Unreadable, event_problem, read_json, split_topic
from ..events import canonical
from ..timeutil import format_at, parse_utc
from ..vocabulary import EventType
from . import chain, patterns
from .config import CareConfig
from .database import Connection

log = logging.getLogger(__name__)

FINDING_KINDS = {"fork": ("log_fork", "critical"), "rewrite": ("log_rewritten", "critical"),
                 "device_mismatch": ("log_device_mismatch", "warning")}
SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,100}")
PATTERN_EVENTS = (EventType.DOSE_MISSED, EventType.DOSE_TAKEN, EventType.DOSE_UNCONFIRMED, EventType.CHECKIN_RECORDED)
RECENT_OUTCOMES = 200


def care_alert_id(device: str, key: str) -> str:
    """The same id for the same finding, so a finding heard twice is one alert."""
    return "care-" + hashlib.sha256(f"{device}\0{key}".encode()).hexdigest()[:24]


def insert_alert(conn: Connection, *, alert_id: str, device: str, kind: str, severity: str, audience: str,
                 origin: str, detail: str, evidence: list[str], at: datetime, now: datetime) -> bool:
    """Store an alert once (by alert_id); True when it is new."""
    rows = conn.execute(
        "INSERT INTO alerts (alert_id, device, kind, severity, audience, origin, detail, evidence, at, received,"
        " ack_token) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (alert_id) DO NOTHING RETURNING alert_id",
        (alert_id, device, kind, severity, audience, origin, detail, json.dumps(evidence), format_at(at),
         format_at(now), ""))   # acknowledgement tokens are made per message (tokens.py)
    return bool(rows)


class Ingest:
    """Handles messages for one worker, on its own connection."""

    def __init__(self, conn: Connection, config: CareConfig):
        self.conn = conn
        self.config = config
        self.prefix = config.mqtt.topic_prefix if config.mqtt else "pilldispenser"

    def handle(self, topic: str, payload: bytes, now: datetime) -> str:
        """What became of the message: stored, duplicate, status, or ignored (with why)."""
        where = split_topic(self.prefix, topic)
        if where is None:
            return "ignored: not a device topic"
        device, kind = where
        try:
            message = read_json(payload)
        except Unreadable as error:
            return f"ignored: {error}"
        if kind == "status":
            return self._status(device, message, now)
        if kind != "events":
            return "ignored: not an events or status topic"
        if not isinstance(message, dict):
            return "ignored: not a JSON object"
        problem = event_problem(message)
        if problem is not None:
            return f"ignored: {problem}"
        with self.conn.transaction():
            return self._event(device, message, now)

    # -- status ---------------------------------------------------------------------------

    def _status(self, device: str, message: Any, now: datetime) -> str:
        if not isinstance(message, dict) or not isinstance(message.get("online"), bool):
            return "ignored: a status without online true/false"
        online = message["online"]
        stamp = format_at(now)
        with self.conn.transaction():
            before = self.conn.execute("SELECT online FROM devices WHERE device = ?", (device,))
            changed = not before or before[0][0] is None or bool(before[0][0]) != online
            self.conn.execute(
                "INSERT INTO devices (device, last_heard, online, status_since) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (device) DO UPDATE SET last_heard = excluded.last_heard, online = excluded.online,"
                " status_since = CASE WHEN ? THEN excluded.status_since ELSE devices.status_since END",
                (device, stamp, int(online), stamp, changed))
            if online:   # back: an open "offline" alert needs no more escalation
                self.conn.execute(
                    "UPDATE alerts SET resolved_at = ? WHERE device = ? AND kind = 'device_offline'"
                    " AND resolved_at IS NULL AND acked_at IS NULL", (stamp, device))
        return "status"

    # -- events ---------------------------------------------------------------------------

    def _event(self, device: str, event: dict, now: datetime) -> str:
        stamp, seq = format_at(now), event["seq"]
        self.conn.execute(
            "INSERT INTO devices (device, last_heard) VALUES (?, ?)"
            " ON CONFLICT (device) DO UPDATE SET last_heard = excluded.last_heard", (device, stamp))
        same = self.conn.execute("SELECT seq, event_id, hash, prev_hash FROM events WHERE device = ? AND event_id = ?",
                                 (device, event["event_id"]))
        same_id = chain.Entry(*same[0][1:]) if same else None
        neighbours: dict[int, tuple[chain.Entry, ...]] = {}
        for row in self.conn.execute("SELECT seq, event_id, hash, prev_hash FROM events WHERE device = ?"
                                     " AND seq BETWEEN ? AND ? ORDER BY received", (device, seq - 1, seq + 1)):
            neighbours[row[0]] = neighbours.get(row[0], ()) + (chain.Entry(*row[1:]),)
        new, findings = chain.judge(device, event, neighbours, same_id, same[0][0] if same else None)
        if not new:
            return "duplicate"
        at = _event_time(event, now)
        for finding in findings:
            kind, severity = FINDING_KINDS.get(finding.kind, ("log_rewritten", "critical"))
            insert_alert(self.conn, alert_id=care_alert_id(device, f"{finding.kind}:{finding.seq}:{event['hash']}"),
                         device=device, kind=kind, severity=severity, audience="clinic", origin="care",
                         detail=finding.detail, evidence=[event["event_id"]], at=at, now=now)
        if same_id is not None:
            return "fork"   # the id is taken by the first version, which stays as evidence
        first_at_seq = seq not in neighbours
        self.conn.execute(
            "INSERT INTO events (device, event_id, seq, type, at, hash, prev_hash, body, received)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (device, event["event_id"], seq, event["type"], event["at"], event["hash"], event["prev_hash"],
             canonical(event), stamp))
        self._bookkeep(device, event, first_at_seq, stamp)
        # Heard again: an offline alert found by silence is over (one found by the Last Will
        # ends with the retained {"online": true} the device publishes when it is back).
        self.conn.execute(
            "UPDATE alerts SET resolved_at = ? WHERE device = ? AND kind = 'device_offline' AND resolved_at IS NULL"
            " AND acked_at IS NULL AND EXISTS (SELECT 1 FROM devices WHERE device = ? AND online IS NULL)",
            (stamp, device, device))
        if event["type"] == EventType.ALERT_RAISED:
            self._device_alert(device, event, at, now)
        if event["type"] in PATTERN_EVENTS:
            self._patterns(device, at, now)
        return "stored"

    def _bookkeep(self, device: str, event: dict, first_at_seq: bool, stamp: str) -> None:
        """first/top seq, how many distinct seqs are stored, the last event, and whether a gap is open."""
        seq = event["seq"]
        self.conn.execute(
            "UPDATE devices SET first_seq = CASE WHEN first_seq IS NULL OR ? < first_seq THEN ? ELSE first_seq END,"
            " top_seq = CASE WHEN top_seq IS NULL OR ? > top_seq THEN ? ELSE top_seq END,"
            " stored = stored + ?,"
            " last_seq = CASE WHEN last_seq IS NULL OR ? >= last_seq THEN ? ELSE last_seq END,"
            " last_type = CASE WHEN last_seq IS NULL OR ? >= last_seq THEN ? ELSE last_type END,"
            " last_at = CASE WHEN last_seq IS NULL OR ? >= last_seq THEN ? ELSE last_at END"
            " WHERE device = ?",
            (seq, seq, seq, seq, int(first_at_seq), seq, seq, seq, event["type"], seq, event["at"], device))
        first, top, stored = self.conn.execute(
            "SELECT first_seq, top_seq, stored FROM devices WHERE device = ?", (device,))[0]
        if top - first + 1 > stored:
            self.conn.execute("UPDATE devices SET gap_since = COALESCE(gap_since, ?) WHERE device = ?", (stamp, device))
        else:
            self.conn.execute("UPDATE devices SET gap_since = NULL WHERE device = ?", (device,))
            self.conn.execute("UPDATE alerts SET resolved_at = ? WHERE device = ? AND kind = 'log_gap'"
                              " AND resolved_at IS NULL", (stamp, device))

    def _device_alert(self, device: str, event: dict, at: datetime, now: datetime) -> None:
        data = event["data"]
        alert_id = data.get("alert_id")
        if not isinstance(alert_id, str) or not SAFE_ID.fullmatch(alert_id):
            alert_id = care_alert_id(device, f"device-alert:{event['event_id']}")
        kind = data.get("kind") if isinstance(data.get("kind"), str) else "unknown"
        severity = data.get("severity") if data.get("severity") in ("info", "warning", "critical") else "warning"
        about = [item for item in data.get("events", []) if isinstance(item, str)][:1000] \
            if isinstance(data.get("events"), list) else []
        message = data.get("message") if isinstance(data.get("message"), str) else ""
        insert_alert(self.conn, alert_id=alert_id, device=device, kind=kind[:80], severity=severity,
                     audience="people", origin="device", detail=message[:1000], evidence=[event["event_id"], *about],
                     at=at, now=now)

    def _patterns(self, device: str, at: datetime, now: datetime) -> None:
        settings = self.config.patterns
        rows = self.conn.execute(
            "SELECT event_id, type, seq, body FROM events WHERE device = ? AND type IN (?, ?, ?)"
            " ORDER BY seq DESC LIMIT ?", (device, *patterns.OUTCOMES, RECENT_OUTCOMES))
        outcomes = [patterns.Outcome(row[0], str(_data(row[3]).get("medication_id")), row[1], row[2]) for row in rows]
        days = max(settings.mood_days, settings.side_effects_days)
        since = format_at(at - timedelta(days=days))
        checkins = []
        for event_id, seq, event_at, body in self.conn.execute(
                "SELECT event_id, seq, at, body FROM events WHERE device = ? AND type = 'checkin.recorded'"
                " AND at >= ? ORDER BY seq DESC LIMIT 500", (device, since)):
            data = _data(body)
            mood = data.get("mood") if isinstance(data.get("mood"), int) and 1 <= data["mood"] <= 5 else None
            side = data.get("side_effects") if isinstance(data.get("side_effects"), str) else None
            day = _event_time({"at": event_at}, now).toordinal()
            checkins.append(patterns.Checkin(event_id, day, mood, side, seq))
        found = (patterns.missed_run(outcomes, settings.missed_run)
                 + patterns.repeated_side_effects(checkins, settings) + patterns.falling_mood(checkins, settings))
        for finding in found:
            insert_alert(self.conn, alert_id=care_alert_id(device, finding.key), device=device, kind=finding.kind,
                         severity="warning", audience="clinic", origin="care", detail=finding.detail,
                         evidence=list(finding.evidence), at=at, now=now)


def _data(body: str) -> dict:
    try:
        data = json.loads(body).get("data")
    except (ValueError, AttributeError):
        return {}
    return data if isinstance(data, dict) else {}


def _event_time(event: dict, fallback: datetime) -> datetime:
    """The event's `at`, or `fallback` when it is not a time (the event is still stored)."""
    try:
        return parse_utc(event["at"])
    except (ValueError, TypeError, KeyError):
        return fallback
