"""The clinic's side and one-shot sync: `dispenser clinic ...` and `dispenser sync`.

The pure part (dedup, lines) is tested directly; the commands with their arguments as a
person gives them, in this process (tests/inprocess.py) where the process itself is not
under test, as `python -m dispenser ...` where it is (watches stopped, a sync left running),
against a private Mosquitto per test (tests/broker.py).
"""
from __future__ import annotations

import base64
import json
import signal
import stat
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from broker import Clinic
from inprocess import dispenser as run_in_process
from support import DEMO, interruptible
from waiting import HANG, wait_until
from dispenser.chainwatch import BoundedMap
from dispenser.clinic import Watcher, alert_line, event_line, split_topic, status_line
from dispenser.events import EVENT_KEYS, GENESIS, Draft, build_event, event_hash, verify_chain
from dispenser.signing import sign_document, verify_document
from dispenser.store import Store

ROOT = Path(__file__).resolve().parents[1]
DEVICE = "disp-0001"
BASE = f"pilldispenser/{DEVICE}"


def dispenser(*args: object) -> subprocess.CompletedProcess:
    return run_in_process(*args, cwd=ROOT)


def write_config(path: Path, db: Path, port: int | None = None) -> Path:
    """The config of the brief; no [mqtt] table when `port` is None."""
    text = f'[device]\nid = "{DEVICE}"\n'
    if port is not None:
        text += f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\ntls = false\n'
    text += f'[storage]\ndb = "{db}"\n'
    path.write_text(text)
    return path


AT0 = datetime(2026, 11, 21, 13, 0, tzinfo=timezone.utc)
ALERT = Draft("alert.raised", {"alert_id": "a1", "kind": "dose.unconfirmed", "severity": "warning",
                               "message": "Naltrexone was released but not confirmed", "events": ["id-1"]})


def log(*drafts: Draft | str, start: int = 1, prev: str = GENESIS, device: str = DEVICE) -> list[dict]:
    """Events chained as the device chains them; a plain string is a type with empty data."""
    events = []
    for seq, draft in enumerate(drafts, start):
        draft = Draft(draft, {}) if isinstance(draft, str) else draft
        draft = draft if draft.event_id else Draft(draft.type, draft.data, f"id-{seq}")
        events.append(build_event(draft, device, seq, AT0 + timedelta(seconds=seq % 86_400), prev))
        prev = events[-1]["hash"]
    return events


def numbered(count: int, start: int = 1, prev: str = GENESIS) -> list[dict]:
    """`count` dose.taken events from seq `start`."""
    return log(*["dose.taken"] * count, start=start, prev=prev)


def event(seq: int, type_: str = "dose.taken", event_id: str | None = None, **data) -> dict:
    """One event at `seq`, chained to seq - 1 of `numbered` (so a run of these chains too)."""
    prev = numbered(seq - 1)[-1]["hash"] if seq > 1 else GENESIS
    return log(Draft(type_, data, event_id or f"id-{seq}"), start=seq, prev=prev)[0]


def alert(seq: int) -> dict:
    prev = numbered(seq - 1)[-1]["hash"] if seq > 1 else GENESIS
    return log(ALERT, start=seq, prev=prev)[0]


def raw(obj: dict) -> bytes:
    return json.dumps(obj).encode()


@pytest.fixture
def simulated_db(tmp_path) -> Path:
    """The first day of the examples, logged offline: 18 events wait in the outbox (one the
    alert that the schedule was applied locally)."""
    db = tmp_path / "device.db"
    offline = write_config(tmp_path / "offline.toml", db)
    result = dispenser("simulate", "--scenario", DEMO / "first-day.toml", "--config", offline, "--db", db)
    assert result.returncode == 0, result.stderr
    return db


def backlog(db: Path) -> int:
    with Store.open(db, DEVICE) as store:
        return store.backlog()


# ------------------------------------------------------------------------ pure logic


def feed(watcher: Watcher, *events: dict, kind: str = "events", device: str = DEVICE) -> list[str]:
    """Every line the watcher prints for these events, in order."""
    return [line for e in events for line in watcher.handle(f"pilldispenser/{device}/{kind}", raw(e))]


def test_bounded_map_forgets_the_least_recently_used_beyond_the_limit():
    seen = BoundedMap(limit=3)
    assert [seen.put(key, 1) for key in "abc"] == [None, None, None]
    assert seen.get("a") == 1                 # a is now the most recently used
    assert seen.put("d", 1) == "b" and len(seen) == 3
    assert "b" not in seen and "a" in seen


def test_an_event_twice_and_an_alert_on_both_topics_are_shown_once_each():
    e1, a2, e3 = log("dose.taken", ALERT, "dose.taken")
    watcher = Watcher("pilldispenser")
    lines = []
    for topic, payload in [("events", e1), ("events", e1), ("alerts", a2), ("events", a2), ("alerts", a2),
                           ("events", e3)]:
        lines += watcher.handle(f"{BASE}/{topic}", raw(payload))
    assert lines == [event_line(e1), alert_line(a2), event_line(e3)]
    assert lines[1] == ("!! ALERT [warning] disp-0001: Naltrexone was released but not confirmed"
                        "  (seq 2, 2026-11-21T13:00:02.000Z)")
    assert watcher.events_shown == 3


def test_event_line_is_seq_at_device_type_summary():
    line = event_line(event(17, medication_id="sertraline", scheduled_at="2026-11-21T13:00:00Z", quantity=1))
    assert line.split() == ["17", "2026-11-21T13:00:17.000Z", DEVICE, "dose.taken",
                            "medication_id=sertraline", "scheduled_at=2026-11-21T13:00:00Z", "quantity=1"]


