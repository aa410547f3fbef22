"""Ingest into SQLite and PostgreSQL alike: each event stored once, the device the topic's,
each device's seq order and hash chain checked as events arrive, alerts raised."""
from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest

from care_support import AT0, chained, database_url, payload, postgres_cluster, taken  # noqa: F401 - fixtures
from dispenser.care.config import CareConfig, PatternSettings, parse_care_config
from dispenser.care.database import Database
from dispenser.care.ingest import Ingest
from dispenser.care.rounds import find_gaps
from waiting import HANG
from dispenser.events import GENESIS, Draft, build_event, event_hash

TOPIC = "pilldispenser/disp-0001/events"
CONFIG = parse_care_config({"mqtt": {"host": "127.0.0.1", "tls": False},
                            "patient": [{"device": "disp-0001", "name": "Sam"}]})


@pytest.fixture
def conn(database_url):
    with Database(database_url).connect() as connection:
        yield connection


def alerts(conn, kind: str | None = None) -> list[tuple]:
    rows = conn.execute("SELECT kind, severity, audience, device, detail, evidence FROM alerts ORDER BY received, kind")
    return [row for row in rows if kind is None or row[0] == kind]


def test_each_event_is_stored_once_in_seq_order(conn):
    ingest = Ingest(conn, CONFIG)
    events = chained("disp-0001", taken(5))
    outcomes = [ingest.handle(TOPIC, payload(e), AT0) for e in events + events[1:3]]
    assert outcomes == ["stored"] * 5 + ["duplicate"] * 2
    assert conn.execute("SELECT seq FROM events WHERE device = 'disp-0001' ORDER BY seq") == [(s,) for s in range(1, 6)]
    assert conn.execute("SELECT first_seq, top_seq, stored, last_seq, gap_since FROM devices") == [(1, 5, 5, 5, None)]
    assert alerts(conn) == []


def test_the_device_is_the_topics_never_the_payloads(conn):
    ingest = Ingest(conn, CONFIG)
    event = chained("disp-0002", taken(1))[0]            # says disp-0002, arrives on disp-0001's topic
    assert ingest.handle(TOPIC, payload(event), AT0) == "stored"
    assert conn.execute("SELECT device FROM events") == [("disp-0001",)]
    [(kind, severity, audience, device, detail, _)] = alerts(conn)
    assert (kind, audience, device) == ("log_device_mismatch", "clinic", "disp-0001")
    assert "disp-0002" in detail


def test_a_fork_two_events_for_one_seq_is_a_critical_clinic_alert(conn):
    ingest = Ingest(conn, CONFIG)
    events = chained("disp-0001", taken(3))
    for event in events:
        ingest.handle(TOPIC, payload(event), AT0)
    other = build_event(Draft("dose.missed", {"medication_id": "sertraline"}, "other-3"), "disp-0001", 3,
                        AT0 + timedelta(minutes=3), events[1]["hash"])
    assert ingest.handle(TOPIC, payload(other), AT0) == "stored"    # kept as evidence
    [(kind, severity, audience, *_)] = alerts(conn)
    assert (kind, severity, audience) == ("log_fork", "critical", "clinic")
    assert conn.execute("SELECT count(*) FROM events WHERE seq = 3") == [(2,)]
    assert conn.execute("SELECT stored FROM devices") == [(3,)]    # one seq, counted once


def test_a_rewritten_chain_is_a_critical_clinic_alert(conn):
    ingest = Ingest(conn, CONFIG)
    events = chained("disp-0001", taken(4))
    for event in events[:2]:
        ingest.handle(TOPIC, payload(event), AT0)
    rewritten = chained("disp-0001", [Draft("dose.taken", {"medication_id": "x"})] * 2, start=3, prev="f" * 64)
    ingest.handle(TOPIC, payload(rewritten[0]), AT0)
    assert [row[:2] for row in alerts(conn)] == [("log_rewritten", "critical")]
    altered = dict(events[3], type="dose.missed")        # content changed, hash kept
    ingest.handle(TOPIC, payload(altered), AT0)
    assert [row[0] for row in alerts(conn)] == ["log_rewritten", "log_rewritten"]


