"""The clinic's check of each device's log as it arrives: seq continuity and the hash chain.

Pure: no I/O, no clock. A device's log has no gaps and every event chains to the one
before it (contract section 3), so what the clinic receives can be checked as it
arrives, without the rest of the log: a `seq` that jumps (a gap), two different events
for one `seq` (a fork: the log was edited and sent again), an event that does not chain
to its neighbour or whose own hash does not verify (a rewrite). On the device alone an
edited log whose hashes were recomputed still verifies; only someone who kept the first
version can tell, and the clinic is that someone.

Delivery is at least once and may reorder across reconnects (contract section 4), so
the same event may come again (ignored), and a late one may fill a gap (checked against
both neighbours). Memory is bounded: the last `window` seqs per device, `max_devices`
devices (the least recently heard one is forgotten first: an account that may write
anywhere can invent device topics), and `remember` event ids in all.

    >>> watch = ChainWatch()
    >>> first = {"event_id": "e1", "device_id": "d", "seq": 1, "prev_hash": GENESIS}
    >>> first["hash"] = event_hash(GENESIS, first)
    >>> watch.check("d", first)
    (True, [])
    >>> watch.check("d", first)     # the same event again: nothing new
    (False, [])
    >>> new, findings = watch.check("d", {**first, "event_id": "e4", "seq": 4})
    >>> [(f.kind, f.seq) for f in findings]     # a copy with another seq; 2 and 3 not heard
    [('rewrite', 4), ('gap', 4)]
    >>> findings[1].missing
    ((2, 3),)
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, NamedTuple, TypeVar

from .events import GENESIS, event_hash

WINDOW = 128            # seqs kept per device below the highest one heard
MAX_DEVICES = 1000      # devices followed at once
MAX_VARIANTS = 3        # different events kept for one seq (after that forks are reported, not kept)
REMEMBER = 100_000      # event ids kept for events older than the window


@dataclass(frozen=True)
class Finding:
    """Something wrong with what a device sent: `kind` is gap, fork, rewrite,
    device_mismatch, unchecked (too old to check) or forgotten (a device dropped to
    bound memory). `detail` says it in words; `missing` lists a gap's seqs as ranges."""

    kind: str
    device: str
    seq: int | None
    detail: str
    missing: tuple[tuple[int, int], ...] = ()


class Entry(NamedTuple):
    """What is kept of one event: enough to tell a duplicate from a fork and to chain."""

    event_id: str
    hash: str
    prev_hash: str


K = TypeVar("K")
V = TypeVar("V")


class BoundedMap(Generic[K, V]):
    """A dict that forgets its least recently used key beyond `limit`.

    A watcher runs for months and hears whatever anyone writes: every table keyed by
    something a sender chooses (a device name, an event id) must have a ceiling.
    """

    def __init__(self, limit: int):
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K, default: V | None = None) -> V | None:
        """The value for `key` (now the most recently used), or `default`."""
        if key not in self._items:
            return default
        self._items.move_to_end(key)
        return self._items[key]

    def put(self, key: K, value: V) -> K | None:
        """Set `key`; returns the key forgotten to make room, or None."""
        self._items[key] = value
        self._items.move_to_end(key)
        if len(self._items) > self.limit:
            return self._items.popitem(last=False)[0]
        return None

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items


def hash_ok(event: dict) -> bool:
    """Whether the event's `hash` is the hash of its own content and `prev_hash`."""
    return event_hash(event["prev_hash"], event) == event["hash"]


def ranges(seqs: list[int]) -> tuple[tuple[int, int], ...]:
    """Sorted seqs as (first, last) runs: [7, 8, 10] -> ((7, 8), (10, 10))."""
    runs: list[list[int]] = []
    for seq in seqs:
        if runs and seq == runs[-1][1] + 1:
            runs[-1][1] = seq
        else:
            runs.append([seq, seq])
    return tuple((first, last) for first, last in runs)