def test_status_is_shown_when_it_changes_only():
    watcher = Watcher("pilldispenser")
    online = raw({"online": True, "device_id": DEVICE, "since": "2026-11-21T06:00:00Z"})
    shown = [watcher.handle(f"{BASE}/status", payload) for payload in
             (online, online, raw({"online": False}), raw({"online": False}), b"")]
    assert shown == [[f"== {DEVICE} online since 2026-11-21T06:00:00Z"], [], [f"== {DEVICE} OFFLINE"], [], []]
    assert status_line("d", {"online": False, "since": "X"}) == "== d OFFLINE since X"


def test_state_is_shown_when_more_than_its_time_changes():
    watcher = Watcher("pilldispenser")
    state = {"device_id": DEVICE, "at": "2026-11-21T06:00:00Z", "schedule_version": 12, "backlog": 0,
             "next_dose": {"medication_id": "sertraline", "scheduled_at": "2026-11-21T13:00:00Z", "quantity": 1},
             "stock": {"sertraline": {"compartment": 1, "count": 27}}}
    first = watcher.handle(f"{BASE}/state", raw(state))
    assert first == [f".. {DEVICE} state: schedule v12; next sertraline x1 at 2026-11-21T13:00:00Z; "
                     "stock sertraline 27; backlog 0"]
    assert watcher.handle(f"{BASE}/state", raw({**state, "at": "2026-11-21T06:01:00Z"})) == []
    assert len(watcher.handle(f"{BASE}/state", raw({**state, "backlog": 3}))) == 1
    [held] = watcher.handle(f"{BASE}/state", raw({**state, "backlog": 3, "clock_trusted": False}))
    assert held.endswith("; backlog 3; CLOCK NOT SET: doses held")


def test_a_gap_in_seq_is_pointed_out_once_and_late_arrivals_fill_it_without_a_warning():
    events = numbered(9)
    watcher = Watcher("pilldispenser")
    lines = feed(watcher, *(events[seq - 1] for seq in (5, 6, 9, 7, 8)))
    assert lines == [event_line(events[4]), event_line(events[5]), f"-- {DEVICE}: seq 7-8 not received (yet)",
                     event_line(events[8]), event_line(events[6]), event_line(events[7])]


def test_a_gap_names_only_the_seqs_still_missing():
    events = numbered(12)
    watcher = Watcher("pilldispenser")
    feed(watcher, events[0])
    feed(watcher, events[4], kind="alerts")  # seq 5 came first on the alerts topic
    assert feed(watcher, events[11])[0] == f"-- {DEVICE}: seq 2-4, 6-11 not received (yet)"


def test_reordered_and_resent_events_across_a_reconnect_are_shown_once_without_warnings():
    events = numbered(30)
    watcher = Watcher("pilldispenser")
    order = list(range(1, 21)) + list(range(15, 21)) + [24, 22, 21, 23] + list(range(21, 31))
    lines = feed(watcher, *(events[seq - 1] for seq in order))
    assert [line for line in lines if not line.startswith(" ")] == [f"-- {DEVICE}: seq 21-23 not received (yet)"]
    assert watcher.events_shown == 30


def test_the_alerts_topic_alone_jumps_by_design_and_is_no_gap():
    events = log("dose.taken", ALERT, "dose.taken", "dose.taken", ALERT, "dose.taken", ALERT)
    lines = feed(Watcher("pilldispenser"), events[1], events[4], events[6], kind="alerts")
    assert lines == [alert_line(events[1]), alert_line(events[4]), alert_line(events[6])]


def test_json_lines_are_the_events_unchanged_and_deduplicated():
    watcher = Watcher("pilldispenser", json_lines=True)
    lines = watcher.handle(f"{BASE}/events", raw(event(1))) + watcher.handle(f"{BASE}/events", raw(event(1)))
    assert [json.loads(line) for line in lines] == [event(1)]
    [status] = watcher.handle(f"{BASE}/status", raw({"online": True}))
    assert json.loads(status) == {"topic": f"{BASE}/status", "payload": {"online": True}}


@pytest.mark.parametrize("topic, payload, expected", [
    ("other/disp-0001/events", b"{}", []),
    (f"{BASE}/schedule/set", b"{}", []),
    (f"{BASE}/events", b"not json", [f"?? {BASE}/events: not JSON (8 bytes)"]),
    (f"{BASE}/events", b"[1]", [f"?? {BASE}/events: not a JSON object"]),
    (f"{BASE}/events", b'{"seq": 1}', [f"?? {BASE}/events: an event without schema"]),
])
def test_what_cannot_be_read_is_said_or_ignored(topic, payload, expected):
    assert Watcher("pilldispenser").handle(topic, payload) == expected


def test_split_topic():
    assert split_topic("a/b", "a/b/disp-1/alerts") == ("disp-1", "alerts")
    assert split_topic("a/b", "a/b/disp-1/x") is None
    assert split_topic("a/b", "a/bc/disp-1/events") is None


# ------------------------------------------------------------------------ hostile payloads

HOSTILE_BYTES = {
    "deep array": b"[" * 20_000,
    "deep object": b'{"a":' * 20_000,
    "deep but closed": b"[" * 5_000 + b"]" * 5_000,
    "invalid utf-8": b'{"seq": 1, "x": "\xff\xfe"}',
    "utf-16": '{"seq": 1}'.encode("utf-16"),
    "1e999": b'{"seq": 1, "data": {"quantity": 1e999}}',
    "-1e999": b'{"seq": -1e999}',
    "NaN": b'{"seq": NaN}',
    "5000-digit int": b'{"seq": ' + b"9" * 5_000 + b"}",
    "huge exponent": b'{"seq": 1e99999999999999}',
    "array": b"[1, 2, 3]",
    "number": b"12",
    "string": b'"event"',
    "null": b"null",
    "lone surrogate": b'{"event_id": "\\ud800"}',
    "duplicate key": b'{"seq": 1, "seq": 2}',
    "10 MB": b'{"pad": "' + b"x" * 10_000_000 + b'"}',
    "empty object": b"{}",
    "truncated": b'{"seq": 1',
}


