"""The dispenser's SQLite file: the event log, the outbox, schedules, release intents.

One `Store` is one connection. The daemon's Store appends; the MQTT thread opens its
own Store on the same file and only reads the outbox and marks rows sent (WAL lets
both work at once, `busy_timeout` covers the short write locks).

    >>> store = Store.open(":memory:", "disp-0001")
    >>> from datetime import timezone
    >>> now = datetime(2026, 11, 21, 6, 0, tzinfo=timezone.utc)
    >>> [event] = store.append([Draft("device.started", {})], now)
    >>> event["seq"], store.backlog()
    (1, 1)

Everything an append writes (events, their outbox rows, release intents, a schedule
document) is one transaction: after a crash or power cut either all of it is on disk
or none of it is. A writer that decides on what the log says holds the write lock from
its read to its append (`with store.writing():`), so no other process can append between.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping
from urllib.parse import quote

from .events import GENESIS, Draft, build_event_text, canonical, hash_of_parts, new_event_id
from .events import _problem as event_problem  # verify_chain's judgement of one event
from .sqlitedb import Database, Migrations  # sqlite-utils' small API without its imports
from .timeutil import format_at, parse_utc, truncate_ms
from .vocabulary import RELEASE_TYPES, EventType, ReleaseOutcome, ScheduleSource

APP = "dispenser"
TABLES = ("meta", "events", "outbox", "schedules", "releases")
QUICK_CHECK_KEY = "quick_check_boot"  # meta: the boot id in which the file last passed quick_check
RESERVED_META = frozenset({"app", "device_id"})


class StoreError(Exception):
    """The database cannot be used or a write failed; `str()` is one line for the user."""


# --- schema ---------------------------------------------------------------------------

MIGRATIONS = Migrations(APP)
MIGRATION_NAMES: list[str] = []


Migration = Callable[[Database], None]


def _migration(name: str) -> Callable[[Migration], Migration]:
    """Register a numbered migration; they apply in the order they are defined."""
    MIGRATION_NAMES.append(name)
    return MIGRATIONS(name=name)


def _run(db: Database, statements: Iterable[str]) -> None:
    """One statement at a time: `executescript` would commit the migration's transaction."""
    for statement in statements:
        db.execute(statement)


@_migration("0001_log")
def _m0001_log(db: Database) -> None:
    """The log and everything that must change with it in one transaction."""
    _run(db, [
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """CREATE TABLE events (
            seq INTEGER PRIMARY KEY CHECK (seq > 0),
            event_id TEXT NOT NULL UNIQUE,
            schema TEXT NOT NULL,
            type TEXT NOT NULL,
            at TEXT NOT NULL,
            data TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL)""",
        """CREATE TRIGGER events_no_update BEFORE UPDATE ON events
            BEGIN SELECT RAISE(ABORT, 'events are append-only'); END""",
        """CREATE TRIGGER events_no_delete BEFORE DELETE ON events
            BEGIN SELECT RAISE(ABORT, 'events are append-only'); END""",
        """CREATE TABLE outbox (
            seq INTEGER PRIMARY KEY REFERENCES events(seq),
            sent_at TEXT)""",
        """CREATE TABLE schedules (
            version INTEGER PRIMARY KEY,
            document TEXT NOT NULL,
            applied_seq INTEGER NOT NULL REFERENCES events(seq))""",
        """CREATE TRIGGER schedules_no_update BEFORE UPDATE ON schedules
            BEGIN SELECT RAISE(ABORT, 'schedules are append-only'); END""",
        """CREATE TABLE releases (
            event_id TEXT PRIMARY KEY REFERENCES events(event_id),
            outcome TEXT CHECK (outcome IN ('done', 'failed', 'uncertain')),
            completed_at TEXT)""",
        """CREATE TRIGGER releases_complete_once BEFORE UPDATE ON releases
            WHEN OLD.outcome IS NOT NULL
            BEGIN SELECT RAISE(ABORT, 'release already completed'); END""",
    ])


@_migration("0002_indexes")
def _m0002_indexes(db: Database) -> None:
    """`log --since` and the outbox backlog stay fast when the log holds years of events."""
    _run(db, [
        "CREATE INDEX events_at ON events(at)",
        "CREATE INDEX outbox_unsent ON outbox(seq) WHERE sent_at IS NULL",
    ])