def seq_text(runs: tuple[tuple[int, int], ...]) -> str:
    """((7, 8), (10, 10)) -> 'seq 7-8, 10'."""
    return "seq " + ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _short(hash_: str) -> str:
    return hash_[:12]


class DeviceChain:
    """One device's recent log as heard: for each of the last `window` seqs, the events
    received for it (one, or several for a fork)."""

    def __init__(self, device: str, window: int = WINDOW):
        self.device = device
        self.window = window
        self.known: dict[int, tuple[Entry, ...]] = {}
        self.top = 0          # the highest seq heard on any topic (0: none yet)
        self.events_top = 0   # the highest seq heard on the events topic, where every seq comes

    def too_old(self, seq: int) -> bool:
        """Below the window: its neighbours are forgotten, so it cannot be checked here."""
        return self.top > 0 and seq <= self.top - self.window

    def check(self, event: dict, on_events_topic: bool = True) -> tuple[bool, list[Finding]]:
        """(new, findings) for one event within the window; remembers it when new.

        Gaps count only on the events topic: the alerts topic carries alerts alone, so its
        seqs jump by design (a caregiver's account may read nothing else).
        """
        seq = event["seq"]
        entry = Entry(event["event_id"], event["hash"], event["prev_hash"])
        variants = self.known.get(seq, ())
        if entry in variants:
            return False, []
        findings = [] if hash_ok(event) else [self._finding(
            "rewrite", seq, f"seq {seq}: its hash does not match its content (the event was altered)")]
        if variants:
            findings.append(self._fork(seq, variants[0], entry))
        findings += self._link_below(seq, entry)
        if not variants:  # a fork is already reported; its successor was the other branch's
            findings += self._link_above(seq, entry)
        if len(variants) < MAX_VARIANTS:
            self.known[seq] = variants + (entry,)
        if on_events_topic:
            findings += self._gap(seq)
        self.top = max(self.top, seq)
        self._trim()
        return True, findings

    def _finding(self, kind: str, seq: int | None, detail: str,
                 missing: tuple[tuple[int, int], ...] = ()) -> Finding:
        return Finding(kind, self.device, seq, detail, missing)

    def _fork(self, seq: int, first: Entry, other: Entry) -> Finding:
        return self._finding("fork", seq, (
            f"seq {seq}: two different events (event_id {first.event_id} hash {_short(first.hash)}..., "
            f"then event_id {other.event_id} hash {_short(other.hash)}...): the log was changed and sent again"))

    def _link_below(self, seq: int, entry: Entry) -> list[Finding]:
        """The event must chain to one of the events heard for seq - 1 (or to genesis)."""
        if seq == 1:
            if entry.prev_hash == GENESIS:
                return []
            return [self._finding("rewrite", seq, "seq 1: prev_hash is not the genesis hash")]
        below = self.known.get(seq - 1)
        if below is None or any(entry.prev_hash == other.hash for other in below):
            return []
        return [self._finding("rewrite", seq, (
            f"seq {seq}: prev_hash {_short(entry.prev_hash)}... does not match the hash of seq {seq - 1} "
            f"({_short(below[0].hash)}...): the chain was rewritten"))]

    def _link_above(self, seq: int, entry: Entry) -> list[Finding]:
        """A late arrival must also be the event that seq + 1, heard earlier, chained to."""
        above = self.known.get(seq + 1)
        if above is None or any(other.prev_hash == entry.hash for other in above):
            return []
        return [self._finding("rewrite", seq + 1, (
            f"seq {seq + 1}: prev_hash {_short(above[0].prev_hash)}... does not match the hash of "
            f"seq {seq} ({_short(entry.hash)}...), which arrived later: the chain was rewritten"))]

    def _gap(self, seq: int) -> list[Finding]:
        """A jump past the highest seq heard: name the seqs not (yet) received."""
        last, self.events_top = self.events_top, max(self.events_top, seq)
        if last == 0 or seq <= last + 1:
            return []
        # Bounded however far it jumps: only seqs in the window can have been heard.
        heard = sorted(s for s in self.known if last < s < seq)
        missing, start = [], last + 1
        for s in heard + [seq]:
            if s > start:
                missing.append((start, s - 1))
            start = s + 1
        if not missing:
            return []
        return [self._finding("gap", seq, f"{seq_text(tuple(missing))} not received (yet)",
                              missing=tuple(missing))]

    def _trim(self) -> None:
        """Forget seqs below the window, so a device costs at most `window` entries."""
        if len(self.known) > self.window:
            floor = self.top - self.window
            for seq in [s for s in self.known if s <= floor]:
                del self.known[seq]