def wrong_types() -> list[tuple[str, object]]:
    """(field, value) for every field of an event with a value of the wrong type or range."""
    bad = {"schema": [None, 1, "dispenser.event/2"],
           "event_id": [None, 1, "", [], {"a": 1}, "x" * 201],
           "device_id": [None, 1, "", ["disp-0001"]],
           "seq": [None, "1", 1.0, True, 0, -1, 2 ** 63, [], {}],
           "type": [None, 7, "", {"a": 1}],
           "at": [None, 1, "", []],
           "data": [None, [], "x", 1, True],
           "prev_hash": [None, 1, "zz", "A" * 64, "0" * 63, []],
           "hash": [None, 1, "zz", "F" * 64, "0" * 65]}
    return [(field, value) for field, values in bad.items() for value in values]


def assert_one_unreadable_line(watcher: Watcher, topic: str, payload: bytes) -> None:
    lines = watcher.handle(topic, payload)
    assert len(lines) == 1 and lines[0].startswith(f"?? {topic}: "), lines
    assert len(lines[0]) < 200


@pytest.mark.parametrize("name", HOSTILE_BYTES)
@pytest.mark.parametrize("kind", ["events", "alerts", "status", "state"])
def test_no_payload_crashes_the_watcher(name, kind):
    watcher = Watcher("pilldispenser")
    topic = f"{BASE}/{kind}"
    payload = HOSTILE_BYTES[name]
    if name == "empty object" and kind in ("status", "state"):
        assert len(watcher.handle(topic, payload)) == 1   # an (odd) status or state, shown
    else:
        assert_one_unreadable_line(watcher, topic, payload)
    assert feed(watcher, event(1)) == [event_line(event(1))]   # and it carries on


@pytest.mark.parametrize("field", EVENT_KEYS)
def test_an_event_missing_a_field_is_named_not_shown(field):
    watcher = Watcher("pilldispenser")
    payload = raw({key: value for key, value in event(1).items() if key != field})
    assert watcher.handle(f"{BASE}/events", payload) == [f"?? {BASE}/events: an event without {field}"]
    assert watcher.events_shown == 0


@pytest.mark.parametrize("field, value", wrong_types())
def test_a_field_of_the_wrong_type_is_named_not_shown(field, value):
    watcher = Watcher("pilldispenser")
    lines = watcher.handle(f"{BASE}/events", raw({**event(1), field: value}))
    assert len(lines) == 1 and lines[0].startswith(f"?? {BASE}/events: {field} "), lines
    assert watcher.events_shown == 0


# The same moment (or none) in spellings the device never writes: the care service orders
# `at` as text, which is the time's order only in the device's one form.
OTHER_SPELLINGS = ["2026-11-24T14:01:00.000+00:00", "2026-11-24T15:01:00.000+01:00", "2026-11-24T14:01:00Z",
                   "2026-11-24T14:01:00.000000Z", "2026-11-24 14:01:00.000Z", "2026-11-24t14:01:00.000z",
                   "2026-11-24T14:01:00.000Z\n", "2026-02-30T14:01:00.000Z", "2026-11-24T24:00:00.000Z",
                   "\uff12026-11-24T14:01:00.000Z", "1764000000"]


@pytest.mark.parametrize("at", OTHER_SPELLINGS)
def test_an_at_in_another_spelling_is_named_not_shown(at):
    watcher = Watcher("pilldispenser")
    odd = {**event(1), "at": at}
    odd["hash"] = event_hash(GENESIS, odd)   # its chain verifies: only the spelling is wrong
    assert watcher.handle(f"{BASE}/events", raw(odd)) == [
        f"?? {BASE}/events: at is not a UTC time in the device's form (2026-11-21T13:03:12.120Z)"]
    assert watcher.events_shown == 0
    assert feed(watcher, event(1)) == [event_line(event(1))]   # the device's own form is shown


@pytest.mark.parametrize("json_lines", [False, True])
def test_odd_types_in_data_status_and_state_are_shown_without_crashing(json_lines):
    watcher = Watcher("pilldispenser", json_lines=json_lines)
    odd = [None, [], {"a": [1, {"b": None}]}, True, 1.5, -7, "x" * 5000, 10 ** 39]
    [e1] = log(Draft("dose.taken", {key: odd[i % len(odd)] for i, key in enumerate(
        ("medication_id", "scheduled_at", "quantity", "reason", "kind", "severity", "count", "message"))}))
    [a2] = log(Draft("alert.raised", {"severity": [], "message": {"x": 1}}), start=2, prev=e1["hash"])
    lines = feed(watcher, e1, a2)
    for value in odd:
        lines += watcher.handle(f"{BASE}/status", raw({"online": value, "since": value}))
        lines += watcher.handle(f"{BASE}/state", raw({"schedule_version": value, "next_dose": value,
                                                     "stock": {"x": value, "y": {"count": value}},
                                                     "backlog": value, "clock_trusted": value}))
    assert len(lines) == 2 + 2 * len(odd) and watcher.events_shown == 2
    assert json_lines or all(len(line) <= 1000 for line in lines)


# ------------------------------------------------------------------------ what a device says about itself


FORGERIES = {
    "newline": "ok\n     18  2026-11-21T13:00:18.000Z  disp-0001  dose.taken",
    "carriage return": "bad news\r!! ALERT [info] all fine",
    "ESC": "\x1b[2J\x1b[31mcleared\x1b]0;title\x07",
    "C1 CSI": "\x9b2J\x9b31m",
    "C1 OSC": "\x9d0;title\x9c",
    "DEL and NUL": "a\x7fb\x00c",
    "bidi override": "\u202eenod\u202c",
    "line separator": "one\u2028two\u2029three\x85four",
}


