"""The care service's database: SQLite for one household, PostgreSQL (psycopg 3) for a clinic.

One schema and one code path: the SQL is written once, with `?` placeholders and
`INSERT ... ON CONFLICT`, which both speak; the adapter only swaps the placeholder for
psycopg's `%s` (so the SQL never holds a literal `%` or `?` of its own) and opens each
kind of connection. Times are UTC text in the events'
own form (`2026-11-21T13:03:12.120Z`), which sorts as it reads.

Each thread opens its own connection (`database.connect()`); a write is one
`with conn.transaction():`. Ingest serializes per device by writing the device's row
first: SQLite holds its one write lock from BEGIN IMMEDIATE, PostgreSQL locks the row.

    database = Database("sqlite:////var/lib/dispenser-care/care.db")
    with database.connect() as conn, conn.transaction():
        conn.execute("UPDATE alerts SET acked_at = ?, acked_by = ? WHERE alert_id = ?", (now, name, alert_id))
"""
from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

Row = tuple[Any, ...]

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS devices (
        device TEXT PRIMARY KEY,
        first_seq BIGINT,
        top_seq BIGINT,
        stored BIGINT NOT NULL DEFAULT 0,
        last_heard TEXT,
        last_seq BIGINT,
        last_type TEXT,
        last_at TEXT,
        online INTEGER,
        status_since TEXT,
        gap_since TEXT)""",
    """CREATE TABLE IF NOT EXISTS events (
        device TEXT NOT NULL,
        event_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        type TEXT NOT NULL,
        at TEXT NOT NULL,
        hash TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        body TEXT NOT NULL,
        received TEXT NOT NULL,
        PRIMARY KEY (device, event_id))""",
    "CREATE INDEX IF NOT EXISTS events_by_seq ON events (device, seq)",
    "CREATE INDEX IF NOT EXISTS events_by_type ON events (device, type, at)",
    """CREATE TABLE IF NOT EXISTS alerts (
        alert_id TEXT PRIMARY KEY,
        device TEXT NOT NULL,
        kind TEXT NOT NULL,
        severity TEXT NOT NULL,
        audience TEXT NOT NULL,
        origin TEXT NOT NULL,
        detail TEXT NOT NULL,
        evidence TEXT NOT NULL,
        at TEXT NOT NULL,
        received TEXT NOT NULL,
        ack_token TEXT NOT NULL,
        acked_at TEXT,
        acked_by TEXT,
        resolved_at TEXT,
        rung INTEGER NOT NULL DEFAULT 0,
        notified_at TEXT,
        escalated_at TEXT,
        retry_at TEXT)""",
    "CREATE INDEX IF NOT EXISTS alerts_by_device ON alerts (device, received)",
    """CREATE TABLE IF NOT EXISTS links (
        token TEXT PRIMARY KEY,
        device TEXT NOT NULL,
        created TEXT NOT NULL,
        revoked TEXT)""",
    """CREATE TABLE IF NOT EXISTS deliveries (
        delivery_id TEXT PRIMARY KEY,
        device TEXT NOT NULL,
        rung INTEGER NOT NULL,
        at TEXT NOT NULL,
        alerts TEXT NOT NULL,
        ok INTEGER NOT NULL,
        title TEXT NOT NULL)""",
    # The web view (care/web/): staff accounts (argon2 hashes) and the key its session cookies are signed with.
    """CREATE TABLE IF NOT EXISTS staff (
        name TEXT PRIMARY KEY,
        password_hash TEXT NOT NULL,
        created TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS web_keys (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL)""",
)


class DatabaseError(RuntimeError):
    """The database cannot be opened or used; one line."""


class Connection:
    """One connection of either kind, with the same three calls."""

    def __init__(self, raw: Any, dialect: str):
        self.raw = raw
        self.dialect = dialect
        self._in_transaction = False

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run one statement; the rows it returns (empty for writes)."""
        if self.dialect == "postgresql":
            sql = sql.replace("?", "%s")
            with self.raw.cursor() as cursor:
                cursor.execute(sql, tuple(params))
                return list(cursor.fetchall()) if cursor.description else []
        cursor = self.raw.execute(sql, tuple(params))
        return cursor.fetchall()

    @contextmanager
    def transaction(self) -> Iterator["Connection"]:
        """One write transaction: all of it commits at the end, or none of it."""
        if self._in_transaction:
            raise RuntimeError("transactions do not nest")
        self._in_transaction = True
        try:
            if self.dialect == "postgresql":
                with self.raw.transaction():
                    yield self
            else:
                self.raw.execute("BEGIN IMMEDIATE")
                try:
                    yield self
                except BaseException:
                    self.raw.execute("ROLLBACK")
                    raise
                self.raw.execute("COMMIT")
        finally:
            self._in_transaction = False

    @property
    def broken(self) -> bool:
        """The server is gone (a restart, a terminated backend): only a new connection helps."""
        return self.dialect == "postgresql" and bool(self.raw.broken or self.raw.closed)

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Database:
    """Where the care service keeps events and alerts, named by a URL.

    `sqlite:////abs/path.db` (four slashes: an absolute path) or
    `postgresql://user@host:port/name`. `Database(url)` creates the schema when missing and
    applies the migrations not yet applied (migrations.py).
    """

    def __init__(self, url: str, create: bool = True):
        self.url = url
        if url.startswith("sqlite:///"):
            self.dialect = "sqlite"
            self.path = url[len("sqlite:///"):]
            if not self.path:
                raise DatabaseError(f"{url}: no file named after sqlite:///")
        elif url.startswith(("postgresql://", "postgres://")):
            self.dialect = "postgresql"
            self.path = ""
        else:
            raise DatabaseError(f"{url}: not a sqlite:/// or postgresql:// URL")
        if create:
            from .migrations import lock, migrate   # it imports this module
            with self.connect() as conn, conn.transaction():
                lock(conn)   # one process makes the schema at a time
                for statement in SCHEMA:
                    conn.execute(statement)
                migrate(conn, datetime.now(timezone.utc))   # the steps after SCHEMA (migrations.py)

    def connect(self) -> Connection:
        """A new connection, for the calling thread only."""
        if self.dialect == "postgresql":
            return Connection(self._postgresql(), "postgresql")
        return Connection(self._sqlite(), "sqlite")

    def _sqlite(self) -> sqlite3.Connection:
        if self.path != ":memory:":
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise DatabaseError(f"{self.path}: cannot create its folder ({error.strerror})") from None
        try:
            raw = sqlite3.connect(self.path, isolation_level=None, timeout=30.0, check_same_thread=False)
            raw.execute("PRAGMA journal_mode=WAL")
            raw.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as error:
            raise DatabaseError(f"{self.path}: cannot be opened as a database ({error})") from None
        return raw

    def _postgresql(self) -> Any:
        try:
            import psycopg
        except ImportError:
            raise DatabaseError("PostgreSQL needs psycopg: pip install 'dispenser[care]'") from None
        try:
            return psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        except psycopg.Error as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise DatabaseError(f"{_without_password(self.url)}: cannot connect ({first})") from None


def _without_password(url: str) -> str:
    """The URL as it may be printed: a password in it replaced by ***."""
    head, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    credentials, at, host = rest.partition("@")
    user = credentials.split(":", 1)[0]
    return f"{head}{sep}{user}{':***' if ':' in credentials else ''}@{host}"