class ChainWatch:
    """Every device's chain, by the device the topic names (never the payload's claim).

    `check(device, event, on_events_topic)` returns (new, findings): `new` is False for
    an event heard before (the same seq, event id and hash), which the caller shows
    once. The event must already have been read safely: `seq` a positive int,
    `event_id`, `hash`, `prev_hash` strings (clinic.event_problem checks that).
    """

    def __init__(self, window: int = WINDOW, max_devices: int = MAX_DEVICES, remember: int = REMEMBER):
        self.window = window
        self.devices: BoundedMap[str, DeviceChain] = BoundedMap(max_devices)
        # (device, event_id) -> (seq, hash), for old events
        self.ids: BoundedMap[tuple[str, str], tuple[int, str]] = BoundedMap(remember)

    def check(self, device: str, event: dict, on_events_topic: bool = True) -> tuple[bool, list[Finding]]:
        chain, findings = self._chain(device)
        findings += self._claimed_device(device, event)
        key, seen = (device, event["event_id"]), (event["seq"], event["hash"])
        before = self.ids.get(key)
        if chain.too_old(event["seq"]):
            new, more = self._old(chain, event, before)
        else:
            new, more = chain.check(event, on_events_topic)
            if new and before is not None and before[0] != event["seq"]:
                more.append(Finding("fork", device, event["seq"], (
                    f"seq {event['seq']}: event_id {event['event_id']} was already seq {before[0]}")))
        if not new:
            return False, []
        self.ids.put(key, seen)
        return True, findings + more

    def _chain(self, device: str) -> tuple[DeviceChain, list[Finding]]:
        chain = self.devices.get(device)
        if chain is not None:
            return chain, []
        chain = DeviceChain(device, self.window)
        forgotten = self.devices.put(device, chain)
        if forgotten is None:
            return chain, []
        return chain, [Finding("forgotten", forgotten, None, (
            f"more than {self.devices.limit} devices heard: forgot the chain of {forgotten}, heard from "
            "least recently (its next event is checked as if it were the first)"))]

    def _claimed_device(self, device: str, event: dict) -> list[Finding]:
        """The topic says which device this is (the broker's ACL); the payload only claims."""
        claimed = event.get("device_id")
        if claimed == device:
            return []
        return [Finding("device_mismatch", device, event["seq"], (
            f"seq {event['seq']}: the event says device_id {claimed!r} but came on {device}'s topic; "
            f"counted as {device}'s"))]

    def _old(self, chain: DeviceChain, event: dict, before: tuple[int, str] | None) -> tuple[bool, list[Finding]]:
        """An event below the window: a duplicate if its id was heard with this seq and hash."""
        seq = event["seq"]
        if before == (seq, event["hash"]):
            return False, []
        if before is not None:
            detail = (f"seq {seq}: event_id {event['event_id']} was heard before as seq {before[0]} "
                      f"hash {_short(before[1])}..., now hash {_short(event['hash'])}...")
            return True, [Finding("fork", chain.device, seq, detail)]
        detail = (f"seq {seq}: arrived after seq {chain.top}, older than the last {chain.window} seqs this "
                  "watcher keeps per device: not checked against the chain")
        findings = [] if hash_ok(event) else [Finding(
            "rewrite", chain.device, seq, f"seq {seq}: its hash does not match its content (the event was altered)")]
        return True, [Finding("unchecked", chain.device, seq, detail), *findings]
