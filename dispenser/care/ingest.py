"""MQTT messages into the care database: stored once, checked, alerts raised.

The device is the topic's (`{prefix}/{device}/events`), never the payload's. An event is
stored once per (device, event_id); in the same transaction its seq and chain are judged
against the stored neighbours (chain.py), the device's gap bookkeeping is updated, a
device's `alert.raised` becomes an alert for its people, and a broken log or a pattern
becomes an alert for the clinic.

A worker hands over a batch of messages at once (`handle_batch`): one transaction for
all of them, so a commit and its round trips are paid once per batch, not per event; the
worker acknowledges the batch to the broker only after that commit. Each event's work
starts by writing its device's row, which serializes one device's events across workers
and processes (PostgreSQL: the row lock, held to the commit; SQLite: its one write lock);
a batch takes its devices in sorted order, so two workers' batches never wait on each
other in a circle. If the batch fails, nothing of it is kept and each message is tried
again in a transaction of its own: one bad message costs only itself.

    ingest = Ingest(conn, config)
    ingest.handle("pilldispenser/disp-0001/events", payload, now)          # -> "stored"
    ingest.handle_batch([(topic, payload), ...], now)                      # -> ["stored", "duplicate", ...]
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from datetime import datetime, timedelta
from typing import Any, NamedTuple, Sequence

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
FAILED = "failed"   # the outcome of a message that could not be stored: not acknowledged, tried again
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
        """What became of one message: stored, duplicate, fork, status, or ignored (with why).
        A database error is raised (nothing of the message kept)."""
        read = self._read(topic, payload)
        if isinstance(read, str):
            return read
        with self.conn.transaction():
            return self._apply(*read, now)

    def handle_batch(self, messages: Sequence[tuple[str, bytes]], now: datetime) -> list[str]:
        """What became of each (topic, payload), in order; all stored in one transaction.

        When that transaction fails, each message is tried in one of its own; a message that
        fails alone too is `failed: why` (nothing of it kept: leave it unacknowledged).
        """
        outcomes: list[str] = [""] * len(messages)
        work: list[tuple[int, str, str, Any]] = []
        for index, (topic, payload) in enumerate(messages):
            read = self._read(topic, payload)
            if isinstance(read, str):
                outcomes[index] = read
            else:
                work.append((index, *read))
        work.sort(key=lambda item: item[1])   # stable: devices in one order, each device's messages as they came
        try:
            with self.conn.transaction():
                for index, device, kind, message in work:
                    outcomes[index] = self._apply(device, kind, message, now)
            return outcomes
        except Exception as error:  # noqa: BLE001 - any failure: each message on its own, below
            if len(work) == 1:
                outcomes[work[0][0]] = f"{FAILED}: {_one_line(error)}"
                return outcomes
            log.warning("a batch of %d messages failed (%s): storing them one by one", len(work), _one_line(error))
        for index, device, kind, message in work:
            try:
                with self.conn.transaction():
                    outcomes[index] = self._apply(device, kind, message, now)
            except Exception as error:  # noqa: BLE001 - this message only
                outcomes[index] = f"{FAILED}: {_one_line(error)}"
        return outcomes

    def _read(self, topic: str, payload: bytes) -> tuple[str, str, Any] | str:
        """(device, kind, message) for a message to store, or why it is ignored."""
        where = split_topic(self.prefix, topic)
        if where is None:
            return "ignored: not a device topic"
        device, kind = where
        try:
            message = read_json(payload)
        except Unreadable as error:
            return f"ignored: {error}"
        if kind == "status":
            if not isinstance(message, dict) or not isinstance(message.get("online"), bool):
                return "ignored: a status without online true/false"
            return device, kind, message
        if kind != "events":
            return "ignored: not an events or status topic"
        if not isinstance(message, dict):
            return "ignored: not a JSON object"
        problem = event_problem(message)
        if problem is not None:
            return f"ignored: {problem}"
        return device, kind, message

    def _apply(self, device: str, kind: str, message: dict, now: datetime) -> str:
        """One read message, inside the caller's transaction."""
        if kind == "status":
            return self._status(device, message, now)
        return self._event(device, message, now)

    # -- status ---------------------------------------------------------------------------

    def _status(self, device: str, message: dict, now: datetime) -> str:
        online = message["online"]
        stamp = format_at(now)
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
        """About four statements for an ordinary event: the device's row (its lock and its
        bookkeeping as it stands), the stored neighbours and the same event_id in one query,
        the insert, the bookkeeping's update."""
        stamp, seq = format_at(now), event["seq"]
        first, top, stored, online, gap_since = self.conn.execute(
            "INSERT INTO devices (device, last_heard) VALUES (?, ?)"
            " ON CONFLICT (device) DO UPDATE SET last_heard = excluded.last_heard"
            " RETURNING first_seq, top_seq, stored, online, gap_since", (device, stamp))[0]
        same: tuple[int, chain.Entry] | None = None
        neighbours: dict[int, tuple[chain.Entry, ...]] = {}
        for row_seq, event_id, hash_, prev_hash in self.conn.execute(
                "SELECT seq, event_id, hash, prev_hash FROM events WHERE device = ?"
                " AND (event_id = ? OR seq BETWEEN ? AND ?) ORDER BY received",
                (device, event["event_id"], seq - 1, seq + 1)):
            entry = chain.Entry(event_id, hash_, prev_hash)
            if event_id == event["event_id"]:
                same = (row_seq, entry)
            if seq - 1 <= row_seq <= seq + 1:
                neighbours[row_seq] = neighbours.get(row_seq, ()) + (entry,)
        same_id = same[1] if same else None
        new, findings = chain.judge(device, event, neighbours, same_id, same[0] if same else None)
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
        self.conn.execute(
            "INSERT INTO events (device, event_id, seq, type, at, hash, prev_hash, body, received)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (device, event["event_id"], seq, event["type"], event["at"], event["hash"], event["prev_hash"],
             canonical(event), stamp))
        self._bookkeep(device, event, Counts(first, top, stored, seq not in neighbours, gap_since), stamp)
        # Heard again: an offline alert found by silence is over (one found by the Last Will
        # ends with the retained {"online": true} the device publishes when it is back).
        if online is None:
            self.conn.execute(
                "UPDATE alerts SET resolved_at = ? WHERE device = ? AND kind = 'device_offline'"
                " AND resolved_at IS NULL AND acked_at IS NULL", (stamp, device))
        if event["type"] == EventType.ALERT_RAISED:
            self._device_alert(device, event, at, now)
        # Only a missed dose can make a run of missed doses, only a check-in a check-in pattern.
        if event["type"] == EventType.DOSE_MISSED:
            self._missed_run(device, at, now)
        elif event["type"] == EventType.CHECKIN_RECORDED:
            self._checkin_patterns(device, at, now)
        return "stored"

    def _bookkeep(self, device: str, event: dict, before: "Counts", stamp: str) -> None:
        """first/top seq, how many distinct seqs are stored, the last event, and whether a gap
        is open: computed from the row as this transaction read it (its lock held), one update."""
        seq = event["seq"]
        first = seq if before.first is None else min(before.first, seq)
        top = seq if before.top is None else max(before.top, seq)
        stored = before.stored + int(before.first_at_seq)
        gap_open = top - first + 1 > stored
        gap_since = (before.gap_since or stamp) if gap_open else None
        self.conn.execute(
            "UPDATE devices SET first_seq = ?, top_seq = ?, stored = ?, gap_since = ?,"
            " last_seq = CASE WHEN last_seq IS NULL OR ? >= last_seq THEN ? ELSE last_seq END,"
            " last_type = CASE WHEN last_seq IS NULL OR ? >= last_seq THEN ? ELSE last_type END,"
            " last_at = CASE WHEN last_seq IS NULL OR ? >= last_seq THEN ? ELSE last_at END"
            " WHERE device = ?",
            (first, top, stored, gap_since, seq, seq, seq, event["type"], seq, event["at"], device))
        if before.gap_since is not None and not gap_open:   # the gap is filled: its alert is over
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

    def _missed_run(self, device: str, at: datetime, now: datetime) -> None:
        rows = self.conn.execute(
            "SELECT event_id, type, seq, body FROM events WHERE device = ? AND type IN (?, ?, ?)"
            " ORDER BY seq DESC LIMIT ?", (device, *patterns.OUTCOMES, RECENT_OUTCOMES))
        outcomes = [patterns.Outcome(row[0], str(_data(row[3]).get("medication_id")), row[1], row[2]) for row in rows]
        self._raise_patterns(device, patterns.missed_run(outcomes, self.config.patterns.missed_run), at, now)

    def _checkin_patterns(self, device: str, at: datetime, now: datetime) -> None:
        settings = self.config.patterns
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
        found = patterns.repeated_side_effects(checkins, settings) + patterns.falling_mood(checkins, settings)
        self._raise_patterns(device, found, at, now)

    def _raise_patterns(self, device: str, found: list[patterns.PatternFinding], at: datetime, now: datetime) -> None:
        for finding in found:
            insert_alert(self.conn, alert_id=care_alert_id(device, finding.key), device=device, kind=finding.kind,
                         severity="warning", audience="clinic", origin="care", detail=finding.detail,
                         evidence=list(finding.evidence), at=at, now=now)


class Counts(NamedTuple):
    """A device's bookkeeping as read before an event is added, and whether its seq is new."""

    first: int | None
    top: int | None
    stored: int
    first_at_seq: bool
    gap_since: str | None


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


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
