"""UTC time formats of the contract, in one place.

Event `at` carries milliseconds, every other time seconds; both end in `Z`.
All datetimes inside the dispenser are timezone-aware UTC.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone

UTC = timezone.utc

# RFC 3339's date-time (section 5.6), as the contract writes it: seconds always, a fraction
# if any, `Z` or `+HH:MM`/`-HH:MM`. ASCII digits only (`\d` would take any script's).
RFC3339 = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
                      r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?"
                      r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])\Z")


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


def parse_rfc3339(text: str) -> datetime:
    """An RFC 3339 date-time from outside (a document's `issued_at`) -> aware UTC.

    Stricter than `parse_utc`: `datetime.fromisoformat` also reads dates alone, week
    dates, `20261120T0900`, a space for `T`; a clinic's form is the contract's, one
    spelling. ValueError for anything else, or a shape that is no real time (`24:00`).
    """
    if not RFC3339.match(text):
        raise ValueError(f"{text!r} is not an RFC 3339 date-time")
    return parse_utc(text)


def truncate_ms(moment: datetime) -> datetime:
    """Drop what an event's `at` cannot carry, so stored and live times compare equal."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)