def test_the_same_event_id_with_other_content_is_a_fork_and_the_first_stays(conn):
    ingest = Ingest(conn, CONFIG)
    events = chained("disp-0001", taken(2))
    for event in events:
        ingest.handle(TOPIC, payload(event), AT0)
    again = build_event(Draft("dose.missed", {}, events[1]["event_id"]), "disp-0001", 2, AT0, events[0]["hash"])
    assert ingest.handle(TOPIC, payload(again), AT0) == "fork"
    assert "log_fork" in [row[0] for row in alerts(conn)]
    assert conn.execute("SELECT type FROM events WHERE seq = 2") == [("dose.taken",)]


def test_a_gap_is_an_alert_only_when_it_stays_open(conn):
    """A shared subscription may store seq 3 a moment before seq 2: no alert for that."""
    ingest = Ingest(conn, CONFIG)
    events = chained("disp-0001", taken(6))
    for event in [events[0], events[2]]:
        ingest.handle(TOPIC, payload(event), AT0)
    assert conn.execute("SELECT gap_since FROM devices")[0][0] is not None
    find_gaps(conn, CONFIG, AT0 + timedelta(seconds=CONFIG.alerts.gap_after_s - 1))
    assert alerts(conn) == []
    ingest.handle(TOPIC, payload(events[1]), AT0)         # the late one fills it
    assert conn.execute("SELECT gap_since FROM devices") == [(None,)]
    ingest.handle(TOPIC, payload(events[5]), AT0)         # 4 and 5 never come
    find_gaps(conn, CONFIG, AT0 + timedelta(seconds=CONFIG.alerts.gap_after_s))
    [(kind, severity, audience, _, detail, _)] = alerts(conn)
    assert (kind, audience) == ("log_gap", "clinic")
    assert "seq 4-5 not received (2 events)" in detail
    ingest.handle(TOPIC, payload(events[3]), AT0)
    ingest.handle(TOPIC, payload(events[4]), AT0)         # filled at last: the alert is resolved
    assert conn.execute("SELECT resolved_at IS NOT NULL FROM alerts") == [(True,)]


def test_a_gap_filled_while_the_round_looks_is_not_left_alerted(conn, database_url):
    """The round reads a gap, then a worker fills it before the round writes its alert: that
    alert would stay open for good (ingest resolves only the alerts of a gap it fills). The
    round reads and writes under the device row's lock, so the worker fills the gap either
    before (no alert) or after (its alert resolved)."""
    ingest = Ingest(conn, CONFIG)
    events = chained("disp-0001", taken(3))
    for event in [events[0], events[2]]:
        ingest.handle(TOPIC, payload(event), AT0)
    outcome: list[str] = []

    def fill() -> None:
        with Database(database_url).connect() as worker:
            outcome.append(Ingest(worker, CONFIG).handle(TOPIC, payload(events[1]), AT0))

    filler = threading.Thread(target=fill)

    class WorkerFillsAfterTheRoundReads:
        """`conn`, but a worker stores the missing event once the round has read the events."""
        def execute(self, sql, params=()):
            rows = conn.execute(sql, params)
            if "SELECT DISTINCT seq" in sql and not filler.is_alive() and not outcome:
                filler.start()
                filler.join(0.5)   # done at once unless the round holds the device's lock
            return rows

        def transaction(self):
            return conn.transaction()

    find_gaps(WorkerFillsAfterTheRoundReads(), CONFIG, AT0 + timedelta(seconds=CONFIG.alerts.gap_after_s))
    filler.join(HANG)
    assert outcome == ["stored"]
    assert conn.execute("SELECT gap_since FROM devices") == [(None,)]
    assert conn.execute("SELECT count(*) FROM alerts WHERE kind = 'log_gap' AND resolved_at IS NULL") == [(0,)]


