"""The clinic's view of its devices: pure logic, no MQTT (that is in cli/clinic.py).

Delivery from a device is at least once (contract section 4): an event may arrive twice
after a reconnect, and every `alert.raised` arrives on both the events and the alerts
topic. `Watcher` turns the raw messages into the lines a person reads, showing each
event once, whichever topic brought it first.

Nothing a device (or anyone who may write on the broker) sends is trusted: a payload is
read with a size cap, a nesting cap and no unbounded numbers, so no message can crash
the watcher; the device is the one the topic names, never the one the payload claims;
every character that could steer a terminal is removed from what is printed; and each
device's `seq` and hash chain are checked as events arrive (chainwatch.py), so a gap, a
fork or a rewritten log is said, not shown silently.

    >>> from datetime import datetime, timezone
    >>> from dispenser.events import GENESIS, Draft, build_event
    >>> watcher = Watcher("pilldispenser")
    >>> event = build_event(Draft("dose.taken", {"medication_id": "sertraline"}, "e1"), "disp-0001", 1,
    ...                     datetime(2026, 11, 21, 13, 3, 12, 120000, tzinfo=timezone.utc), GENESIS)
    >>> watcher.handle("pilldispenser/disp-0001/events", json.dumps(event).encode())
    ['     1  2026-11-21T13:03:12.120Z  disp-0001  dose.taken               medication_id=sertraline']
    >>> watcher.handle("pilldispenser/disp-0001/events", json.dumps(event).encode())
    []
"""
from __future__ import annotations

import itertools
import json
import math
import re
from typing import NoReturn

from .chainwatch import MAX_DEVICES, REMEMBER, WINDOW, BoundedMap, ChainWatch, Finding
from .events import EVENT_KEYS, SCHEMA
from .timeutil import format_at, parse_utc
from .vocabulary import EventType

DEFAULT_REMEMBER = REMEMBER
KINDS = ("events", "alerts", "status", "state")
# The `data` keys worth a glance in a one-line summary, in this order.
SUMMARY_KEYS = ("medication_id", "scheduled_at", "quantity", "reason", "kind", "severity",
                "count", "version", "source", "remaining")

# What the watcher reads of one message. A device's event is about 600 bytes; a
# schedule.rejected with its 20 problems a few KB. Past this nothing is parsed.
MAX_PAYLOAD = 256 * 1024
MAX_DEPTH = 32          # an event nests 3 deep; json.loads recurses on `[[[[...`
MAX_DIGITS = 40         # a number longer than this is no count, seq or quantity
MAX_SEQ = 2 ** 63 - 1   # SQLite's integer: the device cannot count further
MAX_ID = 200            # characters of an event_id
MAX_DEVICE_NAME = 128   # characters of the device part of a topic
MAX_FIELD = 80          # characters of one value in a line
MAX_LINE = 1000         # characters of one printed line

_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_HASH = re.compile(r"[0-9a-f]{64}")
_EVENT_AT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")
_MARKS = {"gap": "--", "unchecked": "--", "forgotten": "--", "fork": "!! FORK",
          "rewrite": "!! REWRITE", "device_mismatch": "!! MISMATCH"}


class Unreadable(ValueError):
    """A payload the watcher will not read, with the reason in words."""


def read_json(payload: bytes) -> object:
    """The payload as JSON, or Unreadable: UTF-8 only, capped in size, depth and digits.

    json.loads would take UTF-16 too, recurse until RecursionError on deep nesting,
    turn 1e999 into infinity (which no canonical form can hash) and spend quadratic
    time on a 4,000-digit integer; each is refused here first.
    """
    if len(payload) > MAX_PAYLOAD:
        raise Unreadable(f"{len(payload)} bytes, over the {MAX_PAYLOAD} the watcher reads: not read")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise Unreadable(f"not UTF-8 ({len(payload)} bytes)") from None
    if _depth(text) > MAX_DEPTH:
        raise Unreadable(f"JSON nested deeper than {MAX_DEPTH}")
    try:
        parsed = json.loads(text, object_pairs_hook=_no_duplicates, parse_int=_int,
                            parse_float=_float, parse_constant=_constant)
        json.dumps(parsed, ensure_ascii=False).encode("utf-8")  # a lone surrogate (\ud800) fails here
    except Unreadable:
        raise
    except UnicodeEncodeError:
        raise Unreadable("a string that is not valid Unicode") from None
    except (ValueError, RecursionError):
        raise Unreadable(f"not JSON ({len(payload)} bytes)") from None
    return parsed


