"""The clinic's view of its devices: pure logic, no MQTT (that is in clinic_cli.py).

Delivery from a device is at least once (contract section 4): an event may arrive twice
after a reconnect, and every `alert.raised` arrives on both the events and the alerts
topic. `Watcher` turns the raw messages into the lines a person reads, showing each
event once, whichever topic brought it first.

    >>> watcher = Watcher("pilldispenser")
    >>> event = {"event_id": "e1", "device_id": "disp-0001", "seq": 7, "type": "dose.taken",
    ...          "at": "2026-11-21T13:03:12.120Z", "data": {"medication_id": "sertraline"}}
    >>> watcher.handle("pilldispenser/disp-0001/events", json.dumps(event).encode())
    ['     7  2026-11-21T13:03:12.120Z  disp-0001  dose.taken               medication_id=sertraline']
    >>> watcher.handle("pilldispenser/disp-0001/events", json.dumps(event).encode())
    []
"""
from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass

ALERT_TYPE = "alert.raised"
DEFAULT_REMEMBER = 100_000
KINDS = ("events", "alerts", "status", "state")
# The `data` keys worth a glance in a one-line summary, in this order.
SUMMARY_KEYS = ("medication_id", "scheduled_at", "quantity", "reason", "kind", "severity",
                "count", "version", "source", "remaining")


class SeenIds:
    """The last `limit` event ids, oldest forgotten first: dedup in bounded memory.

    A watcher runs for months; an unbounded set would grow with every event. A
    duplicate comes soon after its original (a re-sent in-flight message, or the
    same backlog pushed twice), so remembering the recent ones is enough.
    """

    def __init__(self, limit: int = DEFAULT_REMEMBER):
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._ids: OrderedDict[str, None] = OrderedDict()

    def add(self, event_id: str) -> bool:
        """Remember `event_id`; True when it is new."""
        if event_id in self._ids:
            return False
        self._ids[event_id] = None
        if len(self._ids) > self.limit:
            self._ids.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids


@dataclass(frozen=True)
class Message:
    """One MQTT message, located: `device` and `kind` (events, alerts, status, state)."""

    device: str
    kind: str
    payload: object  # parsed JSON


def split_topic(prefix: str, topic: str) -> tuple[str, str] | None:
    """(device, kind) of `{prefix}/{device}/{kind}`, or None for any other topic."""
    head = prefix + "/"
    if not topic.startswith(head):
        return None
    parts = topic[len(head):].split("/")
    if len(parts) != 2 or not parts[0] or parts[1] not in KINDS:
        return None
    return parts[0], parts[1]


def event_line(event: dict) -> str:
    """`seq at device type summary`, aligned like `dispenser log`."""
    data = event.get("data") if isinstance(event.get("data"), dict) else {}
    about = " ".join(f"{key}={data[key]}" for key in SUMMARY_KEYS if key in data)
    return (f"{event.get('seq', '?'):>6}  {event.get('at', '?')}  {event.get('device_id', '?')}  "
            f"{event.get('type', '?'):<24} {about}").rstrip()


def alert_line(event: dict) -> str:
    """An alert stands out: `!! ALERT [warning] disp-0001: <message>`, then its seq and time."""
    data = event.get("data") if isinstance(event.get("data"), dict) else {}
    severity = data.get("severity", "?")
    message = data.get("message") or data.get("kind") or "(no message)"
    return (f"!! ALERT [{severity}] {event.get('device_id', '?')}: {message}"
            f"  (seq {event.get('seq', '?')}, {event.get('at', '?')})")


def status_line(device: str, status: dict) -> str:
    """`== disp-0001 online since ...` or `== disp-0001 OFFLINE ...`."""
    since = f" since {status['since']}" if status.get("since") else ""
    if status.get("online") is True:
        return f"== {device} online{since}"
    return f"== {device} OFFLINE{since}"