def test_a_devices_alert_is_stored_for_its_people_once(conn):
    ingest = Ingest(conn, CONFIG)
    missed = Draft("dose.missed", {"medication_id": "naltrexone", "scheduled_at": "2026-11-24T14:00:00Z"}, "m-1")
    raised = Draft("alert.raised", {"alert_id": "a-1", "kind": "dose_missed", "severity": "warning",
                                    "message": "Naltrexone 25 mg was missed", "events": ["m-1"]})
    events = chained("disp-0001", [missed, raised])
    for event in events + events:
        ingest.handle(TOPIC, payload(event), AT0)
    rows = conn.execute("SELECT alert_id, kind, severity, audience, origin, evidence FROM alerts")
    assert len(rows) == 1
    alert_id, kind, severity, audience, origin, evidence = rows[0]
    assert (alert_id, kind, severity, audience, origin) == ("a-1", "dose_missed", "warning", "people", "device")
    assert json.loads(evidence) == [events[1]["event_id"], "m-1"]


@pytest.mark.parametrize("topic, body, why", [
    ("pilldispenser/disp-0001/events", b"\xff\xfe", "not UTF-8"),
    ("pilldispenser/disp-0001/events", b"[1, 2]", "not a JSON object"),
    ("pilldispenser/disp-0001/events", b'{"seq": 1}', "an event without schema"),
    ("elsewhere/disp-0001/events", b"{}", "not a device topic"),
])
def test_what_is_no_event_is_ignored_and_stores_nothing(conn, topic, body, why):
    assert why in Ingest(conn, CONFIG).handle(topic, body, AT0)
    assert conn.execute("SELECT count(*) FROM events") == [(0,)]


@pytest.mark.parametrize("at", ["2026-11-24T15:01:00.000+01:00", "2026-11-24T14:01:00Z", "2026-11-24T14:01:00.000000Z",
                                "2026-11-24T14:01:00.000z"])
def test_an_at_not_in_the_devices_form_is_ignored_and_stores_nothing(conn, at):
    """`at` is compared as text in SQL: only the device's one spelling sorts as time does."""
    ingest = Ingest(conn, CONFIG)
    [first] = chained("disp-0001", taken(1))
    odd = {**first, "at": at}
    odd["hash"] = event_hash(GENESIS, odd)   # a chain that verifies: only the spelling is wrong
    assert ingest.handle(TOPIC, payload(odd), AT0) == \
        "ignored: at is not a UTC time in the device's form (2026-11-21T13:03:12.120Z)"
    assert conn.execute("SELECT count(*) FROM events") == [(0,)]
    assert ingest.handle(TOPIC, payload(first), AT0) == "stored"
    assert conn.execute("SELECT at FROM events") == [(first["at"],)]


def test_status_online_and_the_last_will(conn):
    ingest = Ingest(conn, CONFIG)
    status = "pilldispenser/disp-0001/status"
    assert ingest.handle(status, b'{"online": true, "since": "x"}', AT0) == "status"
    ingest.handle(status, b'{"online": true}', AT0 + timedelta(minutes=5))      # no change: since stays
    assert conn.execute("SELECT online, status_since FROM devices") == [(1, "2026-11-24T14:00:00.000Z")]
    ingest.handle(status, b'{"online": false}', AT0 + timedelta(minutes=9))
    assert conn.execute("SELECT online, status_since FROM devices") == [(0, "2026-11-24T14:09:00.000Z")]


def outcome(medication: str, kind: str) -> Draft:
    return Draft(kind, {"medication_id": medication, "scheduled_at": "2026-11-24T14:00:00Z"})


def test_patterns_a_run_of_missed_doses_of_one_medication(conn):
    config = CareConfig(patients=CONFIG.patients, patterns=PatternSettings(missed_run=3))
    ingest = Ingest(conn, config)
    drafts = [outcome("naltrexone", "dose.missed"), outcome("sertraline", "dose.missed"),
              outcome("naltrexone", "dose.taken"), outcome("naltrexone", "dose.missed"),
              outcome("sertraline", "dose.taken"), outcome("naltrexone", "dose.missed")]
    events = chained("disp-0001", drafts)
    for event in events:
        ingest.handle(TOPIC, payload(event), AT0)
    assert alerts(conn, "pattern_missed_run") == []        # two in a row after a taken one
    third = chained("disp-0001", [outcome("naltrexone", "dose.missed")], start=7, prev=events[-1]["hash"])
    ingest.handle(TOPIC, payload(third[0]), AT0)
    [(kind, severity, audience, _, detail, evidence)] = alerts(conn, "pattern_missed_run")
    assert audience == "clinic" and "3 doses of naltrexone missed in a row" in detail
    assert json.loads(evidence) == [events[3]["event_id"], events[5]["event_id"], third[0]["event_id"]]