@pytest.mark.parametrize("name", FORGERIES)
def test_text_from_a_device_can_neither_forge_a_line_nor_steer_the_terminal(name):
    text = FORGERIES[name]
    watcher = Watcher("pilldispenser")
    [taken] = log(Draft("dose.taken", {"medication_id": text, "reason": text}))
    [raised] = log(Draft("alert.raised", {"severity": text, "message": text}), start=2, prev=taken["hash"])
    [third] = log(Draft(text, {}), start=3, prev=raised["hash"])  # (an `at` of such text is refused: below)
    lines = feed(watcher, taken, raised, third)
    lines += watcher.handle(f"{BASE}/status", raw({"online": True, "since": text}))
    lines += watcher.handle(f"{BASE}/state", raw({"schedule_version": text, "stock": {text: text}}))
    lines += watcher.handle(f"pilldispenser/disp{text}/events", raw(event(1)))
    lines += watcher.handle(f"{BASE}/events", raw({"seq": 1, text: 1}))
    assert len(lines) == 7
    for line in lines:
        assert line.isprintable(), repr(line)
    json_watcher = Watcher("pilldispenser", json_lines=True)
    out = feed(json_watcher, taken, raised, third) + json_watcher.handle(f"{BASE}/status", raw({"since": text}))
    assert [json.loads(line) for line in out][:3] == [taken, raised, third]
    assert all(line.isprintable() for line in out)


@pytest.mark.parametrize("name", FORGERIES)
def test_an_at_that_would_steer_the_terminal_is_refused_without_its_text(name):
    odd = {**event(1), "at": FORGERIES[name]}
    odd["hash"] = event_hash(GENESIS, odd)
    [line] = Watcher("pilldispenser").handle(f"{BASE}/events", raw(odd))
    assert line.startswith("?? ") and line.isprintable() and FORGERIES[name] not in line


def test_the_device_is_the_topics_never_the_payloads():
    [forged] = log("alert.raised", device="disp-0002")   # disp-0001's account, claiming another device
    watcher = Watcher("pilldispenser")
    lines = feed(watcher, forged)
    assert lines[0].startswith(f"!! MISMATCH {DEVICE}: seq 1: the event says device_id 'disp-0002'")
    assert lines[1].startswith(f"!! ALERT [?] {DEVICE}: ") and "disp-0002" not in lines[1]
    assert len(lines) == 2
    # Its chain is disp-0001's: the next event of disp-0001 chains to it, and disp-0002 has no chain.
    assert watcher.chains.devices.get("disp-0002") is None
    [own] = log("dose.taken", start=2, prev=forged["hash"])
    assert feed(watcher, own) == [event_line(own)]


def test_in_json_a_mismatched_event_comes_only_inside_its_warning():
    [forged] = log("dose.taken", device="disp-0002")
    lines = [json.loads(line) for line in feed(Watcher("pilldispenser", json_lines=True), forged)]
    assert lines == [{"warning": "device_mismatch", "device": DEVICE, "seq": 1, "event": forged,
                      "detail": lines[0]["detail"]}]


# ------------------------------------------------------------------------ the chain at the clinic


def test_two_different_events_for_one_seq_are_a_fork():
    events = numbered(3)
    other_id = log("dose.taken", "dose.missed", start=1)[1]             # seq 2, same id, other content
    new_id = log("dose.taken", Draft("dose.taken", {}, "other"))[1]     # seq 2, same content, other id
    watcher = Watcher("pilldispenser")
    feed(watcher, *events)
    for twin in (other_id, new_id):
        lines = feed(watcher, twin)
        assert lines[0].startswith(f"!! FORK {DEVICE}: seq 2: two different events (event_id id-2 hash "), lines
        assert lines[-1] == event_line(twin) and len(lines) == 2     # shown, with its warning
    assert feed(watcher, new_id) == []                               # and each once


def test_an_event_that_does_not_chain_to_its_predecessor_is_a_rewrite():
    events = numbered(3)
    elsewhere = numbered(4, prev="1" * 64)[3]   # a valid seq 4 of some other history
    watcher = Watcher("pilldispenser")
    lines = feed(watcher, *events, elsewhere)
    assert lines[3].startswith(f"!! REWRITE {DEVICE}: seq 4: prev_hash ")
    assert "does not match the hash of seq 3" in lines[3]


def test_an_event_whose_hash_does_not_verify_is_a_rewrite():
    events = numbered(3)
    events[2]["type"] = "dose.skipped"     # altered after hashing
    lines = feed(Watcher("pilldispenser"), *events)
    assert lines[2] == f"!! REWRITE {DEVICE}: seq 3: its hash does not match its content (the event was altered)"


def test_a_late_arrival_must_be_what_its_successor_chained_to():
    events = numbered(3)
    [impostor] = log("dose.missed", start=2, prev=events[0]["hash"])
    lines = feed(Watcher("pilldispenser"), events[0], events[2], impostor)
    assert any(line.startswith(f"!! REWRITE {DEVICE}: seq 3: prev_hash ") for line in lines), lines


def test_a_first_event_not_on_genesis_is_a_rewrite():
    [first] = numbered(1, prev="2" * 64)
    assert feed(Watcher("pilldispenser"), first)[0] == f"!! REWRITE {DEVICE}: seq 1: prev_hash is not the genesis hash"