@_migration("0003_schedules_per_apply")
def _m0003_schedules_per_apply(db: Database) -> None:
    """(v2) One row per apply, not per version: a local apply may claim the version the
    clinic's next signed schedule then uses, and that one must still be applied."""
    _run(db, [
        """CREATE TABLE schedules_per_apply (
            applied_seq INTEGER PRIMARY KEY REFERENCES events(seq),
            version INTEGER NOT NULL,
            document TEXT NOT NULL)""",
        "INSERT INTO schedules_per_apply (applied_seq, version, document) "
        "SELECT applied_seq, version, document FROM schedules",
        "DROP TABLE schedules",
        "ALTER TABLE schedules_per_apply RENAME TO schedules",
        "CREATE INDEX schedules_version ON schedules(version)",
        """CREATE TRIGGER schedules_no_update BEFORE UPDATE ON schedules
            BEGIN SELECT RAISE(ABORT, 'schedules are append-only'); END""",
    ])


@_migration("0004_snapshot")
def _m0004_snapshot(db: Database) -> None:
    """The folded state at one head of the chain (snapshot.py), so a start folds only the
    events after it; and the open release intents found without reading every release."""
    _run(db, [
        """CREATE TABLE snapshot (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            seq INTEGER NOT NULL,
            hash TEXT NOT NULL,
            code TEXT NOT NULL,
            clock_trusted INTEGER NOT NULL,
            digest TEXT NOT NULL,
            state TEXT NOT NULL)""",
        "CREATE INDEX releases_open ON releases(event_id) WHERE outcome IS NULL",
    ])


