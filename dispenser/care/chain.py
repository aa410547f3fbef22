"""Pure: one arriving event judged against what is already stored of its device's log.

The clinic's watch (dispenser/chainwatch.py) holds a window of each log in memory; the
care service has several workers and restarts, so the stored log is its memory: the
caller reads the events stored at seq - 1, seq and seq + 1 and this module applies
chainwatch's rules to them (a fork: two events for one seq; a rewrite: a hash that does
not verify or a link that does not chain). Gaps are counted from the stored seqs
(`missing`), since a shared subscription may store seq 6 a moment before seq 5.

    >>> first = {"event_id": "e1", "device_id": "d", "seq": 1, "prev_hash": GENESIS}
    >>> first["hash"] = event_hash(GENESIS, first)
    >>> judge("d", first, {}, None, None)
    (True, [])
    >>> judge("d", first, {1: (entry(first),)}, entry(first), 1)   # the same event again
    (False, [])
    >>> missing(first=1, top=9, present=[1, 2, 5, 9])
    ((3, 4), (6, 8))
"""
from __future__ import annotations

from ..chainwatch import DeviceChain, Entry, Finding, seq_text
from ..events import GENESIS, event_hash

__all__ = ["GENESIS", "event_hash", "Entry", "Finding", "entry", "judge", "missing", "seq_text"]

MAX_RANGES = 20   # gap ranges named in one alert; more are counted, not listed


def entry(event: dict) -> Entry:
    """What the check needs of one event."""
    return Entry(event["event_id"], event["hash"], event["prev_hash"])


def judge(device: str, event: dict, neighbours: dict[int, tuple[Entry, ...]],
          same_id: Entry | None, same_id_seq: int | None) -> tuple[bool, list[Finding]]:
    """(new, findings) for `event`, which came on `device`'s topic.

    `neighbours`: the stored events for seq - 1, seq and seq + 1 (absent seqs left out);
    `same_id`: the event stored before under this device and event_id, if any, and
    `same_id_seq` its seq: both or neither, always passed (a default once let a caller skip
    the seq and, with it, the check that the same id came back under another seq).
    Not new: the very same event again (at-least-once delivery), to be ignored.
    """
    if (same_id is None) != (same_id_seq is None):
        raise ValueError("judge: same_id and same_id_seq go together (both or neither)")
    seq = event["seq"]
    if same_id is not None and same_id == entry(event) and same_id_seq == seq:
        return False, []
    chain = DeviceChain(device, window=max(3, len(neighbours) + 1))
    chain.known = {s: tuple(entries) for s, entries in neighbours.items() if abs(s - seq) <= 1}
    chain.top = max([seq, *chain.known])
    _, findings = chain.check(event, on_events_topic=False)
    if same_id is not None:
        findings.append(Finding("fork", device, seq, (
            f"seq {seq}: event_id {event['event_id']} was stored before as seq {same_id_seq} "
            f"with another hash: the log was changed and sent again")))
    claimed = event.get("device_id")
    if claimed != device:
        findings.append(Finding("device_mismatch", device, seq, (
            f"seq {seq}: the event says device_id {claimed!r} but came on {device}'s topic; stored as {device}'s")))
    return True, findings


def missing(first: int, top: int, present: list[int]) -> tuple[tuple[int, int], ...]:
    """The runs of seqs in [first, top] not in `present` (sorted, distinct), as (from, to)."""
    runs: list[tuple[int, int]] = []
    expected = first
    for seq in present:
        if seq < expected:
            continue
        if seq > top:
            break
        if seq > expected:
            runs.append((expected, seq - 1))
        expected = seq + 1
    if expected <= top:
        runs.append((expected, top))
    return tuple(runs)


def gap_text(runs: tuple[tuple[int, int], ...]) -> str:
    """`seq 3-4, 6-8 not received` (the first MAX_RANGES runs named, the rest counted)."""
    count = sum(b - a + 1 for a, b in runs)
    named = seq_text(runs[:MAX_RANGES]) + (f" and {len(runs) - MAX_RANGES} more runs" if len(runs) > MAX_RANGES else "")
    return f"{named} not received ({count} event{'s' if count != 1 else ''})"