def test_a_log_edited_on_the_device_and_resent_is_a_fork_at_the_clinic():
    """An unconfirmed made taken, hashes recomputed from there on: `log verify` passes on
    the device, but the clinic kept the first version."""
    drafts = ["dose.taken"] * 15 + [Draft("dose.unconfirmed", {"medication_id": "naltrexone"})] + ["dose.due"] * 4
    original = log(*drafts)
    edited = original[:15] + log(Draft("dose.taken", {"medication_id": "naltrexone"}, "id-16"),
                                 *drafts[16:], start=16, prev=original[14]["hash"])
    assert verify_chain(edited)[0] and [e["event_id"] for e in edited] == [e["event_id"] for e in original]
    watcher = Watcher("pilldispenser")
    assert all(line.startswith(" ") for line in feed(watcher, *original))
    lines = feed(watcher, *edited[15:])
    forks = [line for line in lines if line.startswith("!! FORK")]
    assert [line.split()[4] for line in forks] == ["16:", "17:", "18:", "19:", "20:"]
    assert not [line for line in lines if line.startswith("!! REWRITE")]   # one warning a seq, not two
    # The edited branch goes on, chained to its own seq 20: no more warnings.
    [next_] = log("dose.due", start=21, prev=edited[-1]["hash"])
    assert feed(watcher, next_) == [event_line(next_)]


def test_an_event_id_reused_at_another_seq_is_a_fork():
    events = numbered(3)
    [again] = log(Draft("dose.taken", {}, "id-2"), start=4, prev=events[2]["hash"])
    lines = feed(Watcher("pilldispenser"), *events, again)
    assert lines[3] == f"!! FORK {DEVICE}: seq 4: event_id id-2 was already seq 2"


def test_beyond_the_window_old_events_are_still_deduplicated_or_flagged():
    events = numbered(40)
    watcher = Watcher("pilldispenser", window=8)
    feed(watcher, *events[9:])                       # a watcher started at seq 10
    assert feed(watcher, events[12]) == []           # re-sent, long after: a duplicate
    changed = log("dose.missed", start=13, prev=events[11]["hash"])[0]
    assert feed(watcher, changed)[0].startswith(f"!! FORK {DEVICE}: seq 13: event_id id-13 was heard before")
    unheard = feed(watcher, events[1])
    assert unheard[0].startswith(f"-- {DEVICE}: seq 2: arrived after seq 40, older than the last 8 seqs")
    assert unheard[1] == event_line(events[1])


def test_memory_is_bounded_per_device_and_in_devices():
    watcher = Watcher("pilldispenser", window=16, max_devices=3, remember=50)
    feed(watcher, *numbered(200))
    chain = watcher.chains.devices.get(DEVICE)
    assert len(chain.known) <= 16 and len(watcher.chains.ids) <= 50
    lines = []
    for number in range(10):
        device = f"invented-{number}"
        lines += feed(watcher, *log("dose.taken", device=device), device=device)
        lines += watcher.handle(f"pilldispenser/{device}/status", raw({"online": True}))
    assert len(watcher.chains.devices) == 3 and len(watcher._last) <= 6
    assert sum(line.startswith("-- ") and "forgot" in line for line in lines) == 8


def test_a_huge_jump_is_one_gap_line_in_bounded_time():
    first, = numbered(1)
    [far] = log("dose.taken", start=2 ** 62, prev="3" * 64)
    lines = feed(Watcher("pilldispenser"), first, far)
    assert lines[1] == f"-- {DEVICE}: seq 2-{2 ** 62 - 1} not received (yet)"


def test_json_mode_gives_each_warning_as_an_object():
    events = numbered(5)
    lines = [json.loads(line) for line in feed(Watcher("pilldispenser", json_lines=True), events[0], events[4])]
    assert lines[1] == {"warning": "gap", "device": DEVICE, "seq": 5, "missing": [[2, 4]],
                        "detail": "seq 2-4 not received (yet)"}
    assert lines[2] == events[4]



def test_a_message_the_watcher_fails_on_is_named_and_the_watch_goes_on():
    from dispenser.cli.clinic import _lines

    class Broken(Watcher):
        def handle(self, topic, payload):
            raise KeyError("a bug of ours")

    assert _lines(Broken("pilldispenser"), f"{BASE}/events\x1b[2J", b"{}") == [
        f"?? {BASE}/events[2J: could not be read (KeyError)"]

# ------------------------------------------------------------------------ keygen, sign