def _depth(text: str) -> int:
    """How deep the brackets outside strings nest (an upper bound for invalid JSON)."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(itertools.accumulate(_STEP[char] for char in brackets), default=0)


def _no_duplicates(pairs: list) -> dict:
    """The device writes each key once; a second one would be read two ways."""
    result = dict(pairs)
    if len(result) != len(pairs):
        raise Unreadable("a key appears twice in one object")
    return result


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise Unreadable(f"a number with more than {MAX_DIGITS} digits")
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or len(text) > 2 * MAX_DIGITS:
        raise Unreadable(f"a number out of range ({text[:20]})")
    return value


def _constant(text: str) -> NoReturn:
    raise Unreadable(f"{text} is not JSON")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def event_problem(event: dict) -> str | None:
    """Why this object is no readable event (contract section 3), or None.

    Checked before anything looks at a field, so that no type a sender picks can
    crash a line's formatting or the chain check.
    """
    for key in EVENT_KEYS:
        if key not in event:
            return f"an event without {key}"
    if event["schema"] != SCHEMA:
        return f"schema is not {SCHEMA}"
    if not _is_int(event["seq"]) or not 1 <= event["seq"] <= MAX_SEQ:
        return "seq is not a whole number from 1 to 2^63-1"
    for key in ("event_id", "device_id", "type", "at"):
        if not isinstance(event[key], str) or not event[key]:
            return f"{key} is not a non-empty string"
    if len(event["event_id"]) > MAX_ID:
        return f"event_id is longer than {MAX_ID} characters"
    if not is_event_at(event["at"]):
        return "at is not a UTC time in the device's form (2026-11-21T13:03:12.120Z)"
    if not isinstance(event["data"], dict):
        return "data is not an object"
    for key in ("prev_hash", "hash"):
        if not isinstance(event[key], str) or not _HASH.fullmatch(event[key]):
            return f"{key} is not 64 lowercase hex digits"
    return None


def is_event_at(text: str) -> bool:
    """Whether `text` is an `at` exactly as a device writes it (timeutil.format_at).

    The care service orders events by `at` as text, which is the time's order only in
    this one spelling: `+00:00`, another offset, no milliseconds or a `T` in lower case
    would sort wrongly. So the text must be what its own time formats back to.
    """
    if not _EVENT_AT.fullmatch(text):
        return False
    try:
        return format_at(parse_utc(text)) == text
    except ValueError:  # the right shape, no real time (2026-02-30)
        return False


def printable(text: str) -> str:
    """`text` without the characters that steer a terminal or break a line.

    ESC, the C1 controls (U+009B is a CSI of its own), newlines, bidi overrides, line
    separators: a device's text must never move the cursor or forge a line of ours.
    """
    if text.isprintable():
        return text
    return "".join(char for char in text if char.isprintable())


def _field(value: object, limit: int = MAX_FIELD) -> str:
    """One value as it goes into a line: printable, and cut when long."""
    text = printable(value if isinstance(value, str) else str(value))
    return text if len(text) <= limit else text[:limit - 3] + "..."


def json_line(obj: object) -> str:
    """One JSON line in which every character a terminal could act on is escaped.

    json.dumps(ensure_ascii=False) leaves DEL, the C1 controls and U+2028 raw.
    """
    text = json.dumps(obj, ensure_ascii=False)
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else json.dumps(char)[1:-1] for char in text)


def split_topic(prefix: str, topic: str) -> tuple[str, str] | None:
    """(device, kind) of `{prefix}/{device}/{kind}`, or None for any other topic."""
    head = prefix + "/"
    if not topic.startswith(head):
        return None
    parts = topic[len(head):].split("/")
    if len(parts) != 2 or not parts[0] or parts[1] not in KINDS:
        return None
    return parts[0], parts[1]


def event_line(event: dict, device: str | None = None) -> str:
    """`seq at device type summary`, aligned like `dispenser log`; `device` is the topic's."""
    raw = event.get("data")
    data = raw if isinstance(raw, dict) else {}
    about = " ".join(f"{key}={_field(data[key])}" for key in SUMMARY_KEYS if key in data)
    device = event.get("device_id", "?") if device is None else device
    return printable(f"{_field(event.get('seq', '?')):>6}  {_field(event.get('at', '?'))}  {_field(device)}  "
                     f"{_field(event.get('type', '?')):<24} {about}").rstrip()


def alert_line(event: dict, device: str | None = None) -> str:
    """An alert stands out: `!! ALERT [warning] disp-0001: <message>`, then its seq and time."""
    raw = event.get("data")
    data = raw if isinstance(raw, dict) else {}
    severity = data.get("severity", "?")
    message = data.get("message") or data.get("kind") or "(no message)"
    device = event.get("device_id", "?") if device is None else device
    return printable(f"!! ALERT [{_field(severity)}] {_field(device)}: {_field(message, 300)}"
                     f"  (seq {_field(event.get('seq', '?'))}, {_field(event.get('at', '?'))})")


