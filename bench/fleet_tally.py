"""Pure: the devices' own logs against what the care database stored: lost, doubled, lag.

The devices' logs are the truth. An event is lost when its (device, event_id) is not in
the care database with the same seq and hash; a stored row is doubled when it is a second
row for one device log entry (the same seq stored twice) or a row no device logged. Lag
is, per event, when the care service stored it (`received`) less when the device
appended it (both on this machine's wall clock).

    >>> logs = [LoggedEvent("d1", 1, "e1", "h1", 10.0), LoggedEvent("d1", 2, "e2", "h2", 10.5)]
    >>> rows = [StoredEvent("d1", 1, "e1", "h1", 10.25)]
    >>> tally = compare(logs, rows)
    >>> (tally.logged, tally.stored, tally.lost, tally.doubled)
    (2, 1, 1, 0)
    >>> tally.lags
    [0.25]
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, NamedTuple


class LoggedEvent(NamedTuple):
    """One event of a device's own log, and the wall time (epoch s) it was appended."""

    device: str
    seq: int
    event_id: str
    hash: str
    appended: float | None


class StoredEvent(NamedTuple):
    """One row of the care database's `events` table, `received` as epoch seconds."""

    device: str
    seq: int
    event_id: str
    hash: str
    received: float


@dataclass
class Tally:
    """What the comparison found; `lost_examples` names a few lost events for the report."""

    logged: int = 0
    stored: int = 0
    lost: int = 0
    doubled: int = 0
    lags: list[float] = field(default_factory=list)
    lost_examples: list[str] = field(default_factory=list)


def compare(logs: Iterable[LoggedEvent], rows: Iterable[StoredEvent]) -> Tally:
    """Every logged event looked up among the stored rows; every row accounted for once."""
    tally = Tally()
    by_key: dict[tuple[str, str], list[StoredEvent]] = {}
    for row in rows:
        tally.stored += 1
        by_key.setdefault((row.device, row.event_id), []).append(row)
    matched = 0
    for event in logs:
        tally.logged += 1
        found = [row for row in by_key.pop((event.device, event.event_id), [])]
        same = [row for row in found if row.seq == event.seq and row.hash == event.hash]
        if not same:
            tally.lost += 1
            if len(tally.lost_examples) < 5:
                tally.lost_examples.append(f"{event.device} seq {event.seq}")
            continue
        matched += 1
        if event.appended is not None:
            tally.lags.append(max(0.0, same[0].received - event.appended))
    tally.doubled = tally.stored - matched
    return tally


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile (`share` in 0..1) of `values`; NaN when there are none.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 0.5), percentile([1.0, 2.0, 3.0, 4.0], 0.99)
    (2.0, 4.0)
    """
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), -(-int(share * 1000) * len(ordered) // 1000)))
    return ordered[rank - 1]
