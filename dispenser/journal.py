"""The daemon's system log: what a technician reads with `journalctl -u dispenser`.

`configure()` is called once, where the daemon starts (`dispenser run`, the live
`dispenser simulate`): every line goes to stderr, which systemd hands to the journal.
Under systemd (`$JOURNAL_STREAM` names our stderr) each line starts with the syslog
priority in angle brackets (`<4>` = warning, sd-daemon(3)), so `journalctl -p warning`
works, and carries no time stamp (the journal adds its own); elsewhere a line is
`TIME LEVEL message`.

`EventLines` is an engine listener: one line for each event the engine commits (its
type, `seq`, compartment and the like), at a level that says how much it matters. The
line holds nothing the person would not want on a screen: no medication names, no
mood, no alert texts; `dispenser log` has the whole event under the same `seq`.

    >>> from datetime import datetime, timezone
    >>> from dispenser.engine import Engine
    >>> from dispenser.store import Store
    >>> engine = Engine(Store.open(":memory:", "disp-0001"), 8)
    >>> handler = configure("info", stream=sys.stdout)    # the daemon's: configure("info"), on stderr
    >>> engine.listeners.append(EventLines(engine))
    >>> outcome = engine.start(datetime(2026, 11, 24, 12, 45, tzinfo=timezone.utc))
    20... INFO device.started seq=1 ...
"""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, TextIO

from .vocabulary import EventType, Severity

if TYPE_CHECKING:
    from .engine import Engine

LEVELS = ("debug", "info", "warning", "error")
DEFAULT_LEVEL = "info"

# The syslog priority of each logging level (sd-daemon(3): <3> error, <4> warning, <6> info, <7> debug).
PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}

# How much each event matters to a technician; any other type is INFO.
EVENT_LEVELS: dict[str | None, int] = {
    EventType.DOSE_REMINDER: logging.DEBUG,
    EventType.CHECKIN_RECORDED: logging.DEBUG,
    EventType.DOSE_MISSED: logging.WARNING,
    EventType.DOSE_UNCONFIRMED: logging.WARNING,
    EventType.DOSE_HELD: logging.WARNING,
    EventType.SCHEDULE_REJECTED: logging.WARNING,
    EventType.STOCK_LOW: logging.WARNING,
    EventType.STOCK_EMPTY: logging.WARNING,
    EventType.CLOCK_UNSYNCHRONIZED: logging.WARNING,
    EventType.CLOCK_BEHIND: logging.WARNING,
    EventType.DEVICE_FAULT: logging.WARNING,
    EventType.DOSE_RELEASE_FAILED: logging.ERROR,
    EventType.DOSE_RELEASE_UNCERTAIN: logging.ERROR,
    EventType.PILL_UNEXPECTED: logging.WARNING,
}
ALERT_LEVELS: dict[str, int] = {Severity.INFO: logging.INFO, Severity.WARNING: logging.WARNING,
                               Severity.CRITICAL: logging.ERROR}

# The event data a line may show: numbers, codes and reasons, never names or free text.
SHOWN = ("compartment", "quantity", "reminder", "reason", "while", "kind", "severity", "version", "source",
         "signed", "count", "previous", "remaining", "component", "software", "caught_up_to")

log = logging.getLogger("dispenser.events")


def under_journal(environ: Mapping[str, str] = os.environ, stream: TextIO | None = None) -> bool:
    """True when stderr is the journal's stream: systemd sets $JOURNAL_STREAM to its
    "device:inode" (systemd.exec(5)), so output sent elsewhere gets no prefixes."""
    value = environ.get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in value.split(":"))
        info = os.fstat((stream or sys.stderr).fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (info.st_dev, info.st_ino) == (device, inode)


class JournalFormatter(logging.Formatter):
    """`<N>message`, each line of a multi-line message (a traceback) prefixed alike."""

    def format(self, record: logging.LogRecord) -> str:
        priority = PRIORITY.get(record.levelno, 6 if record.levelno < logging.WARNING else 3)
        return "\n".join(f"<{priority}>{line}" for line in super().format(record).splitlines() or [""])


class OnceInARow(logging.Filter):
    """Drops a line that repeats the one before it from the same logger (a broker that stays
    down would otherwise say "cannot connect" at every retry): the first and the change show."""

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[str, tuple[int, str]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.levelno, record.getMessage())
        if self._last.get(record.name) == key:
            return False
        self._last[record.name] = key
        return True


def configure(level: str = DEFAULT_LEVEL, stream: TextIO | None = None) -> logging.Handler:
    """Send the `dispenser` loggers' lines at `level` and above to stderr; once per process."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    if under_journal(stream=stream):
        handler.setFormatter(JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    handler.addFilter(OnceInARow())
    root = logging.getLogger("dispenser")
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False
    return handler


class EventLines:
    """An engine listener: one line per committed event, e.g.
    `dose.released seq=12 compartment=1 quantity=1` or `dose.missed seq=40 compartment=2`."""

    def __init__(self, engine: Engine | None = None) -> None:
        self.engine = engine  # to find the compartment of an event that names only its medication

    def __call__(self, events: list[dict]) -> None:
        try:
            for event in events:
                level = self.level(event)
                if log.isEnabledFor(level):
                    log.log(level, "%s", self.line(event))
        except Exception:  # noqa: BLE001 - the engine calls this before a servo moves: a log line never stops a dose
            pass

    @staticmethod
    def level(event: dict) -> int:
        if event.get("type") == EventType.ALERT_RAISED:
            return ALERT_LEVELS.get(event.get("data", {}).get("severity"), logging.WARNING)
        return EVENT_LEVELS.get(event.get("type"), logging.INFO)

    def line(self, event: dict) -> str:
        data = dict(event.get("data") or {})
        if "compartment" not in data and "medication_id" in data and self.engine is not None:
            medication = self.engine.view.medication(data["medication_id"])
            if medication is not None:
                data["compartment"] = medication.compartment
        parts = [str(event.get("type")), f"seq={event.get('seq')}"]
        parts += [f"{key}={_value(data[key])}" for key in SHOWN if key in data and data[key] is not None]
        if isinstance(data.get("problems"), list):
            parts.append(f"problems={len(data['problems'])}")
        if isinstance(data.get("events"), list) and event.get("type") == EventType.ALERT_RAISED:
            parts.append(f"about={len(data['events'])}")
        return " ".join(parts)


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    return str(value).replace(" ", "_")
