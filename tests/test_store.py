"""The SQLite store: log, outbox, release intents, schedules, migrations, bad files."""
import itertools
import os
import sqlite3
import threading
from datetime import datetime, timedelta, timezone

import pytest
from sqlite_utils import Database, Migrations

from dispenser import store as store_module
from dispenser.events import GENESIS, Draft, canonical, event_hash
from dispenser.store import MIGRATION_NAMES, Store, StoreError

T0 = datetime(2026, 11, 21, 13, 0, 0, 123_456, tzinfo=timezone.utc)
DEVICE = "disp-0001"


def counter_ids():
    numbers = itertools.count(1)
    return lambda: f"id-{next(numbers)}"


@pytest.fixture
def store():
    with Store.open(":memory:", DEVICE, id_factory=counter_ids()) as opened:
        yield opened


@pytest.fixture
def path(tmp_path):
    return tmp_path / "dispenser.db"


@pytest.fixture
def file_store(path):
    with Store.open(path, DEVICE) as opened:
        yield opened


def drafts(n, type_="dose.due"):
    return [Draft(type_, {"n": i}) for i in range(n)]


def fill(store, n, start=T0):
    for i in range(n):
        store.append([Draft("dose.due", {"n": i})], start + timedelta(minutes=i))


def raw(path):
    """A plain sqlite3 connection, as someone editing the file behind our back would use."""
    return sqlite3.connect(path, isolation_level=None)


# --- the chain ---------------------------------------------------------------------------


def test_append_builds_the_chain(store):
    first = store.append(drafts(1, "device.started"), T0)
    more = store.append(drafts(3), T0 + timedelta(seconds=1))
    events = first + more
    assert [e["seq"] for e in events] == [1, 2, 3, 4]
    assert events[0]["prev_hash"] == GENESIS
    assert all(b["prev_hash"] == a["hash"] for a, b in zip(events, events[1:]))
    assert all(e["hash"] == event_hash(e["prev_hash"], e) for e in events)
    assert [e["event_id"] for e in events] == ["id-1", "id-2", "id-3", "id-4"]
    assert all(e["device_id"] == DEVICE for e in events)
    assert list(store.events()) == events
    assert store.verify() == (True, None, "4 events, chain intact")


def test_explicit_event_id_is_kept(store):
    [event] = store.append([Draft("alert.raised", {}, "my-id")], T0)
    assert event["event_id"] == "my-id"


def test_a_batch_shares_one_at(store):
    events = store.append(drafts(10), T0)
    assert [e["seq"] for e in events] == list(range(1, 11))
    assert {e["at"] for e in events} == {"2026-11-21T13:00:00.123Z"}


def test_empty_append_writes_nothing(store):
    assert store.append([], T0) == []
    assert store.event_count() == 0


def test_at_never_goes_back_when_the_clock_does(store):
    store.append(drafts(1), T0)
    [back] = store.append(drafts(1), T0 - timedelta(hours=1))
    [later] = store.append(drafts(1), T0 + timedelta(seconds=2))
    assert back["at"] == "2026-11-21T13:00:00.123Z"
    assert later["at"] == "2026-11-21T13:00:02.123Z"
    assert store.verify()[0]


def test_at_clamps_to_the_stored_tail_after_reopen(path):
    with Store.open(path, DEVICE) as first:
        first.append(drafts(1), T0)
    with Store.open(path, DEVICE) as again:
        [event] = again.append(drafts(1), T0 - timedelta(days=1))
    assert event["at"] == "2026-11-21T13:00:00.123Z"


def test_naive_now_is_refused(store):
    with pytest.raises(ValueError):
        store.append(drafts(1), datetime(2026, 11, 21, 13, 0))


def test_reading_the_log(store):
    fill(store, 5)
    assert [e["seq"] for e in store.events(since_seq=3)] == [4, 5]
    assert store.last_event()["seq"] == 5
    assert store.event_count() == 5
    assert [e["seq"] for e in store.events_since("2026-11-21T13:03:00Z")] == [4, 5]
    assert [e["seq"] for e in store.events_since("2026-11-21T08:03:00.123-05:00")] == [4, 5]


def test_empty_store_reads(store):
    assert store.last_event() is None
    assert list(store.events()) == []
    assert store.verify() == (True, None, "0 events, chain intact")
    assert store.current_schedule_version() is None


