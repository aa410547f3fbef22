"""Event records, their canonical JSON and the hash chain (contract section 3).

Pure: no clock, no storage. The store gives a draft its `seq`, `at` and hashes
through `build_event`; `verify_chain` checks a log read back from anywhere.

    >>> from datetime import timezone
    >>> at = datetime(2026, 11, 21, 13, 3, 12, tzinfo=timezone.utc)
    >>> first = build_event(Draft("device.started", {}, "e-1"), "disp-0001", 1, at, GENESIS)
    >>> verify_chain([first])
    (True, None, '1 event, chain intact')
"""
from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterable

from .timeutil import format_at
from .vocabulary import EventType

GENESIS = "0" * 64
SCHEMA = "dispenser.event/1"

EVENT_KEYS = ("schema", "event_id", "device_id", "seq", "type", "at", "data", "prev_hash", "hash")


def canonical(obj: Any) -> str:
    """The one JSON form that is hashed and signed: sorted keys, no spaces, UTF-8 text.

    NaN and infinities are refused: they are not JSON, and a clinic parser would choke.
    The hash chain keeps this form. For events it is also their RFC 8785 form: every number
    in an event is an integer (whole tablets, seq, counts; times are strings) and its keys
    are ASCII, where the two forms cannot differ. A schedule's signature is over RFC 8785
    (docjson.signed_form), where a clinic's fractional numbers make the two differ.
    """
    return _CANONICAL(obj)


# One encoder for every call: json.dumps with options builds a new JSONEncoder each time.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def event_hash(prev_hash: str, event: dict) -> str:
    """sha256 of the previous hash followed by the canonical event without its `hash`."""
    body = {key: value for key, value in event.items() if key != "hash"}
    return hashlib.sha256((prev_hash + canonical(body)).encode("utf-8")).hexdigest()


def new_event_id() -> str:
    """A fresh random event id; the clinic deduplicates on it."""
    return str(uuid.uuid4())


@dataclass(frozen=True)
class Draft:
    """An event before the log gives it `seq`, `at` and hashes.

    An empty `event_id` lets the store pick one with its id factory, so that the
    simulator can make ids deterministic; give one when another event must name it.
    """

    type: EventType
    data: dict
    event_id: str = ""


def build_event(draft: Draft, device_id: str, seq: int, at: datetime, prev_hash: str) -> dict:
    """The full event record for `draft` at position `seq`, chained to `prev_hash`."""
    return build_event_text(draft, device_id, seq, at, prev_hash)[0]


def build_event_text(draft: Draft, device_id: str, seq: int, at: datetime, prev_hash: str) -> tuple[dict, str]:
    """`build_event`, and the canonical text of its `data` (what the log stores), encoded once
    for both: the hash is put together around it (`hash_of_parts`), as `event_hash` would."""
    data = json.loads(canonical(draft.data))  # a copy, exactly as it reads back
    text = canonical(data)  # not always the draft's text: {10: 1, 9: 1} sorts again as strings
    event = {
        "schema": SCHEMA,
        "event_id": draft.event_id,
        "device_id": device_id,
        "seq": seq,
        "type": draft.type,
        "at": format_at(at),
        "data": data,
        "prev_hash": prev_hash,
    }
    event["hash"] = hash_of_parts(prev_hash, event["at"], text, device_id, draft.event_id, SCHEMA, seq, draft.type)
    return event, text


def hash_of_parts(prev_hash: str, at: Any, data_text: str, device_id: Any, event_id: Any, schema: Any,
                  seq: Any, type_: Any, encode: Callable[[Any], str] | None = None) -> str:
    """`event_hash` of an event given by its fields, `data` as canonical text (a stored row's).

    The canonical form has sorted keys, so the hashed text is put together around `data`'s
    text; every other field is encoded as `canonical` encodes it (or by `encode`, for a
    field that is neither text nor an integer: a damaged row's).
    """
    e, j = encode or _CANONICAL, _json_text
    body = (f'{{"at":{j(at, e)},"data":{data_text},"device_id":{j(device_id, e)},'
            f'"event_id":{j(event_id, e)},"prev_hash":{j(prev_hash, e)},'
            f'"schema":{j(schema, e)},"seq":{j(seq, e)},"type":{j(type_, e)}}}')
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


def _json_text(value: Any, encode: Callable[[Any], str]) -> str:
    """One field as an ensure_ascii=False encoder writes it; text and integers (every field
    but `data`, as the store writes them) without the encoder: its string function, int.__repr__."""
    kind = type(value)
    return _JSON_STRING(value) if kind is str else int.__repr__(value) if kind is int else encode(value)


_JSON_STRING = json.encoder.encode_basestring  # what an ensure_ascii=False encoder does with a str


def verify_chain(events: Iterable[dict]) -> tuple[bool, int | None, str]:
    """Check a log in `seq` order: (ok, first bad seq or None, a short reason).

    Stops at the first problem, so a caller reading a long log lazily reads no further.
    """
    expected_seq, prev_hash, prev_at = 1, GENESIS, ""
    for event in events:
        problem = _problem(event, expected_seq, prev_hash, prev_at)
        if problem is not None:
            return (False, *problem)
        expected_seq, prev_hash, prev_at = expected_seq + 1, event["hash"], event["at"]
    count = expected_seq - 1
    return True, None, f"{count} event{'' if count == 1 else 's'}, chain intact"


def _problem(event: dict, expected_seq: int, prev_hash: str, prev_at: str) -> tuple[int, str] | None:
    """What is wrong with one event given its predecessor, as (seq to name, reason)."""
    missing = [key for key in EVENT_KEYS if key not in event]
    if missing:
        return expected_seq, f"field {missing[0]} missing"
    seq = event["seq"]
    if not isinstance(seq, int) or isinstance(seq, bool):
        return expected_seq, "seq is not an integer"
    if seq > expected_seq:
        return expected_seq, f"seq {expected_seq} missing"
    if seq < expected_seq:
        return seq, f"seq {seq} out of order or repeated"
    if event_hash(event["prev_hash"], event) != event["hash"]:
        return seq, "hash does not match its content"
    if event["prev_hash"] != prev_hash:
        if seq == 1:
            return seq, "prev_hash of the first event is not the genesis hash"
        return seq, "prev_hash does not match the previous event's hash"
    if not isinstance(event["at"], str) or event["at"] < prev_at:
        return seq, "at goes back in time"
    return None
