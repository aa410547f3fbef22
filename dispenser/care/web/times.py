"""Pure: the times a person reads in the web view, in the patient's local time.

A patient's `timezone` (care.toml, set to their schedule's) is the clock they live by, so
every time on their page, and on their row of the overview, is read on it; the raw UTC of
the events is for machines (`care status --json`).

    local("2026-11-30T08:55:00Z", ZoneInfo("Europe/London"))   # 'Mon 30 Nov 08:55'
"""
from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from ...timeutil import parse_utc

FORMAT = "%a %d %b %H:%M"


def local(at: str | datetime | None, tz: ZoneInfo) -> str:
    """An event's time (the contract's UTC text, or an aware datetime) on the local clock; "-" for none."""
    if not at:
        return "-"
    moment = parse_utc(at) if isinstance(at, str) else at
    return f"{moment.astimezone(tz):{FORMAT}}"


def as_of(now: datetime, zones: list[str]) -> str:
    """`now` on each of the zones named (once each, in order), with the zone said: `Mon 30 Nov 09:00
    (Europe/London)`; UTC when there are none."""
    names = list(dict.fromkeys(zones)) or ["UTC"]
    return "; ".join(f"{local(now, ZoneInfo(name))} ({name})" for name in names)