def test_patterns_side_effects_again_and_again_and_mood_falling(conn):
    ingest = Ingest(conn, CONFIG)
    moods = [5, 4, 4, 3, 2, 2]
    sides = ["mild", "none", "none", "mild", "strong", "mild"]   # the first is older than 7 days at the end
    prev = "0" * 64
    for index, (m, s) in enumerate(zip(moods, sides)):   # chained, one every two days
        event = build_event(Draft("checkin.recorded", {"mood": m, "side_effects": s, "medications": []}, f"c{index}"),
                            "disp-0001", index + 1, AT0 + timedelta(days=2 * index), prev)
        prev = event["hash"]
        ingest.handle(TOPIC, payload(event), AT0 + timedelta(days=2 * index))
    kinds = [row[0] for row in alerts(conn)]
    assert kinds.count("pattern_side_effects") == 1      # 3 within 7 days: once, not at every check-in
    assert kinds.count("pattern_mood_falling") == 1      # 4.3 -> 2.3 over 14 days


def test_a_transaction_that_fails_leaves_nothing_behind(conn):
    with pytest.raises(RuntimeError):
        with conn.transaction():
            conn.execute("INSERT INTO links (token, device, created) VALUES (?, ?, ?)", ("t", "disp-0001", "now"))
            raise RuntimeError("the disk is full")
    assert conn.execute("SELECT count(*) FROM links") == [(0,)]
    with pytest.raises(RuntimeError, match="do not nest"):
        with conn.transaction(), conn.transaction():
            pass


def test_a_bad_database_url_is_one_line():
    from dispenser.care.database import DatabaseError
    with pytest.raises(DatabaseError, match=r"postgresql://care:\*\*\*@127.0.0.1:1/x: cannot connect"):
        Database("postgresql://care:secret@127.0.0.1:1/x")


# -- batches: many messages, one transaction ----------------------------------------------


def test_a_batch_with_bad_messages_in_the_middle_stores_the_good_ones_once_and_alerts_on_the_bad(conn):
    ingest = Ingest(conn, CONFIG)
    events = chained("disp-0001", taken(6))
    altered = dict(events[3], type="dose.missed")                     # its hash no longer matches: a rewrite
    batch = [(TOPIC, payload(e)) for e in events[:3]] + [(TOPIC, b"{not json"), (TOPIC, payload(altered)),
                                                         (TOPIC, payload(events[1]))] \
        + [(TOPIC, payload(e)) for e in events[4:]]
    outcomes = ingest.handle_batch(batch, AT0)
    assert outcomes[:3] == ["stored"] * 3 and outcomes[3].startswith("ignored")
    assert outcomes[4:] == ["stored", "duplicate", "stored", "stored"]
    assert conn.execute("SELECT seq, type FROM events ORDER BY seq") == \
        [(1, "dose.taken"), (2, "dose.taken"), (3, "dose.taken"), (4, "dose.missed"), (5, "dose.taken"),
         (6, "dose.taken")]
    [(kind, severity, audience, _, detail, evidence)] = alerts(conn)
    assert (kind, severity, audience) == ("log_rewritten", "critical", "clinic")
    assert "seq 4" in detail and json.loads(evidence) == [altered["event_id"]]
    assert conn.execute("SELECT first_seq, top_seq, stored, last_seq, gap_since FROM devices") == [(1, 6, 6, 6, None)]