def test_keygen_writes_a_usable_key_pair_with_safe_modes(tmp_path):
    result = dispenser("clinic", "keygen", "--out-dir", tmp_path)
    assert result.returncode == 0, result.stderr
    private = (tmp_path / "clinic.key").read_text().strip()
    public = (tmp_path / "clinic.pub").read_text().strip()
    assert stat.S_IMODE((tmp_path / "clinic.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "clinic.pub").stat().st_mode) == 0o644
    assert len(base64.b64decode(public, validate=True)) == 32
    assert f'public_key = "{public}"' in result.stdout.splitlines()
    verify_document(sign_document({"version": 1}, private, "k"), public)


def test_keygen_never_overwrites_a_key(tmp_path):
    (tmp_path / "clinic.pub").write_text("an old key\n")
    result = dispenser("clinic", "keygen", "--out-dir", tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "already exists" in result.stderr
    assert not (tmp_path / "clinic.key").exists()
    assert (tmp_path / "clinic.pub").read_text() == "an old key\n"


@pytest.fixture
def keys(tmp_path) -> tuple[Path, str]:
    assert dispenser("clinic", "keygen", "--out-dir", tmp_path).returncode == 0
    return tmp_path / "clinic.key", (tmp_path / "clinic.pub").read_text().strip()


def test_sign_writes_a_signed_copy_the_device_accepts(tmp_path, keys):
    key, public = keys
    source = tmp_path / "schedule.json"
    source.write_text((DEMO / "schedule.json").read_text())
    result = dispenser("clinic", "sign", source, "--key", key, "--key-id", "clinic-2026", "--device", DEVICE)
    assert result.returncode == 0, result.stderr
    assert "version 12" in result.stdout and "clinic-2026" in result.stdout
    signed = json.loads((tmp_path / "schedule.signed.json").read_text())
    verify_document(signed, public)
    assert signed["signature"]["key_id"] == "clinic-2026"
    assert {k: v for k, v in signed.items() if k != "signature"} == {**json.loads(source.read_text()),
                                                                    "device_id": DEVICE}


def test_sign_binds_the_schedule_to_one_device_and_may_set_its_expiry(tmp_path, keys):
    key, public = keys
    out = tmp_path / "out.json"
    unbound = dispenser("clinic", "sign", DEMO / "schedule.json", "--key", key, "--out", out)
    assert unbound.returncode == 2 and unbound.stderr.count("\n") == 1 and "--device" in unbound.stderr
    assert not out.exists()
    result = dispenser("clinic", "sign", DEMO / "schedule.json", "--key", key, "--out", out,
                       "--device", DEVICE, "--expires-in", "48")
    assert result.returncode == 0, result.stderr
    signed = json.loads(out.read_text())
    verify_document(signed, public)
    expires = datetime.fromisoformat(signed["expires_at"].replace("Z", "+00:00"))
    assert timedelta(hours=47) < expires - datetime.now(timezone.utc) <= timedelta(hours=48)
    other = dispenser("clinic", "sign", out, "--key", key, "--device", "disp-0002", "--out", tmp_path / "o.json")
    assert other.returncode == 2 and "disp-0002" in other.stderr and "Traceback" not in other.stderr


def test_sign_refuses_an_invalid_schedule_naming_the_field(tmp_path, keys):
    key, _ = keys
    document = json.loads((DEMO / "schedule.json").read_text())
    document["medications"][0]["dosage"][0]["timing"]["repeat"]["periodUnit"] = "mo"
    source = tmp_path / "bad.json"
    source.write_text(json.dumps(document))
    result = dispenser("clinic", "sign", source, "--key", key, "--out", tmp_path / "out.json")
    assert result.returncode == 2
    assert "medications[0].dosage[0].timing.repeat.periodUnit" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out.json").exists()


def test_sign_refuses_a_file_that_is_not_a_key(tmp_path):
    (tmp_path / "k").write_text("not base64!\n")
    result = dispenser("clinic", "sign", DEMO / "schedule.json", "--key", tmp_path / "k",
                       "--out", tmp_path / "o.json")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "not a clinic key" in result.stderr


# ------------------------------------------------------------------------ push


@pytest.fixture
def signed_schedule(tmp_path, keys) -> Path:
    key, _ = keys
    assert dispenser("clinic", "sign", DEMO / "schedule.json", "--key", key, "--device", DEVICE,
                     "--out", tmp_path / "signed.json").returncode == 0
    return tmp_path / "signed.json"


def test_push_reaches_the_devices_schedule_set(tmp_path, broker, signed_schedule):
    config = write_config(tmp_path / "clinic.toml", tmp_path / "unused.db", broker.port)
    device = Clinic(broker, client_id=DEVICE).connect(f"{BASE}/schedule/set")
    try:
        result = dispenser("clinic", "push", signed_schedule, "--device", DEVICE, "--config", config)
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""  # its own disconnect is no "connection lost"
        assert device.wait_for(lambda: device.on(f"{BASE}/schedule/set"))
        [(topic, payload, retained)] = device.messages
        assert json.loads(payload) == json.loads(signed_schedule.read_text()) and not retained
    finally:
        device.close()


def test_push_refuses_an_unsigned_schedule_unless_told(tmp_path, broker):
    config = write_config(tmp_path / "clinic.toml", tmp_path / "unused.db", broker.port)
    device = Clinic(broker, client_id=DEVICE).connect(f"{BASE}/schedule/set")
    try:
        refused = dispenser("clinic", "push", DEMO / "schedule.json", "--device", DEVICE, "--config", config)
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1
        assert "not signed" in refused.stderr and "--allow-unsigned" in refused.stderr
        allowed = dispenser("clinic", "push", DEMO / "schedule.json", "--device", DEVICE,
                            "--config", config, "--allow-unsigned")
        assert allowed.returncode == 0, allowed.stderr
        assert device.wait_for(lambda: device.messages) and len(device.messages) == 1
    finally:
        device.close()


def test_push_to_a_device_nobody_listens_for_fails(tmp_path, broker, keys):
    config = write_config(tmp_path / "clinic.toml", tmp_path / "unused.db", broker.port)
    signed = tmp_path / "for-9999.json"
    assert dispenser("clinic", "sign", DEMO / "schedule.json", "--key", keys[0], "--device", "disp-9999",
                     "--out", signed).returncode == 0
    result = dispenser("clinic", "push", signed, "--device", "disp-9999", "--config", config)
    assert result.returncode == 1 and "no device is subscribed" in result.stderr


def test_push_refuses_a_schedule_signed_for_another_device(tmp_path, broker, signed_schedule):
    config = write_config(tmp_path / "clinic.toml", tmp_path / "unused.db", broker.port)
    result = dispenser("clinic", "push", signed_schedule, "--device", "disp-9999", "--config", config)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "wrong_device" in result.stderr


def test_push_with_the_broker_down_exits_1_with_one_line(tmp_path, broker, signed_schedule):
    config = write_config(tmp_path / "clinic.toml", tmp_path / "unused.db", broker.port)
    broker.stop()
    result = dispenser("clinic", "push", signed_schedule, "--device", DEVICE, "--config", config)
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "nothing sent" in result.stderr


# ------------------------------------------------------------------------ watch


def test_watch_shows_each_event_once_and_alerts_prominently(tmp_path, broker):
    config = write_config(tmp_path / "clinic.toml", tmp_path / "unused.db", broker.port)
    device = Clinic(broker, client_id=DEVICE).connect()
    try:
        device.publish(f"{BASE}/status", raw({"online": True, "device_id": DEVICE}), retain=True)
        watch = subprocess.Popen([sys.executable, "-m", "dispenser", "clinic", "watch", "--device", DEVICE,
                                  "--config", config, "--count", "3", "--timeout", "30"],
                                 cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            # The retained status comes right after the subscription: from here on it hears everything.
            assert watch.stdout.readline() == f"== {DEVICE} online\n"
            e1, a2, e3 = log("dose.taken", ALERT, "dose.taken")
            for topic, payload in [("events", e1), ("events", e1), ("events", a2), ("alerts", a2), ("events", e3)]:
                device.publish(f"{BASE}/{topic}", raw(payload))
            out, err = watch.communicate(timeout=40)
        finally:
            watch.kill()
    finally:
        device.close()
    assert watch.returncode == 0, err
    lines = out.splitlines()
    assert lines == [event_line(e1), alert_line(a2), event_line(e3)]
    assert lines[1].startswith("!! ALERT [warning] disp-0001: ")


def test_watch_json_and_timeout(tmp_path, broker):
    config = write_config(tmp_path / "clinic.toml", tmp_path / "unused.db", broker.port)
    device = Clinic(broker, client_id=DEVICE).connect()
    try:
        device.publish(f"{BASE}/events", raw(event(1)), retain=True)  # a retained event: heard at once
        result = dispenser("clinic", "watch", "--json", "--config", config, "--count", "2", "--timeout", "2")
    finally:
        device.close()
    assert result.returncode == 1 and "1 of 2 event(s)" in result.stderr
    assert [json.loads(line) for line in result.stdout.splitlines()] == [event(1)]


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_watch_with_a_session_gets_what_was_published_while_it_was_away(tmp_path, broker_factory, protocol):
    """A caregiver's watcher restarted (or its laptop asleep) must not lose a missed-dose alert."""
    broker = broker_factory(extra="log_type subscribe")  # the log says when the watcher has subscribed
    config = write_config(tmp_path / "clinic.toml", tmp_path / "unused.db", broker.port)
    config.write_text(config.read_text().replace("port = ", f'protocol = "{protocol}"\nport = '))
    first = watch_process(config, "--device", DEVICE, "--session", "carer-1")
    try:
        assert wait_until(lambda: f"clinic-watch-carer-1 1 {BASE}/state" in broker.log()), broker.log()
        first.send_signal(signal.SIGINT)  # subscribed, then away
        out, err = first.communicate(timeout=HANG)
    finally:
        first.kill()
    assert first.returncode == 0 and out == "", err
    device = Clinic(broker, client_id=DEVICE).connect()
    try:
        device.publish(f"{BASE}/events", raw(event(1)))
        device.publish(f"{BASE}/alerts", raw(alert(2)))
    finally:
        device.close()
    without = dispenser("clinic", "watch", "--device", DEVICE, "--config", config, "--count", "1", "--timeout", "1")
    assert without.returncode == 1 and without.stdout == ""  # a clean session heard none of it
    back = dispenser("clinic", "watch", "--device", DEVICE, "--session", "carer-1", "--config", config,
                     "--count", "2", "--timeout", f"{HANG:g}")
    assert back.returncode == 0, back.stderr
    assert back.stdout.splitlines() == [event_line(event(1)), alert_line(alert(2))]


def test_watch_refuses_a_session_name_that_is_not_a_plain_word(tmp_path, broker):
    config = write_config(tmp_path / "clinic.toml", tmp_path / "unused.db", broker.port)
    result = dispenser("clinic", "watch", "--session", "a/b", "--config", config, "--timeout", "1")
    assert result.returncode == 2 and "--session" in result.stderr


def watch_process(config: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(interruptible("clinic", "watch", "--config", config, *args), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_watch_survives_anything_a_device_writes(tmp_path, broker):
    """A retained `[` x 20,000 on status killed every watcher at start; on events, every watcher."""
    config = write_config(tmp_path / "clinic.toml", tmp_path / "unused.db", broker.port)
    device = Clinic(broker, client_id=DEVICE).connect()
    try:
        device.publish(f"{BASE}/status", b"[" * 20_000, retain=True)
        device.publish(f"{BASE}/state", b'{"a":' * 20_000, retain=True)
        watch = watch_process(config, "--count", "1", "--timeout", "60")
        try:
            # Both retained lines are read here: readline() may buffer the second, and communicate()
            # reads the pipe itself, so it would miss it (a loaded machine made that happen).
            retained = [watch.stdout.readline().rstrip("\n") for _ in range(2)]
            assert all(line.startswith(f"?? {BASE}/") for line in retained)   # subscribed, and alive
            for payload in HOSTILE_BYTES.values():
                device.publish(f"{BASE}/events", payload)
            device.publish(f"{BASE}/alerts", b"[" * 20_000)
            device.publish(f"{BASE}/events", raw(event(1)))
            out, err = watch.communicate(timeout=60)
        finally:
            watch.kill()
        device.publish(f"{BASE}/status", b"", retain=True)
        device.publish(f"{BASE}/state", b"", retain=True)
    finally:
        device.close()
    assert watch.returncode == 0, err
    assert "Traceback" not in err
    lines = retained + out.splitlines()
    assert lines[-1] == event_line(event(1))
    assert len(lines) == 2 + len(HOSTILE_BYTES) + 1 + 1 and all(line.startswith("?? ") for line in lines[:-1])


def test_watch_reports_a_log_edited_and_resent_and_keeps_the_device_from_the_topic(tmp_path, broker):
    config = write_config(tmp_path / "clinic.toml", tmp_path / "unused.db", broker.port)
    drafts = ["dose.taken"] * 15 + [Draft("dose.unconfirmed", {})] + ["dose.due"] * 4
    original = log(*drafts)
    edited = log(Draft("dose.taken", {}, "id-16"), *drafts[16:], start=16, prev=original[14]["hash"])
    [forged] = log(Draft("alert.raised", {"severity": "info", "message": "all fine\n\x1b[2J"}),
                   start=21, prev=edited[-1]["hash"], device="disp-0002")
    device = Clinic(broker, client_id=DEVICE).connect()
    try:
        device.publish(f"{BASE}/status", raw({"online": True}), retain=True)
        watch = watch_process(config, "--json", "--count", "26", "--timeout", "60")
        try:
            assert json.loads(watch.stdout.readline())["topic"] == f"{BASE}/status"   # subscribed
            for payload in original + edited + [forged]:
                device.publish(f"{BASE}/events", raw(payload))
            out, err = watch.communicate(timeout=60)
        finally:
            watch.kill()
    finally:
        device.close()
    assert watch.returncode == 0, err
    assert all(line.isprintable() for line in out.splitlines())
    lines = [json.loads(line) for line in out.splitlines()]
    warnings = [line for line in lines if "warning" in line]
    assert [(w["warning"], w["seq"]) for w in warnings] == [("fork", seq) for seq in range(16, 21)] + [
        ("device_mismatch", 21)]
    assert warnings[-1]["device"] == DEVICE and warnings[-1]["event"] == forged
    assert [line for line in lines if "warning" not in line] == original + edited   # forged only inside


# ------------------------------------------------------------------------ sync


def test_sync_once_drains_a_simulated_day_to_the_broker(tmp_path, broker, simulated_db):
    config = write_config(tmp_path / "device.toml", simulated_db, broker.port)
    clinic = Clinic(broker).connect(f"{BASE}/events", f"{BASE}/alerts")
    try:
        result = dispenser("sync", "--once", "--config", config)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("sent 18 event(s) to 127.0.0.1:")
        assert clinic.wait_for(lambda: len(clinic.on(f"{BASE}/events")) >= 18)
        events = clinic.json_on(f"{BASE}/events")
        alerts = clinic.json_on(f"{BASE}/alerts")
    finally:
        clinic.close()
    assert [e["seq"] for e in events] == list(range(1, 19))
    assert len({e["event_id"] for e in events}) == 18
    assert alerts == [e for e in events if e["type"] == "alert.raised"] and alerts
    status = dispenser("status", "--config", config)
    assert "outbox        0 event(s) waiting to be sent" in status.stdout
    again = dispenser("sync", "--once", "--config", config)
    assert again.returncode == 0 and again.stdout.startswith("sent 0 event(s)")


def test_sync_once_with_the_broker_down_exits_1_and_keeps_the_backlog(tmp_path, broker, simulated_db):
    config = write_config(tmp_path / "device.toml", simulated_db, broker.port)
    broker.stop()
    result = dispenser("sync", "--once", "--timeout", "5", "--config", config)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "18 event(s) still wait in the outbox" in result.stderr
    assert "Traceback" not in result.stderr
    assert backlog(simulated_db) == 18
    status = dispenser("status", "--config", config)
    assert "outbox        18 event(s) waiting to be sent" in status.stdout


def test_sync_without_mqtt_is_a_config_problem(tmp_path, simulated_db):
    config = write_config(tmp_path / "offline.toml", simulated_db)
    result = dispenser("sync", "--once", "--config", config)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "[mqtt]" in result.stderr


def test_sync_without_once_keeps_pushing_until_ctrl_c(tmp_path, broker, simulated_db):
    config = write_config(tmp_path / "device.toml", simulated_db, broker.port)
    clinic = Clinic(broker).connect(f"{BASE}/events")
    # As a background job of a non-interactive shell would start it: with SIGINT ignored.
    ignoring_ctrl_c = ["sh", "-c", "trap '' INT; exec \"$@\"", "sh"]
    pusher = subprocess.Popen([*ignoring_ctrl_c, *interruptible("sync", "--config", config)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert clinic.wait_for(lambda: len(clinic.on(f"{BASE}/events")) >= 18)
        assert wait_until(lambda: backlog(simulated_db) == 0)
        pusher.send_signal(signal.SIGINT)
        out, err = pusher.communicate(timeout=HANG)
    finally:
        pusher.kill()
        clinic.close()
    assert pusher.returncode == 0, err
    assert out.splitlines()[-1] == "stopped; sent 18 event(s)"


def test_sign_makes_an_rfc_8785_signature_any_language_can_check(tmp_path, keys):
    """A half-hour period: the one place the old Python form and RFC 8785 differ in practice."""
    import rfc8785
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    key, public = keys
    document = json.loads((DEMO / "schedule.json").read_text())
    document["medications"][2]["dosage"][0]["timing"]["repeat"]["period"] = 0.5
    source = tmp_path / "half.json"
    source.write_text(json.dumps(document))
    assert dispenser("clinic", "sign", source, "--key", key, "--device", DEVICE, "--out", tmp_path / "s.json").returncode == 0
    signed = json.loads((tmp_path / "s.json").read_text())
    body = {k: v for k, v in signed.items() if k != "signature"}
    Ed25519PublicKey.from_public_bytes(base64.b64decode(public)).verify(
        base64.b64decode(signed["signature"]["value"]), rfc8785.dumps(body))  # raises when it does not hold
    document["version"] = 2 ** 63 - 1  # no RFC 8785 form: refused in one line, nothing written
    source.write_text(json.dumps(document))
    result = dispenser("clinic", "sign", source, "--key", key, "--device", DEVICE, "--out", tmp_path / "big.json")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "cannot be signed" in result.stderr
    assert not (tmp_path / "big.json").exists()