@pytest.mark.parametrize("statement", [
    "UPDATE events SET data = '{}' WHERE seq = 1",
    "DELETE FROM events WHERE seq = 1",
])
def test_triggers_keep_the_log_append_only(store, statement):
    store.append(drafts(2), T0)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store.db.execute(statement)
    assert store.verify()[0] and store.event_count() == 2


# --- tampering behind the triggers' back -------------------------------------------------


@pytest.mark.parametrize("statement, seq, reason", [
    ("UPDATE events SET data = '{\"n\":99}' WHERE seq = 3", 3, "hash does not match its content"),
    ("UPDATE events SET hash = 'ab' || substr(hash, 3) WHERE seq = 3", 3, "hash does not match its content"),
    ("UPDATE events SET prev_hash = hash WHERE seq = 3", 3, "hash does not match its content"),
    ("UPDATE events SET type = 'dose.taken' WHERE seq = 3", 3, "hash does not match its content"),
    ("UPDATE events SET at = '2026-11-21T13:02:30.000Z' WHERE seq = 3", 3, "hash does not match its content"),
    ("UPDATE events SET event_id = 'forged' WHERE seq = 3", 3, "hash does not match its content"),
    ("UPDATE events SET data = 'not json' WHERE seq = 3", 3, "data is not valid JSON"),
    ("DELETE FROM events WHERE seq = 3", 3, "seq 3 missing"),
    ("UPDATE events SET seq = 7 WHERE seq = 5", 5, "seq 5 missing"),
    ("DELETE FROM events WHERE seq = 1", 1, "seq 1 missing"),
])
def test_verify_names_the_first_tampered_seq(path, statement, seq, reason):
    with Store.open(path, DEVICE) as store:
        fill(store, 5)
    conn = raw(path)
    conn.execute("DROP TRIGGER events_no_update")
    conn.execute("DROP TRIGGER events_no_delete")
    conn.execute(statement)
    conn.close()
    with Store.open(path, DEVICE) as store:
        assert store.verify() == (False, seq, reason)


def test_verify_catches_a_rehashed_row_at_the_next_link(path):
    with Store.open(path, DEVICE) as store:
        fill(store, 4)
        forged = list(store.events())[1]
    forged["data"] = {"n": 42}
    forged["hash"] = event_hash(forged["prev_hash"], forged)
    conn = raw(path)
    conn.execute("DROP TRIGGER events_no_update")
    conn.execute("UPDATE events SET data = ?, hash = ? WHERE seq = 2",
                 [canonical(forged["data"]), forged["hash"]])
    conn.close()
    with Store.open(path, DEVICE) as store:
        assert store.verify() == (False, 3, "prev_hash does not match the previous event's hash")


# --- failures leave no trace --------------------------------------------------------------


def assert_untouched(store, count):
    assert store.event_count() == count
    assert store.backlog() == count
    assert store.open_releases() == []
    [next_event] = store.append(drafts(1), T0 + timedelta(hours=1))
    assert next_event["seq"] == count + 1
    assert store.verify() == (True, None, f"{count + 1} events, chain intact")


def test_unserialisable_data_fails_before_anything_is_written(store):
    fill(store, 2)
    with pytest.raises(StoreError, match="data is not JSON"):
        store.append([Draft("dose.released", {"n": 1}), Draft("dose.due", {"when": T0})], T0)
    assert_untouched(store, 2)


def test_a_sql_failure_midway_rolls_back_the_whole_batch(store):
    fill(store, 2)
    taken = store.last_event()["event_id"]
    with pytest.raises(StoreError, match="cannot append: UNIQUE constraint failed: events.event_id"):
        store.append([Draft("dose.released", {}), Draft("dose.due", {}, taken)], T0)
    assert_untouched(store, 2)


def test_disk_full_rolls_back_and_the_chain_continues(file_store):
    fill(file_store, 3)
    pages = file_store.db.execute("PRAGMA page_count").fetchone()[0]
    file_store.db.execute(f"PRAGMA max_page_count={pages}")
    big = {"blob": "x" * 50_000}
    with pytest.raises(StoreError) as failure:
        file_store.append([Draft("dose.released", big) for _ in range(5)], T0)
    assert str(failure.value).endswith("cannot append: database or disk is full")
    assert "\n" not in str(failure.value)
    file_store.db.execute("PRAGMA max_page_count=1073741823")
    assert_untouched(file_store, 3)