def status_line(device: str, status: dict) -> str:
    """`== disp-0001 online since ...` or `== disp-0001 OFFLINE ...`."""
    since = f" since {_field(status['since'])}" if status.get("since") else ""
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


def finding_line(finding: Finding) -> str:
    """A warning a person notices: `!! FORK disp-0001: seq 16: two different events ...`."""
    return f"{_MARKS.get(finding.kind, '--')} {finding.device}: {finding.detail}"


def finding_json(finding: Finding) -> dict:
    """The same warning as one JSON object, for --json."""
    result: dict[str, object] = {"warning": finding.kind, "device": finding.device, "seq": finding.seq,
                                 "detail": finding.detail}
    if finding.missing:
        result["missing"] = [list(run) for run in finding.missing]
    return result


class Watcher:
    """Raw messages in, lines for a person out; remembers what it has shown.

    `handle(topic, payload)` returns the lines to print (often none): a new event,
    a new alert (prominent), a warning about a device's chain (gap, fork, rewrite,
    device mismatch), a status or state that changed, or a `??` line for a message it
    cannot read. `json_lines=True` gives JSON instead: each new event unchanged (as
    `dispenser log --json` prints it), status and state as `{"topic": ..., "payload": ...}`,
    warnings as `{"warning": kind, "device": ..., "seq": ..., "detail": ...}`.
    `events_shown` counts the events and alerts shown.
    """

    def __init__(self, prefix: str, remember: int = DEFAULT_REMEMBER, json_lines: bool = False,
                 window: int = WINDOW, max_devices: int = MAX_DEVICES):
        self.prefix = prefix
        self.json_lines = json_lines
        self.chains = ChainWatch(window, max_devices, remember)
        self.events_shown = 0
        # (device, status|state) -> last payload
        self._last: BoundedMap[tuple[str, str], object] = BoundedMap(2 * max_devices)

    def handle(self, topic: str, payload: bytes) -> list[str]:
        located = split_topic(self.prefix, topic)
        if located is None or not payload:  # not ours, or a retained message being cleared
            return []
        device, kind = located
        if len(device) > MAX_DEVICE_NAME or not device.isprintable():
            return self._unreadable(topic, None, "the device part of the topic is not a device id")
        try:
            parsed = read_json(payload)
        except Unreadable as error:
            return self._unreadable(topic, device, str(error))
        if not isinstance(parsed, dict):
            return self._unreadable(topic, device, "not a JSON object")
        if kind in ("events", "alerts"):
            return self._event(topic, device, kind, parsed)
        return self._retained(topic, device, kind, parsed)

    def _unreadable(self, topic: str, device: str | None, problem: str) -> list[str]:
        if self.json_lines:
            return [json_line({"warning": "unreadable", "device": device, "topic": topic, "detail": problem})]
        return [printable(f"?? {_field(topic, 200)}: {problem}")]

    def _event(self, topic: str, device: str, kind: str, event: dict) -> list[str]:
        problem = event_problem(event)
        if problem is not None:
            return self._unreadable(topic, device, problem)
        new, findings = self.chains.check(device, event, on_events_topic=kind == "events")
        if not new:
            return []
        self.events_shown += 1
        if self.json_lines:
            return self._event_json(event, findings)
        lines = [printable(finding_line(finding))[:MAX_LINE] for finding in findings]
        lines.append(alert_line(event, device) if event["type"] == EventType.ALERT_RAISED else event_line(event, device))
        return lines

    def _event_json(self, event: dict, findings: list[Finding]) -> list[str]:
        """Warnings, then the event as sent; an event naming another device only inside
        its warning, so that every bare event line belongs to the device it names."""
        lines, mismatch = [], False
        for finding in findings:
            obj = finding_json(finding)
            if finding.kind == "device_mismatch":
                obj["event"], mismatch = event, True
            lines.append(json_line(obj))
        if not mismatch:
            lines.append(json_line(event))
        return lines

    def _retained(self, topic: str, device: str, kind: str, payload: dict) -> list[str]:
        compare = _without_time(payload) if kind == "state" else payload.get("online")
        key = (device, kind)
        if key in self._last and self._last.get(key) == compare:
            return []  # status: only changes of online/offline; state: only real changes
        self._last.put(key, compare)
        if self.json_lines:
            return [json_line({"topic": topic, "payload": payload})]
        line = status_line(device, payload) if kind == "status" else state_line(device, payload)
        return [printable(line)[:MAX_LINE]]


def _without_time(state: dict) -> dict:
    """The state minus its timestamp, so an unchanged state is not shown again."""
    return {key: value for key, value in state.items() if key != "at"}