def state_line(device: str, state: dict) -> str:
    """The retained state in a glance: schedule version, next dose, backlog."""
    parts = [f"schedule v{state.get('schedule_version')}"]
    next_dose = state.get("next_dose")
    if isinstance(next_dose, dict):
        parts.append(f"next {next_dose.get('medication_id')} x{next_dose.get('quantity')} "
                     f"at {next_dose.get('scheduled_at')}")
    stock = state.get("stock")
    if isinstance(stock, dict) and stock:
        parts.append("stock " + ", ".join(
            f"{name} {item.get('count') if isinstance(item, dict) else item}" for name, item in stock.items()))
    if "backlog" in state:
        parts.append(f"backlog {state['backlog']}")
    if state.get("clock_trusted") is False:
        parts.append("CLOCK NOT SET: doses held")
    return f".. {device} state: " + "; ".join(parts)


class Watcher:
    """Raw messages in, lines for a person out; remembers what it has shown.

    `handle(topic, payload)` returns the lines to print (often none): a new event,
    a new alert (prominent), a status or state that changed, or a `??` line for a
    message it cannot read. `json_lines=True` gives JSON instead: each new event
    unchanged (as `dispenser log --json` prints it), status and state as
    `{"topic": ..., "payload": ...}`. `events_shown` counts the events and alerts shown.
    """

    def __init__(self, prefix: str, remember: int = DEFAULT_REMEMBER, json_lines: bool = False):
        self.prefix = prefix
        self.json_lines = json_lines
        self.seen = SeenIds(remember)
        self.events_shown = 0
        self._last: dict[tuple[str, str], object] = {}   # (device, status|state) -> last payload
        self._next_seq: dict[str, int] = {}               # device -> the seq expected next

    def handle(self, topic: str, payload: bytes) -> list[str]:
        located = split_topic(self.prefix, topic)
        if located is None:
            return []
        device, kind = located
        if not payload:  # a retained message being cleared
            return []
        try:
            parsed = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            return [f"?? {topic}: not JSON ({len(payload)} bytes)"]
        if not isinstance(parsed, dict):
            return [f"?? {topic}: not a JSON object"]
        message = Message(device, kind, parsed)
        if kind in ("events", "alerts"):
            return self._event(topic, message)
        return self._retained(topic, message)

    def _event(self, topic: str, message: Message) -> list[str]:
        event = message.payload
        event_id = event.get("event_id")
        if not isinstance(event_id, str) or not event_id:
            return [f"?? {topic}: an event without event_id"]
        if not self.seen.add(event_id):
            return []
        self.events_shown += 1
        if self.json_lines:
            return [json.dumps(event, ensure_ascii=False)]
        lines = self._gap(message.device, event.get("seq"))
        lines.append(alert_line(event) if event.get("type") == ALERT_TYPE else event_line(event))
        return lines

    def _gap(self, device: str, seq: object) -> list[str]:
        """Seq has no gaps on the device, so a jump means events not (yet) received."""
        if not isinstance(seq, int) or isinstance(seq, bool):
            return []
        expected = self._next_seq.get(device)
        self._next_seq[device] = max(seq + 1, expected or 0)
        if expected is not None and seq > expected:
            missing = f"seq {expected}" if seq == expected + 1 else f"seq {expected}-{seq - 1}"
            return [f"-- {device}: {missing} not received (yet)"]
        return []

    def _retained(self, topic: str, message: Message) -> list[str]:
        key = (message.device, message.kind)
        compare = _without_time(message.payload) if message.kind == "state" else message.payload.get("online")
        if self._last.get(key) == compare:
            return []  # status: only changes of online/offline; state: only real changes
        self._last[key] = compare
        if self.json_lines:
            return [json.dumps({"topic": topic, "payload": message.payload}, ensure_ascii=False)]
        if message.kind == "status":
            return [status_line(message.device, message.payload)]
        return [state_line(message.device, message.payload)]


def _without_time(state: dict) -> dict:
    """The state minus its timestamp, so an unchanged state is not shown again."""
    return {key: value for key, value in state.items() if key != "at"}
