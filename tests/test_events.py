"""The event record and hash chain of contract section 3, without any storage."""
import hashlib
import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from dispenser.events import (
    GENESIS, SCHEMA, Draft, build_event, canonical, event_hash, new_event_id, verify_chain,
)

T0 = datetime(2026, 11, 21, 13, 3, 12, 120_999, tzinfo=timezone.utc)


def chain(n, start=T0, step=timedelta(minutes=1)):
    """n well-formed events, one a minute."""
    events, prev = [], GENESIS
    for seq in range(1, n + 1):
        event = build_event(Draft("dose.due", {"n": seq}, f"id-{seq}"), "disp-0001", seq,
                            start + step * (seq - 1), prev)
        events.append(event)
        prev = event["hash"]
    return events


def rehash(event):
    """Make an edited event self-consistent again, as a careful forger would."""
    event["hash"] = event_hash(event["prev_hash"], event)
    return event


def test_canonical_is_the_contract_form():
    assert canonical({"b": 1, "a": {"d": [1, 2], "c": "é"}}) == '{"a":{"c":"é","d":[1,2]},"b":1}'


def test_canonical_refuses_nan():
    with pytest.raises(ValueError):
        canonical({"x": float("nan")})


def test_event_hash_is_sha256_of_prev_hash_and_canonical_without_hash():
    event = {"seq": 1, "type": "x", "hash": "ignored"}
    expected = hashlib.sha256((GENESIS + '{"seq":1,"type":"x"}').encode("utf-8")).hexdigest()
    assert event_hash(GENESIS, event) == expected


def test_build_event_has_the_contract_fields():
    event = build_event(Draft("dose.taken", {"quantity": 1}, "e-1"), "disp-0001", 1, T0, GENESIS)
    assert list(event) == ["schema", "event_id", "device_id", "seq", "type", "at", "data",
                           "prev_hash", "hash"]
    assert event["schema"] == SCHEMA == "dispenser.event/1"
    assert event["at"] == "2026-11-21T13:03:12.120Z"
    assert event["prev_hash"] == "0" * 64
    assert event["hash"] == event_hash(GENESIS, event)
    assert json.loads(canonical(event)) == event


def test_build_event_copies_data_as_it_will_read_back():
    data = {"doses": ("a", "b"), "by_compartment": {1: "a"}}
    event = build_event(Draft("x", data, "e-1"), "disp-0001", 1, T0, GENESIS)
    data["doses"] = ()
    assert event["data"] == {"doses": ["a", "b"], "by_compartment": {"1": "a"}}
    assert event["hash"] == event_hash(GENESIS, event)


def test_new_event_id_is_a_fresh_uuid4():
    first, second = new_event_id(), new_event_id()
    assert first != second and uuid.UUID(first).version == 4


def test_draft_is_frozen_and_event_id_optional():
    draft = Draft("device.started", {})
    assert draft.event_id == ""
    with pytest.raises(AttributeError):
        draft.type = "other"


@pytest.mark.parametrize("n, reason", [(0, "0 events"), (1, "1 event"), (5, "5 events")])
def test_a_good_chain_verifies(n, reason):
    assert verify_chain(chain(n)) == (True, None, f"{reason}, chain intact")


def test_equal_at_along_seq_is_fine():
    assert verify_chain(chain(3, step=timedelta(0)))[0]


@pytest.mark.parametrize("tamper, reason", [
    (lambda e: e["data"].update(n=99), "hash does not match its content"),
    (lambda e: e.update(hash="f" * 64), "hash does not match its content"),
    (lambda e: e.update(prev_hash="a" * 64), "hash does not match its content"),
    (lambda e: rehash(e.update(prev_hash="a" * 64) or e), "prev_hash does not match the previous event's hash"),
    (lambda e: rehash(e.update(at="2026-11-21T00:00:00.000Z") or e), "at goes back in time"),
    (lambda e: e.pop("device_id"), "field device_id missing"),
])
def test_tampering_names_the_seq(tamper, reason):
    events = chain(5)
    tamper(events[2])
    assert verify_chain(events) == (False, 3, reason)


def test_a_rehashed_edit_still_breaks_the_next_link():
    events = chain(5)
    events[2]["data"]["n"] = 99
    rehash(events[2])
    assert verify_chain(events) == (False, 4, "prev_hash does not match the previous event's hash")


def test_missing_event_names_the_missing_seq():
    events = chain(6)
    del events[4]
    assert verify_chain(events) == (False, 5, "seq 5 missing")


def test_log_must_start_at_seq_1():
    assert verify_chain(chain(3)[1:]) == (False, 1, "seq 1 missing")


def test_repeated_seq():
    events = chain(3)
    assert verify_chain(events[:2] + [events[1]]) == (False, 2, "seq 2 out of order or repeated")


def test_first_event_must_chain_to_genesis():
    first = rehash(chain(1)[0] | {"prev_hash": "1" * 64})
    assert verify_chain([first]) == (False, 1, "prev_hash of the first event is not the genesis hash")


def test_verify_stops_reading_at_the_first_problem():
    events = chain(3)
    events[0]["hash"] = "0" * 64
    read = []

    def lazily():
        for event in events:
            read.append(event["seq"])
            yield event

    assert verify_chain(lazily())[1] == 1
    assert read == [1]