def test_a_batch_of_many_devices_in_any_order_ends_as_one_by_one_does(database_url, tmp_path):
    """The device's bookkeeping read under its lock and written once an event: a batch that
    mixes devices, fills a gap late and repeats an event ends where single messages end."""
    logs = {device: chained(device, taken(5)) for device in ("disp-0003", "disp-0001", "disp-0002")}
    order = [("disp-0001", 0), ("disp-0003", 0), ("disp-0001", 2), ("disp-0002", 4), ("disp-0003", 1),
             ("disp-0001", 1), ("disp-0002", 0), ("disp-0001", 2), ("disp-0003", 2), ("disp-0001", 4)]
    messages = [(f"pilldispenser/{device}/events", payload(logs[device][n])) for device, n in order]
    batched = Database(database_url).connect()
    single = Database(f"sqlite:///{tmp_path / 'one-by-one.db'}").connect()
    try:
        outcomes = Ingest(batched, CONFIG).handle_batch(messages, AT0)
        assert outcomes == [Ingest(single, CONFIG).handle(topic, body, AT0) for topic, body in messages]
        assert outcomes.count("duplicate") == 1
        query = "SELECT device, first_seq, top_seq, stored, last_seq, gap_since IS NULL FROM devices ORDER BY device"
        assert batched.execute(query) == single.execute(query) == [
            ("disp-0001", 1, 5, 4, 5, False), ("disp-0002", 1, 5, 2, 5, False), ("disp-0003", 1, 3, 3, 3, True)]
        assert batched.execute("SELECT device, seq FROM events ORDER BY device, seq") == \
            single.execute("SELECT device, seq FROM events ORDER BY device, seq")
    finally:
        batched.close()
        single.close()


def poison(conn, event_id: str) -> None:
    """A real database refusal for one event_id: a trigger that raises, in either dialect."""
    if conn.dialect == "sqlite":
        conn.execute(f"CREATE TRIGGER poison BEFORE INSERT ON events WHEN NEW.event_id = '{event_id}'"
                     " BEGIN SELECT RAISE(ABORT, 'poisoned event'); END")
    else:
        conn.execute("CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                     f" IF NEW.event_id = '{event_id}' THEN RAISE EXCEPTION 'poisoned event'; END IF;"
                     " RETURN NEW; END $$")
        conn.execute("CREATE TRIGGER poison BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION poison()")


def test_a_message_the_database_refuses_fails_alone_and_the_rest_of_its_batch_is_stored(conn):
    ingest = Ingest(conn, CONFIG)
    events = chained("disp-0001", taken(5))
    poison(conn, events[2]["event_id"])
    outcomes = ingest.handle_batch([(TOPIC, payload(e)) for e in events], AT0)
    assert outcomes[:2] + outcomes[3:] == ["stored"] * 4
    assert outcomes[2] == "failed: poisoned event"        # left unacknowledged by the worker: sent again
    assert conn.execute("SELECT seq FROM events ORDER BY seq") == [(1,), (2,), (4,), (5,)]
    assert conn.execute("SELECT stored, gap_since IS NOT NULL FROM devices") == [(4, True)]
    conn.execute("DROP TRIGGER poison" + ("" if conn.dialect == "sqlite" else " ON events"))
    assert ingest.handle_batch([(TOPIC, payload(events[2])), (TOPIC, payload(events[3]))], AT0) == \
        ["stored", "duplicate"]                            # sent again: stored once, the gap closed
    assert conn.execute("SELECT stored, gap_since FROM devices") == [(5, None)]
    assert alerts(conn) == []


def test_a_missed_run_inside_one_batch_is_heard_though_a_taken_dose_ends_it_in_the_same_batch(conn):
    """Patterns are judged at each missed dose as it is stored, not once for the batch."""
    ingest = Ingest(conn, CONFIG)
    drafts = [outcome("naltrexone", "dose.missed")] * 3 + [outcome("naltrexone", "dose.taken")]
    events = chained("disp-0001", drafts)
    assert ingest.handle_batch([(TOPIC, payload(e)) for e in events], AT0) == ["stored"] * 4
    [(kind, _, audience, _, detail, _)] = alerts(conn, "pattern_missed_run")
    assert audience == "clinic" and "3 doses of naltrexone missed in a row" in detail