def test_a_failed_release_completion_rolls_back_the_append(store):
    with pytest.raises(StoreError, match="no release intent"):
        store.append(drafts(1, "dose.release_uncertain"), T0, complete_releases={"nope": "uncertain"})
    assert store.event_count() == 0


# --- outbox ------------------------------------------------------------------------------


def test_writing_holds_the_lock_from_the_read_to_the_append(path):
    """What is read inside `writing()` is still the tail when its appends chain to it."""
    with Store.open(path, DEVICE) as mine, Store.open(path, DEVICE) as other:
        mine.append([Draft("device.started", {})], T0)
        other.db.execute("PRAGMA busy_timeout=0")
        with mine.writing():
            [seen] = list(mine.events())
            with pytest.raises(StoreError, match="locked"):
                other.append([Draft("stock.refilled", {})], T0)  # another process waits its turn
            mine.append([Draft("dose.due", {"after": seen["seq"]})], T0)
            mine.append([Draft("dose.reminder", {})], T0)  # several appends, one transaction
        other.append([Draft("stock.refilled", {})], T0)
        assert [e["type"] for e in other.events()] == ["device.started", "dose.due", "dose.reminder",
                                                       "stock.refilled"]
        assert other.verify()[0]


def test_writing_commits_all_or_nothing(store):
    store.append([Draft("device.started", {})], T0)
    with pytest.raises(RuntimeError):
        with store.writing():
            store.append([Draft("dose.due", {})], T0)
            raise RuntimeError("the decision failed")
    assert [e["type"] for e in store.events()] == ["device.started"] and store.backlog() == 1
    [event] = store.append([Draft("dose.due", {})], T0)  # the chain goes on from what is on disk
    assert event["seq"] == 2 and store.verify()[0]


def test_writing_does_not_nest(store):
    with store.writing():
        with pytest.raises(StoreError, match="already writing"):
            with store.writing():
                pass
    store.append([Draft("device.started", {})], T0)  # the lock was given back


def test_the_log_says_whether_it_last_trusted_the_clock(store):
    assert store.clock_logged_trusted()  # nothing said yet
    store.append([Draft("clock.unsynchronized", {}), Draft("device.started", {})], T0)
    assert not store.clock_logged_trusted()
    store.append([Draft("clock.synchronized", {})], T0)
    assert store.clock_logged_trusted()


def test_every_event_waits_in_the_outbox(store):
    events = store.append(drafts(5), T0)
    assert store.backlog() == 5
    assert store.unsent(3) == [(e["seq"], canonical(e)) for e in events[:3]]
    assert store.unsent(0) == []


def test_mark_sent_drains_the_outbox(store):
    fill(store, 5)
    store.mark_sent([1, 2], T0)
    assert store.backlog() == 3
    assert [seq for seq, _ in store.unsent(10)] == [3, 4, 5]
    store.mark_sent([2, 3], T0 + timedelta(minutes=1))  # 2 again: at-least-once is fine
    sent = dict(store.db.execute("SELECT seq, sent_at FROM outbox WHERE sent_at IS NOT NULL").fetchall())
    assert sent == {1: "2026-11-21T13:00:00.123Z", 2: "2026-11-21T13:00:00.123Z",
                    3: "2026-11-21T13:01:00.123Z"}
    assert store.backlog() == 2


def test_a_second_connection_drains_while_the_first_appends(path):
    """The MQTT thread's own Store sends every event exactly once, in order."""
    appender = Store.open(path, DEVICE)
    received, errors, done = [], [], threading.Event()

    def sync():
        try:
            with Store.open(path, DEVICE) as sender:
                while True:
                    finished = done.is_set()
                    batch = sender.unsent(7)
                    received.extend(batch)
                    sender.mark_sent([seq for seq, _ in batch], T0)
                    if finished and not batch:
                        return
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    thread = threading.Thread(target=sync)
    thread.start()
    appended = []
    for i in range(100):
        appended += appender.append(drafts(1 if i % 2 else 5), T0 + timedelta(seconds=i))
    done.set()
    thread.join(timeout=60)
    assert not errors
    assert len(appended) == 300
    assert received == [(e["seq"], canonical(e)) for e in appended]
    assert appender.backlog() == 0
    appender.close()