def _create_file(path: Path, device_id: str, stop_before: str | None = None) -> None:
    """Build a new database beside `path` and link it into place complete.

    A half-created file would be refused at the next start (an empty file may be a
    log lost to the filesystem), so creation must be all or nothing.
    """
    temp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.new")
    temp.unlink(missing_ok=True)
    # Private from the first byte, whatever the caller's umask: the log names a person's doses.
    os.close(os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    db = Database(sqlite3.connect(temp))
    try:
        db.execute("PRAGMA synchronous=FULL")
        _migrate(db, stop_before)
        _stamp(db, device_id)
    finally:
        db.close()
    _fsync(temp)
    try:
        os.link(temp, path)  # fails if another process created it meanwhile: theirs wins
    except FileExistsError:
        pass
    finally:
        temp.unlink()
    _fsync(path.parent)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _migrate(db: Database, stop_before: str | None = None) -> None:
    """Apply pending migrations in order, each in its own transaction."""
    MIGRATIONS.apply(db, stop_before=stop_before)


def _stamp(db: Database, device_id: str) -> None:
    """Mark a new database as ours and bind it to one device."""
    with db.atomic():
        db.execute("INSERT INTO meta (key, value) VALUES ('app', ?), ('device_id', ?)", [APP, device_id])


# --- the store --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tail:
    """What the next append chains to; replaced only after a commit."""

    seq: int = 0
    hash: str = GENESIS
    at: str = ""  # as stored: the fixed `at` format sorts as time does


class ChainBroken(Exception):
    """The event `seq` does not chain to the one before it (or cannot be read)."""

    def __init__(self, seq: int, reason: str):
        super().__init__(f"seq {seq}: {reason}")
        self.seq, self.reason = seq, reason


@dataclass(frozen=True)
class SnapshotRow:
    """The stored snapshot (snapshot.py): the state folded up to the event `seq` with `hash`."""

    seq: int
    hash: str
    code: str
    clock_trusted: bool
    digest: str
    state: str


_EVENT_COLUMNS = "seq, event_id, schema, type, at, data, prev_hash, hash"


class Store:
    """The dispenser's database. Open with `Store.open(path, device_id)`.

    `db` is the `Database` (sqlitedb.py, sqlite-utils' API), for tests and tooling; write through the
    methods only, so that the cached tail of the chain stays true.
    """

    def __init__(self, db: Database, name: str, device_id: str, id_factory: Callable[[], str]):
        self.db = db
        self.name = name
        self.device_id = device_id
        self._id_factory = id_factory
        try:
            self._tail = self._read_tail()
        except sqlite3.Error as error:  # a damaged page under the last event: say so in one line
            db.conn.close()
            raise StoreError(f"{name}: the log is damaged: its last event cannot be read "
                             f"({error.__class__.__name__}); not starting on it") from None

    @classmethod
    def open(cls, path: str | os.PathLike, device_id: str,
             id_factory: Callable[[], str] | None = None, *, check_later: bool = False) -> "Store":
        """Open (or create) the database at `path`, or `":memory:"`; StoreError if unusable.

        The whole file is read (`PRAGMA quick_check`) before it is used, unless the log's
        meta says it passed that check in this boot. `check_later=True` is the daemon's
        start: the whole file is read after READY on the background check's thread
        (chaincheck.py, which records a pass for this boot), while the start reads only
        the pages it needs, each checked as SQLite reads it and its events by their hashes
        (docs/PERFORMANCE.md, "The whole file after READY").
        """
        name = str(path)
        if name == ":memory:":
            db = Database(memory=True)
            _configure(db, name, wal=False)
            _migrate(db)
            _stamp(db, device_id)
        else:
            db = _open_file(Path(path), device_id, check_later)
        return cls(db, name, device_id, id_factory or new_event_id)

    @classmethod
    def open_outbox(cls, path: str | os.PathLike, device_id: str, *, check_later: bool = False) -> "Store":
        """A connection for the MQTT sync, which only reads the outbox and marks rows sent.

        Its commits do not wait for the disk (synchronous=NORMAL): a power cut can undo
        only its last marks, and those rows are then sent again, which delivery at least
        once allows. It may not append: events are written by the daemon's connection.
        `check_later`: the daemon's sync, whose file the daemon's background check reads whole.
        """
        store = cls.open(path, device_id, check_later=check_later)
        store.db.execute("PRAGMA synchronous=NORMAL")
        store._outbox_only = True
        return store

    _outbox_only = False

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- writing -------------------------------------------------------------------------

    def append(self, drafts: Iterable[Draft], now: datetime,
               schedule_document: dict | None = None, *,
               complete_releases: Mapping[str, str] | None = None) -> list[dict]:
        """Log `drafts` in one transaction and return the full events.

        `at` is `now` to the millisecond, or the last event's `at` if the clock went
        back. A `dose.released`/`prn.released` also records its release intent; a
        `schedule_document` is saved with its `schedule.applied` event; and
        `complete_releases` ({event_id: outcome}) closes intents in the same
        transaction, so that e.g. a `dose.release_uncertain` is never logged twice.
        """
        drafts = list(drafts)
        if not drafts:
            return []
        if self._outbox_only:
            raise StoreError(f"{self.name}: this connection only marks the outbox; events go through the log's")
        try:
            with self._transaction():
                self._tail = self._read_tail()  # the true tail, even if another process appended
                events, texts = self._build(drafts, now)
                schedule_row = self._schedule_row(events, schedule_document)
                self._insert(events, texts, schedule_row)
                for event_id, outcome in (complete_releases or {}).items():
                    self._complete(event_id, outcome, now)
        except sqlite3.Error as error:
            self._tail = self._reread_tail()
            raise self._error("cannot append", error) from error
        last = events[-1]
        self._tail = _Tail(last["seq"], last["hash"], last["at"])
        return events

    @contextlib.contextmanager
    def writing(self) -> Iterator["Store"]:
        """One write transaction around a read, a decision and its appends.

        The write lock is taken first (BEGIN IMMEDIATE), so what is read inside is still
        the log's tail when the appends inside (which join this transaction) chain to it:
        another process cannot append in between. Everything commits at the end, or
        nothing does; a failed append spoils the transaction, so let its error leave the block.

            with store.writing():
                news = list(store.events(since_seq=seen))   # fold them, decide...
                store.append(drafts, now)                   # ...and log the decision
        """
        if self._outbox_only:
            raise StoreError(f"{self.name}: this connection only marks the outbox; events go through the log's")
        if self._in_write:
            raise StoreError(f"{self.name}: already writing (transactions do not nest)")
        try:
            with self._writing():
                self._in_write = True
                yield self
        except sqlite3.Error as error:
            raise self._error("cannot write", error) from error
        finally:
            self._in_write = False
            self._tail = self._reread_tail()  # committed or rolled back: the file says which

    _in_write = False

    def _transaction(self) -> contextlib.AbstractContextManager[None]:
        """The open `writing()` transaction, or one of its own."""
        return contextlib.nullcontext() if self._in_write else self._writing()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """A write transaction that takes the write lock first (BEGIN IMMEDIATE).

        Every write goes through it: a deferred transaction that read first would fail at
        once (no busy wait) when another connection, such as the sync thread, wrote meanwhile.

        A `dispenser refill` may append beside the running daemon: with the lock taken
        before the tail is read, the two never fork the chain, and the busy timeout
        makes one wait for the other.
        """
        conn = self.db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _build(self, drafts: list[Draft], now: datetime) -> tuple[list[dict], list[str]]:
        """The events, and the canonical text of each one's `data` (what is stored)."""
        at = self._clamped(now)
        seq, prev_hash, events, texts = self._tail.seq, self._tail.hash, [], []
        for draft in drafts:
            if not isinstance(draft.data, dict):
                raise StoreError(f"{self.name}: cannot append {draft.type}: data is not an object")
            seq += 1
            draft = draft if draft.event_id else Draft(draft.type, draft.data, self._id_factory())
            try:
                event, text = build_event_text(draft, self.device_id, seq, at, prev_hash)
            except (TypeError, ValueError) as error:
                raise StoreError(f"{self.name}: cannot append {draft.type}: data is not JSON ({error})") from error
            events.append(event)
            texts.append(text)
            prev_hash = event["hash"]
        return events, texts

    def _clamped(self, now: datetime) -> datetime:
        """`now` to the ms, or the last event's `at` if the clock went back."""
        at = truncate_ms(_aware(now))
        if format_at(at) >= self._tail.at:
            return at
        try:
            return parse_utc(self._tail.at)
        except ValueError:
            raise StoreError(f"{self.name}: cannot append: event {self._tail.seq} has a damaged time") from None

    def _schedule_row(self, events: list[dict], document: dict | None) -> tuple | None:
        """The `schedules` row, which must travel with a `schedule.applied` of its version."""
        if document is None:
            return None
        version = document.get("version")
        applied = [e for e in events if e["type"] == EventType.SCHEDULE_APPLIED
                   and e["data"].get("version", version) == version]
        if not isinstance(version, int) or not applied:
            raise StoreError(f"{self.name}: a schedule document needs its version and a schedule.applied event")
        return version, canonical(document), applied[-1]["seq"]

    def _insert(self, events: list[dict], texts: list[str], schedule_row: tuple | None) -> None:
        conn = self.db.conn
        conn.executemany(
            f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(e["seq"], e["event_id"], e["schema"], e["type"], e["at"], text, e["prev_hash"], e["hash"])
             for e, text in zip(events, texts)])
        conn.executemany("INSERT INTO outbox (seq) VALUES (?)", [(e["seq"],) for e in events])
        conn.executemany("INSERT INTO releases (event_id) VALUES (?)",
                         [(e["event_id"],) for e in events if e["type"] in RELEASE_TYPES])
        if schedule_row is not None:
            conn.execute("INSERT INTO schedules (version, document, applied_seq) VALUES (?, ?, ?)",
                         schedule_row)

    def complete_release(self, event_id: str, outcome: str, now: datetime) -> None:
        """Record how a release ended: "done", "failed" or "uncertain"."""
        try:
            with self._transaction():
                self._complete(event_id, outcome, now)
        except sqlite3.Error as error:
            raise self._error("cannot complete release", error) from error

    def _complete(self, event_id: str, outcome: str, now: datetime) -> None:
        if outcome not in {o.value for o in ReleaseOutcome}:
            known = sorted(o.value for o in ReleaseOutcome)
            raise StoreError(f"{self.name}: release outcome {outcome!r} is not one of {known}")
        row = self.db.execute("SELECT outcome FROM releases WHERE event_id = ?", [event_id]).fetchone()
        if row is None:
            raise StoreError(f"{self.name}: no release intent for event {event_id}")
        if row[0] is not None:
            raise StoreError(f"{self.name}: release {event_id} already completed as {row[0]}")
        self.db.execute("UPDATE releases SET outcome = ?, completed_at = ? WHERE event_id = ?",
                        [outcome, format_at(_aware(now)), event_id])

    def meta_set(self, key: str, value: str) -> None:
        if key in RESERVED_META:
            raise StoreError(f"{self.name}: meta key {key!r} is fixed when the database is created")
        if not isinstance(value, str):
            raise TypeError("meta values are text")
        try:
            with self._transaction():
                self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", [key, value])
        except sqlite3.Error as error:
            raise self._error("cannot write meta", error) from error

    # --- reading -------------------------------------------------------------------------

    def events(self, since_seq: int = 0) -> Iterator[dict]:
        """Events with `seq > since_seq`, in order, read lazily.

        Exhaust or drop the iterator soon: while it is open it holds a read snapshot,
        and the WAL cannot be checkpointed past it.
        """
        rows = self.db.execute(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE seq > ? ORDER BY seq", [since_seq])
        return (self._event(row) for row in rows)

    def events_since(self, at_iso: str) -> Iterator[dict]:
        """Events with `at` at or after an ISO time with an offset (`log --since`)."""
        return self.events(since_seq=self.first_seq_at(parse_utc(at_iso)) - 1)

    def first_seq_at(self, moment: datetime) -> int:
        """The seq of the first event logged at or after `moment` (one past the last if none).

        `at` never decreases along the log (an append clamps it), so an event's seq bounds
        every later one: the index on `at` finds it, and the primary key reads from there.
        """
        row = self.db.execute("SELECT seq FROM events WHERE at >= ? ORDER BY at, seq LIMIT 1",
                              [format_at(_aware(moment))]).fetchone()
        return row[0] if row is not None else self._read_tail().seq + 1

    def chained(self, since_seq: int, prev_hash: str) -> Iterator[dict]:
        """Events after `since_seq`, each checked to chain to the one before (whose hash is
        `prev_hash`) and to hash to its own `hash`; ChainBroken names the first that does not.

        The hash is taken over the stored text as it is (no parsing and re-encoding).
        """
        expected = since_seq + 1
        try:
            for row in self.db.execute(f"SELECT {_EVENT_COLUMNS} FROM events WHERE seq > ? ORDER BY seq",
                                       [since_seq]):
                if row[0] != expected or row[6] != prev_hash or not self._hash_holds(row):
                    raise ChainBroken(expected, "does not chain to the event before it")
                event = self._event(row)
                yield event
                expected, prev_hash = expected + 1, row[7]
        except sqlite3.Error as error:
            raise ChainBroken(expected, f"cannot be read ({type(error).__name__})") from None

    def _hash_holds(self, row: tuple) -> bool:
        """Whether the stored hash is that of the stored columns, hashed as stored."""
        return _stored_hash(row, self.device_id) == row[7]

    def last_event(self) -> dict | None:
        row = self.db.execute(f"SELECT {_EVENT_COLUMNS} FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        return None if row is None else self._event(row)

    def event_count(self) -> int:
        return self.db.execute("SELECT count(*) FROM events").fetchone()[0]

    def schedule_document(self, version: int) -> dict | None:
        """The document last applied with this version (a version may be applied twice)."""
        row = self.schedule_row(version)
        return None if row is None else row[1]

    def schedule_row(self, version: int, upto_seq: int | None = None) -> tuple[int, dict] | None:
        """(applied_seq, document) of the last apply of `version` at or before `upto_seq`."""
        row = self.schedule_text(version, upto_seq)
        return None if row is None else (row[0], json.loads(row[1]))

    def schedule_text(self, version: int, upto_seq: int | None = None) -> tuple[int, str] | None:
        """`schedule_row` with the document as stored (its JSON text), unparsed."""
        row = self.db.execute(
            "SELECT applied_seq, document FROM schedules WHERE version = ? AND applied_seq <= ? "
            "ORDER BY applied_seq DESC LIMIT 1", [version, upto_seq if upto_seq is not None else 2 ** 63 - 1],
        ).fetchone()
        return None if row is None else (row[0], row[1])

    def current_schedule_version(self) -> int | None:
        """The version of the schedule applied last (the one in force), or None."""
        row = self.db.execute("SELECT version FROM schedules ORDER BY applied_seq DESC LIMIT 1").fetchone()
        return None if row is None else row[0]

    def last_applied(self, source: ScheduleSource) -> dict | None:
        """The `data` of the last `schedule.applied` from `source` ("mqtt": the clinic's, signed)."""
        rows = self.db.execute(
            "SELECT e.data FROM schedules s JOIN events e ON e.seq = s.applied_seq ORDER BY s.applied_seq DESC")
        for (text,) in rows:
            data = json.loads(text)
            if data.get("source") == source:
                return data
        return None

    def clock_logged_trusted(self) -> bool:
        """What the log last said about the clock: False after a `clock.unsynchronized` that no
        `clock.synchronized` followed. A new ClockTrust starts from it (clocktrust.py).

        Only the events after a snapshot whose head is in the log are read: the snapshot
        keeps the answer up to there (without one, a log with no clock event is read whole).
        """
        snapshot = self.snapshot()
        since = snapshot.seq if snapshot is not None and self.holds_head(snapshot.seq, snapshot.hash) else 0
        row = self.db.execute("SELECT type FROM events WHERE seq > ? AND type IN (?, ?) ORDER BY seq DESC LIMIT 1",
                              [since, EventType.CLOCK_SYNCHRONIZED, EventType.CLOCK_UNSYNCHRONIZED]).fetchone()
        if row is None:
            return snapshot.clock_trusted if snapshot is not None and since else True
        return row[0] == EventType.CLOCK_SYNCHRONIZED

    # --- the snapshot of the folded state (snapshot.py) -----------------------------------

    def snapshot(self) -> SnapshotRow | None:
        """The stored snapshot, or None (also when it cannot be read: the log is folded whole)."""
        try:
            row = self.db.execute(
                "SELECT seq, hash, code, clock_trusted, digest, state FROM snapshot WHERE id = 1").fetchone()
        except sqlite3.Error:
            return None
        if row is None or not all(isinstance(v, t) for v, t in zip(row, (int, str, str, int, str, str))):
            return None
        return SnapshotRow(row[0], row[1], row[2], bool(row[3]), row[4], row[5])

    def holds_head(self, seq: int, hash_: str) -> bool:
        """Whether the event `seq` is in the log with this hash."""
        try:
            row = self.db.execute("SELECT hash FROM events WHERE seq = ?", [seq]).fetchone()
        except sqlite3.Error:
            return False
        return row is not None and row[0] == hash_

    def save_snapshot(self, row: SnapshotRow) -> None:
        """Replace the snapshot; inside `writing()` it commits with the events it reflects."""
        if not self.holds_head(row.seq, row.hash):  # never a state ahead of, or beside, the log
            raise StoreError(f"{self.name}: a snapshot at seq {row.seq} does not match the log")
        try:
            with self._transaction():
                self.db.execute(
                    "INSERT OR REPLACE INTO snapshot (id, seq, hash, code, clock_trusted, digest, state) "
                    "VALUES (1, ?, ?, ?, ?, ?, ?)",
                    [row.seq, row.hash, row.code, int(row.clock_trusted), row.digest, row.state])
        except sqlite3.Error as error:
            raise self._error("cannot write the snapshot", error) from error

    def drop_snapshot(self) -> None:
        """Forget the snapshot: the next start folds the whole log."""
        try:
            with self._transaction():
                self.db.execute("DELETE FROM snapshot")
        except sqlite3.Error as error:
            raise self._error("cannot drop the snapshot", error) from error

    def open_releases(self) -> list[dict]:
        """Release events whose intent has no outcome: the servo may or may not have moved."""
        rows = self.db.execute(
            f"SELECT {', '.join('e.' + c for c in _EVENT_COLUMNS.split(', '))} FROM releases r "
            # CROSS JOIN: from the few open intents (their partial index), never a scan of the log
            "CROSS JOIN events e ON e.event_id = r.event_id WHERE r.outcome IS NULL ORDER BY e.seq")
        return [self._event(row) for row in rows]

    def meta_get(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return None if row is None else row[0]

    # --- outbox --------------------------------------------------------------------------

    def unsent(self, limit: int, after: int = 0) -> list[tuple[int, str]]:
        """Up to `limit` unsent events with seq > `after`, oldest first, as (seq, canonical JSON).

        `after` lets the sync skip the rows it already has in flight instead of reading them again.
        """
        if limit < 0:
            raise ValueError("limit must not be negative")  # SQLite would read it as "no limit"
        rows = self.db.execute(
            f"SELECT {', '.join('e.' + c for c in _EVENT_COLUMNS.split(', '))} FROM outbox o "
            "JOIN events e ON e.seq = o.seq WHERE o.sent_at IS NULL AND o.seq > ? ORDER BY o.seq LIMIT ?",
            [after, limit]).fetchall()
        return [(row[0], canonical(self._event(row))) for row in rows]

    def mark_sent(self, seqs: Iterable[int], now: datetime) -> None:
        """The broker acknowledged these: they leave the outbox (rows already sent keep their time)."""
        sent_at = format_at(_aware(now))
        try:
            with self._writing():
                self.db.conn.executemany(
                    "UPDATE outbox SET sent_at = ? WHERE seq = ? AND sent_at IS NULL",
                    [(sent_at, seq) for seq in seqs])
        except sqlite3.Error as error:
            raise self._error("cannot mark events sent", error) from error

    def backlog(self) -> int:
        return self.db.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone()[0]

    # --- integrity -----------------------------------------------------------------------

    def verify(self, pause: Callable[[int], None] | None = None) -> tuple[bool, int | None, str]:
        """Check the stored chain from its columns, so edits behind the triggers show.

        Each row is hashed from its stored text, without parsing and re-encoding it; a row
        that does not hold is then judged event by event (`verify_chain`'s reasons).
        `pause(seq)`, if given, is called every few thousand rows (a background check
        lets the daemon's thread in).
        """
        return verify_rows(self.db.conn, self.device_id, pause)

    # --- helpers -------------------------------------------------------------------------

    def _event(self, row: tuple) -> dict:
        seq, event_id, schema, type_, at, data, prev_hash, hash_ = row
        try:
            parsed = json.loads(data)
        except (TypeError, ValueError):
            raise StoreError(f"{self.name}: event {seq} is damaged (data is not valid JSON)") from None
        return {"schema": schema, "event_id": event_id, "device_id": self.device_id, "seq": seq,
                "type": type_, "at": at, "data": parsed, "prev_hash": prev_hash, "hash": hash_}

    def _read_tail(self) -> _Tail:
        row = self.db.execute("SELECT seq, hash, at FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        return _Tail() if row is None else _Tail(*row)

    def _reread_tail(self) -> _Tail:
        """After a failed write, trust the file; if it cannot be read, keep what we had."""
        try:
            return self._read_tail()
        except sqlite3.Error:
            return self._tail

    def _error(self, doing: str, error: BaseException) -> StoreError:
        return StoreError(f"{self.name}: {doing}: {_one_line(error)}")


# --- the chain, hashed as stored --------------------------------------------------------


def _stored_hash(row: tuple, device_id: str) -> str:
    """The event hash (events.event_hash) of a stored row, from its columns as stored.

    The canonical form has sorted keys and `data` is stored in it, so the hashed text is
    put together from the columns (`events.hash_of_parts`); equal to hashing the re-encoded
    event for every row the store wrote.
    """
    seq, event_id, schema, type_, at, data, prev_hash, _ = row
    return hash_of_parts(prev_hash, at, data, device_id, event_id, schema, seq, type_, _JSON_TEXT)


# A damaged row's column that is neither text nor an integer, as json.dumps(value, ensure_ascii=False) writes it.
_JSON_TEXT = json.JSONEncoder(ensure_ascii=False).encode


PAUSE_EVERY = 4096  # rows checked between two pauses of a background verify


def verify_rows(conn: sqlite3.Connection, device_id: str,
                pause: Callable[[int], None] | None = None) -> tuple[bool, int | None, str]:
    """The whole stored chain on one connection: (ok, first bad seq or None, reason)."""
    expected, prev_hash, prev_at = 1, GENESIS, ""
    try:
        for row in conn.execute(f"SELECT {_EVENT_COLUMNS} FROM events ORDER BY seq"):
            seq, at, stored_prev, hash_ = row[0], row[4], row[6], row[7]
            holds = (seq == expected and stored_prev == prev_hash and isinstance(at, str) and at >= prev_at
                     and isinstance(row[5], str) and _stored_hash(row, device_id) == hash_)
            if not holds:
                problem = _row_problem(row, device_id, expected, prev_hash, prev_at)
                if problem is not None:
                    return False, *problem
            expected, prev_hash, prev_at = expected + 1, hash_, at
            if pause is not None and expected % PAUSE_EVERY == 0:
                pause(expected)
    except sqlite3.Error as error:  # e.g. a damaged byte that is no longer UTF-8 text
        # Named apart from OperationalError (busy, gone), which a background check does not call damage.
        what = "text that is not UTF-8" if "decode" in str(error) else type(error).__name__
        return False, expected, f"cannot be read ({what})"
    count = expected - 1
    return True, None, f"{count} event{'' if count == 1 else 's'}, chain intact"


def _row_problem(row: tuple, device_id: str, expected: int, prev_hash: str,
                 prev_at: str) -> tuple[int, str] | None:
    """A row whose stored text does not hash: judged as an event, as verify_chain judges it."""
    seq, event_id, schema, type_, at, data, stored_prev, hash_ = row
    try:
        parsed = json.loads(data)
    except (TypeError, ValueError):
        return (seq if isinstance(seq, int) else expected), "data is not valid JSON"
    event = {"schema": schema, "event_id": event_id, "device_id": device_id, "seq": seq, "type": type_,
             "at": at, "data": parsed, "prev_hash": stored_prev, "hash": hash_}
    return event_problem(event, expected, prev_hash, prev_at)


# --- opening a file ---------------------------------------------------------------------


def _open_file(path: Path, device_id: str, check_later: bool = False) -> Database:
    """Open an existing dispenser database (creating a new one if there is none)."""
    if not path.parent.is_dir():
        raise StoreError(f"{path}: directory {path.parent} does not exist")
    if not path.exists():
        try:
            _create_file(path, device_id)
        except (OSError, sqlite3.Error) as error:
            raise StoreError(f"{path}: cannot create database ({_one_line(error)})") from error
    if not path.is_file():
        raise StoreError(f"{path}: not a file")
    try:
        conn = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=rw", uri=True)
    except sqlite3.Error as error:
        raise StoreError(f"{path}: cannot open ({_one_line(error)})") from error
    db = Database(conn)
    try:
        db.execute("PRAGMA busy_timeout=5000")
        db.execute("PRAGMA cell_size_check=ON")  # every page read is checked more closely: damage shows early
        _check_identity(db, path, device_id, quick=not check_later and not checked_this_boot(conn))
        _configure(db, str(path), wal=True)
        _migrate(db)
        _check_tables(db, path)
    except StoreError:
        db.close()
        raise
    except sqlite3.Error as error:
        db.close()
        raise StoreError(f"{path}: cannot open ({_one_line(error)})") from error
    return db


# --- the whole file, read once a boot ----------------------------------------------------


def whole_file_problem(conn: sqlite3.Connection) -> str | None:
    """The first problem `PRAGMA quick_check` finds reading the whole file, or None if it is sound.

    `sqlite3.OperationalError` (busy, gone) is not a finding about the file: it is raised.
    """
    try:
        problems = [row[0] for row in conn.execute("PRAGMA quick_check").fetchall()]
    except sqlite3.OperationalError:
        raise
    except sqlite3.DatabaseError as error:
        return _one_line(error)
    return None if problems == ["ok"] else _one_line(problems[0])


def record_whole_file_checked(path: str) -> None:
    """Note in the log's meta that the file passed quick_check in this boot (the daemon's
    background check), so that a restart, the MQTT thread's connection and the commands of
    this boot do not read it whole again. A connection of its own, for one short write."""
    from .clocktrust import boot_id
    boot = boot_id()
    if boot is None:
        return
    try:
        conn = sqlite3.connect(f"file:{quote(str(Path(path).resolve()))}?mode=rw", uri=True)
    except sqlite3.Error:
        return
    try:
        conn.execute("PRAGMA busy_timeout=5000")
        with conn:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", [QUICK_CHECK_KEY, boot])
    except sqlite3.Error:
        pass  # a full disk: the next start checks again, and the daemon shows the storage problem
    finally:
        conn.close()


def checked_this_boot(conn: sqlite3.Connection) -> bool:
    """Whether the file passed `quick_check` earlier in this boot (the daemon's background check records it)."""
    from .clocktrust import boot_id
    boot = boot_id()
    if boot is None:
        return False
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", [QUICK_CHECK_KEY]).fetchone()
    except sqlite3.Error:
        return False  # not ours, or not readable: the full check says which
    return row is not None and row[0] == boot


def _check_identity(db: Database, path: Path, device_id: str, quick: bool = True) -> None:
    """Refuse, before writing anything, a file that is not this device's intact database."""
    def refuse(reason: str) -> StoreError:
        return StoreError(f"{path}: not a dispenser database ({reason})")

    try:
        problems = [row[0] for row in db.execute("PRAGMA quick_check").fetchall()] if quick else ["ok"]
    except sqlite3.DatabaseError as error:
        if "malformed" in str(error):
            raise StoreError(f"{path}: database is damaged ({_one_line(error)})") from error
        raise refuse(_one_line(error)) from error
    if problems != ["ok"]:
        raise StoreError(f"{path}: database is damaged ({_one_line(problems[0])})")
    names = set(db.table_names())
    if not names:
        raise refuse("file is empty" if path.stat().st_size == 0 else "it has no tables")
    if "meta" not in names or MIGRATIONS.migrations_table not in names:
        raise refuse("tables of another application")
    meta = dict(db.execute("SELECT key, value FROM meta WHERE key IN ('app', 'device_id')").fetchall())
    if meta.get("app") != APP:
        raise refuse("tables of another application")
    if meta.get("device_id") != device_id:
        raise StoreError(f"{path}: database belongs to device {meta.get('device_id')!r}, not {device_id!r}")
    unknown = [m.name for m in MIGRATIONS.applied(db) if m.name not in MIGRATION_NAMES]
    if unknown:
        raise StoreError(f"{path}: written by a newer dispenser (schema {unknown[0]}); update the software")


def _check_tables(db: Database, path: Path) -> None:
    missing = [name for name in TABLES if name not in db.table_names()]
    if missing:
        raise StoreError(f"{path}: not a dispenser database (table {missing[0]} missing)")


def _configure(db: Database, name: str, wal: bool) -> None:
    """WAL lets the sync thread read while we write; FULL makes a commit survive power loss."""
    if wal:
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise StoreError(f"{name}: write-ahead logging unavailable (journal mode {mode})")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA foreign_keys=ON")
    db.execute("PRAGMA busy_timeout=5000")


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    return moment


def _one_line(error: Any) -> str:
    return " ".join(str(error).split()) or type(error).__name__
