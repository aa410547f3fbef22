"""UTC time formats of the contract, in one place.

Event `at` carries milliseconds, every other time seconds; both end in `Z`.
All datetimes inside the dispenser are timezone-aware UTC.
"""
from __future__ import annotations

from datetime import datetime, timezone

UTC = timezone.utc


def format_at(moment: datetime) -> str:
    """`2026-11-21T13:03:12.120Z`: an event's `at`."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def format_utc(moment: datetime) -> str:
    """`2026-11-21T13:00:00Z`: every time inside `data`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_utc(text: str) -> datetime:
    """Parse an ISO time with an offset or `Z` into aware UTC; ValueError otherwise."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset")
    return moment.astimezone(UTC)


def truncate_ms(moment: datetime) -> datetime:
    """Drop what an event's `at` cannot carry, so stored and live times compare equal."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)