# --- release intents ---------------------------------------------------------------------


def test_a_release_writes_its_intent(store):
    store.append(drafts(1, "device.started"), T0)
    [dose, prn] = store.append([Draft("dose.released", {"medication_id": "a"}),
                                Draft("prn.released", {"medication_id": "b"})], T0)
    assert store.open_releases() == [dose, prn]
    store.complete_release(dose["event_id"], "done", T0)
    assert store.open_releases() == [prn]
    row = store.db.execute("SELECT outcome, completed_at FROM releases WHERE event_id = ?",
                           [dose["event_id"]]).fetchone()
    assert row == ("done", "2026-11-21T13:00:00.123Z")


def test_release_outcomes_are_checked(store):
    [release] = store.append(drafts(1, "dose.released"), T0)
    with pytest.raises(StoreError, match="not one of"):
        store.complete_release(release["event_id"], "ok", T0)
    with pytest.raises(StoreError, match="no release intent for event nope"):
        store.complete_release("nope", "done", T0)
    store.complete_release(release["event_id"], "failed", T0)
    with pytest.raises(StoreError, match="already completed as failed"):
        store.complete_release(release["event_id"], "done", T0)


def test_uncertain_release_is_logged_and_closed_together(path):
    """What a crash between intent and servo leaves is reported once, at the next start."""
    with Store.open(path, DEVICE) as before_crash:
        [release] = before_crash.append(drafts(1, "dose.released"), T0)
    with Store.open(path, DEVICE) as after:
        [open_release] = after.open_releases()
        assert open_release == release
        after.append([Draft("dose.release_uncertain", {"release": release["event_id"]})], T0,
                     complete_releases={release["event_id"]: "uncertain"})
        assert after.open_releases() == []


# --- schedules ---------------------------------------------------------------------------


DOC = {"schema": "dispenser.schedule/1", "version": 12, "timezone": "Europe/London", "medications": []}


def test_schedule_document_is_saved_with_its_event(store):
    [event] = store.append([Draft("schedule.applied", {"version": 12, "source": "local"})], T0,
                           schedule_document=DOC)
    assert store.schedule_document(12) == DOC
    assert store.schedule_document(11) is None
    assert store.current_schedule_version() == 12
    assert store.db.execute("SELECT applied_seq FROM schedules").fetchone()[0] == event["seq"]
    store.append([Draft("schedule.applied", {"version": 13})], T0, schedule_document=DOC | {"version": 13})
    assert store.current_schedule_version() == 13


@pytest.mark.parametrize("batch", [
    [Draft("schedule.rejected", {"version": 12})],
    [Draft("schedule.applied", {"version": 11})],
])
def test_schedule_document_needs_its_applied_event(store, batch):
    with pytest.raises(StoreError, match="schedule.applied"):
        store.append(batch, T0, schedule_document=DOC)
    assert store.event_count() == 0


def test_a_version_applied_twice_keeps_both_documents_each_with_its_apply(store):
    """A local apply may claim the version the clinic's next signed schedule then uses."""
    applied = [Draft("schedule.applied", {"version": 12})]
    [first] = store.append(applied, T0, schedule_document=DOC)
    store.append([Draft("schedule.applied", {"version": 13})], T0, schedule_document=DOC | {"version": 13})
    other = DOC | {"medications": ["other"]}
    [second] = store.append(applied, T0, schedule_document=other)
    assert store.schedule_document(12) == other and store.current_schedule_version() == 12
    assert store.schedule_row(12, upto_seq=first["seq"]) == (first["seq"], DOC)
    assert store.schedule_row(12, upto_seq=second["seq"]) == (second["seq"], other)
    assert store.schedule_row(12, upto_seq=first["seq"] - 1) is None


def test_last_applied_by_source(store):
    store.append([Draft("schedule.applied", {"version": 12, "source": "mqtt"})], T0, schedule_document=DOC)
    store.append([Draft("schedule.applied", {"version": 99, "source": "local"})], T0,
                 schedule_document=DOC | {"version": 99})
    assert store.last_applied("mqtt")["version"] == 12
    assert store.last_applied("local")["version"] == 99
    assert store.current_schedule_version() == 99


# --- meta --------------------------------------------------------------------------------


def test_meta(store):
    assert store.meta_get("device_id") == DEVICE
    assert store.meta_get("stock") is None
    store.meta_set("stock", "30")
    store.meta_set("stock", "29")
    assert store.meta_get("stock") == "29"
    with pytest.raises(StoreError, match="fixed"):
        store.meta_set("device_id", "disp-0002")


# --- files -------------------------------------------------------------------------------


def test_a_file_store_uses_wal_and_full_sync(file_store):
    assert file_store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert file_store.db.execute("PRAGMA synchronous").fetchone()[0] == 2
    assert file_store.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert file_store.db.execute("PRAGMA busy_timeout").fetchone()[0] == 5000


def test_everything_survives_close_and_reopen(path):
    with Store.open(path, DEVICE) as first:
        fill(first, 3)
        [release] = first.append(drafts(1, "dose.released"), T0 + timedelta(hours=1))
        first.append([Draft("schedule.applied", {"version": 12})], T0 + timedelta(hours=1),
                     schedule_document=DOC)
        first.mark_sent([1, 2], T0)
        first.meta_set("stock", "30")
        before = list(first.events())
    with Store.open(path, DEVICE) as again:
        assert list(again.events()) == before
        assert again.backlog() == 3
        assert again.open_releases() == [release]
        assert again.schedule_document(12) == DOC
        assert again.meta_get("stock") == "30"
        [next_event] = again.append(drafts(1), T0 + timedelta(hours=2))
        assert next_event["seq"] == 6 and next_event["prev_hash"] == before[-1]["hash"]
        assert again.verify()[0]


def sqlite_of_another_app(path):
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    conn.execute("INSERT INTO notes (body) VALUES ('hello')")
    conn.commit()
    conn.close()


def sqlite_with_a_meta_table(path):
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    conn.execute("CREATE TABLE _sqlite_migrations (id INTEGER PRIMARY KEY, migration_set, name, applied_at)")
    conn.execute("INSERT INTO meta VALUES ('app', 'something-else')")
    conn.commit()
    conn.close()


def truncated_dispenser_db(path, keep):
    with Store.open(path, DEVICE) as store:
        for i in range(200):
            store.append([Draft("dose.due", {"pad": "x" * 300, "i": i})], T0)
    data = path.read_bytes()
    path.write_bytes(data[:keep(len(data))])


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(os.urandom(8192)), "not a dispenser database (file is not a database)"),
    (lambda p: p.write_bytes(b""), "not a dispenser database (file is empty)"),
    (lambda p: p.write_text("schedule = 1\n"), "not a dispenser database (file is not a database)"),
    (sqlite_of_another_app, "not a dispenser database (tables of another application)"),
    (sqlite_with_a_meta_table, "not a dispenser database (tables of another application)"),
    (lambda p: truncated_dispenser_db(p, lambda n: n // 2), "database is damaged"),
    (lambda p: truncated_dispenser_db(p, lambda n: n - 4096), "database is damaged"),
])
def test_a_file_that_is_not_an_intact_dispenser_db_is_refused_untouched(path, make, message):
    make(path)
    before = path.read_bytes()
    with pytest.raises(StoreError) as refused:
        Store.open(path, DEVICE)
    text = str(refused.value)
    assert text.startswith(f"{path}: {message}")
    assert "\n" not in text
    assert path.read_bytes() == before


def test_a_database_of_another_device_is_refused(path):
    Store.open(path, "disp-0002").close()
    with pytest.raises(StoreError, match="belongs to device 'disp-0002', not 'disp-0001'"):
        Store.open(path, DEVICE)


def test_a_missing_directory_is_not_created(tmp_path):
    target = tmp_path / "nowhere" / "dispenser.db"
    with pytest.raises(StoreError, match="does not exist"):
        Store.open(target, DEVICE)
    assert not target.parent.exists()


def test_creating_leaves_only_the_database(tmp_path):
    Store.open(tmp_path / "dispenser.db", DEVICE).close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dispenser.db"]


# --- migrations --------------------------------------------------------------------------


def applied(path):
    conn = raw(path)
    names = [row[0] for row in conn.execute("SELECT name FROM _sqlite_migrations ORDER BY id")]
    conn.close()
    return names


def indexes(db):
    return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}


def test_a_new_database_gets_every_migration_in_order(path):
    Store.open(path, DEVICE).close()
    assert applied(path) == MIGRATION_NAMES == ["0001_log", "0002_indexes", "0003_schedules_per_apply", "0004_snapshot"]


def test_an_old_database_is_migrated_keeping_its_log(path):
    store_module._create_file(path, DEVICE, stop_before="0002_indexes")
    assert applied(path) == ["0001_log"]
    with Store.open(path, DEVICE) as old:  # opening it migrates it
        assert {"events_at", "outbox_unsent"} <= indexes(old.db)
        fill(old, 3)
    assert applied(path) == ["0001_log", "0002_indexes", "0003_schedules_per_apply", "0004_snapshot"]
    with Store.open(path, DEVICE) as again:
        assert again.event_count() == 3 and again.verify()[0]


def test_schedules_survive_migration_3(path):
    """A schedule saved by a version-2 database (one row per version) is still found."""
    store_module._create_file(path, DEVICE, stop_before="0003_schedules_per_apply")
    db = Database(raw(path))
    v2 = Store(db, str(path), DEVICE, counter_ids())
    [event] = v2.append([Draft("schedule.applied", {"version": 12, "source": "mqtt"})], T0, schedule_document=DOC)
    db.close()
    with Store.open(path, DEVICE) as migrated:
        assert migrated.schedule_row(12) == (event["seq"], DOC)
        assert migrated.last_applied("mqtt")["version"] == 12
        migrated.append([Draft("schedule.applied", {"version": 12})], T0, schedule_document=DOC)  # no longer unique
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            migrated.db.execute("UPDATE schedules SET version = 1")


def test_version_1_data_survives_migration_2(path):
    """Rows written by a version-1 database are read and chained on after migrating."""
    store_module._create_file(path, DEVICE, stop_before="0002_indexes")
    db = Database(raw(path))
    v1 = Store(db, str(path), DEVICE, counter_ids())  # a store at schema version 1
    first = v1.append(drafts(2), T0)
    db.close()
    with Store.open(path, DEVICE) as migrated:
        assert list(migrated.events()) == first
        assert migrated.append(drafts(1), T0)[0]["prev_hash"] == first[-1]["hash"]


def test_a_failing_migration_rolls_back_and_stays_pending():
    db = Database(memory=True)
    trial = Migrations("dispenser")
    trial(name="0001_log")(store_module._m0001_log)

    @trial(name="0002_broken")
    def broken(db):
        db.execute("CREATE TABLE half (x)")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        trial.apply(db)
    assert "events" in db.table_names() and "half" not in db.table_names()
    assert [m.name for m in trial.pending(db)] == ["0002_broken"]


def test_a_database_from_newer_software_is_refused(path):
    Store.open(path, DEVICE).close()
    conn = raw(path)
    conn.execute("INSERT INTO _sqlite_migrations (migration_set, name, applied_at) "
                 "VALUES ('dispenser', '0099_future', 'x')")
    conn.close()
    with pytest.raises(StoreError, match="newer dispenser"):
        Store.open(path, DEVICE)


def test_the_sync_connection_may_mark_the_outbox_but_never_append(tmp_path):
    """open_outbox trades fsyncs for speed on marks only; events always go through the log's connection."""
    from datetime import datetime, timezone

    from dispenser.events import Draft
    from dispenser.store import Store, StoreError
    now = datetime(2026, 11, 24, tzinfo=timezone.utc)
    log = Store.open(tmp_path / "d.db", "disp-1")
    log.append([Draft("device.started", {}, "00000000-0000-4000-8000-000000000001")], now)
    outbox = Store.open_outbox(tmp_path / "d.db", "disp-1")
    assert [seq for seq, _ in outbox.unsent(10)] == [1]
    assert outbox.unsent(10, after=1) == []
    outbox.mark_sent([1], now)
    assert log.backlog() == 0
    with pytest.raises(StoreError, match="only marks the outbox"):
        outbox.append([Draft("device.stopped", {}, "00000000-0000-4000-8000-000000000002")], now)
    assert log.event_count() == 1
    outbox.close()
    log.close()
