"""The little of sqlite-utils the store uses, over the standard `sqlite3`.

Importing sqlite_utils brings click, dateutil, pluggy, csv and its plugin machinery:
about 3 MB of the daemon's resident memory and 60 ms of its imports here, for four names
(docs/PERFORMANCE.md). This module keeps their behaviour and what they write on disk:

- `Database(conn)` or `Database(memory=True)`: `.conn`, `.execute` (a write outside a
  transaction commits at once), `.atomic()` (a transaction; nested, a savepoint),
  `.table_names()`, `.close()`;
- `Migrations(name)`: numbered schema changes, each applied in one transaction with its
  record in `_sqlite_migrations`, the table and index sqlite-utils creates, byte for byte
  (tests/test_sqlitedb.py holds both to each other), so files made before are read as they are.

    >>> db = Database(memory=True)
    >>> steps = Migrations("demo")
    >>> @steps(name="0001_t")
    ... def _t(db: Database) -> None:
    ...     db.execute("CREATE TABLE t (x)")
    >>> steps.apply(db)
    >>> [m.name for m in steps.applied(db)], "t" in db.table_names()
    (['0001_t'], True)
"""
from __future__ import annotations

import contextlib
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator, Sequence

# sqlite-utils' own statements for its migrations table (migrations.py, Table.create and
# create_index in sqlite-utils 4.x), kept verbatim: sqlite_master stores the text as given.
_MIGRATIONS_TABLE_SQL = """CREATE TABLE "_sqlite_migrations" (
   "id" INTEGER PRIMARY KEY,
   "migration_set" TEXT,
   "name" TEXT,
   "applied_at" TEXT
)"""
_MIGRATIONS_INDEX_SQL = """CREATE UNIQUE INDEX "idx__sqlite_migrations_migration_set_name"
    ON "_sqlite_migrations" ("migration_set", "name")"""
_TRANSACTION_CONTROL = frozenset({"BEGIN", "COMMIT", "END", "ROLLBACK", "SAVEPOINT", "RELEASE"})


class Database:
    """One SQLite connection with sqlite-utils' `execute` and `atomic` semantics."""

    def __init__(self, conn: sqlite3.Connection | None = None, *, memory: bool = False):
        if (conn is None) == (not memory):
            raise ValueError("give a connection or memory=True")
        self.conn: sqlite3.Connection = sqlite3.connect(":memory:") if conn is None else conn

    def execute(self, sql: str, parameters: Sequence[Any] | dict[str, Any] | None = None) -> sqlite3.Cursor:
        """Run one statement; a write outside a transaction is committed at once, as sqlite-utils does
        (the sqlite3 module would otherwise leave it open, holding the write lock)."""
        was_in_transaction = self.conn.in_transaction
        try:
            cursor = self.conn.execute(sql) if parameters is None else self.conn.execute(sql, parameters)
        except Exception:
            if not was_in_transaction and self.conn.in_transaction:
                self.conn.execute("ROLLBACK")  # the failed statement's implicit transaction
            raise
        if (not was_in_transaction and self.conn.in_transaction and cursor.description is None
                and _first_keyword(sql) not in _TRANSACTION_CONTROL):
            self.conn.execute("COMMIT")
        return cursor

    @contextlib.contextmanager
    def atomic(self) -> Iterator["Database"]:
        """A transaction: all of the block commits or none of it; inside another, a savepoint."""
        if self.conn.in_transaction:
            savepoint = f"sqlitedb_{secrets.token_hex(8)}"
            self.conn.execute(f"SAVEPOINT {savepoint}")
            try:
                yield self
            except BaseException:
                if self.conn.in_transaction:  # a RAISE(ROLLBACK) may have ended it already
                    self.conn.execute(f"ROLLBACK TO SAVEPOINT {savepoint}")
                    self.conn.execute(f"RELEASE SAVEPOINT {savepoint}")
                raise
            self.conn.execute(f"RELEASE SAVEPOINT {savepoint}")
            return
        self.conn.execute("BEGIN")
        try:
            yield self
        except BaseException:
            self._rollback()
            raise
        try:
            self.conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    def table_names(self) -> list[str]:
        return [row[0] for row in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _first_keyword(sql: str) -> str:
    words = sql.lstrip().split(None, 1)
    return words[0].rstrip(";").upper() if words else ""


MigrationFunction = Callable[[Database], None]


@dataclass(frozen=True)
class Migration:
    name: str
    fn: MigrationFunction


@dataclass(frozen=True)
class AppliedMigration:
    name: str
    applied_at: str


class Migrations:
    """A named set of schema changes, applied in the order they were registered."""

    migrations_table = "_sqlite_migrations"

    def __init__(self, name: str):
        self.name = name
        self._migrations: list[Migration] = []

    def __call__(self, *, name: str | None = None) -> Callable[[MigrationFunction], MigrationFunction]:
        def register(fn: MigrationFunction) -> MigrationFunction:
            migration_name = name or fn.__name__
            if any(m.name == migration_name for m in self._migrations):
                raise ValueError(f"migration {migration_name!r} is already registered in set {self.name!r}")
            self._migrations.append(Migration(migration_name, fn))
            return fn
        return register

    def applied(self, db: Database) -> list[AppliedMigration]:
        """The migrations of this set recorded in the file, in the order they were applied."""
        if self.migrations_table not in db.table_names():
            return []
        rows = db.execute(f'SELECT name, applied_at FROM "{self.migrations_table}" WHERE migration_set = ? '
                          "ORDER BY rowid", [self.name])
        return [AppliedMigration(name, applied_at) for name, applied_at in rows.fetchall()]

    def pending(self, db: Database) -> list[Migration]:
        done = {m.name for m in self.applied(db)}
        return [m for m in self._migrations if m.name not in done]

    def apply(self, db: Database, *, stop_before: str | Iterable[str] | None = None) -> None:
        """Apply what is pending, each migration and its record in one transaction (a failing one
        leaves nothing of itself and stays pending); stop before a migration named in `stop_before`."""
        stops = set() if stop_before is None else {stop_before} if isinstance(stop_before, str) else set(stop_before)
        already = stops & {m.name for m in self.applied(db)}
        if already:
            raise ValueError(f"cannot stop before {', '.join(sorted(already))} in set {self.name!r}: already applied")
        self.ensure_migrations_table(db)
        for migration in self.pending(db):
            if migration.name in stops:
                return
            with db.atomic():
                migration.fn(db)
                db.execute(f'INSERT INTO "{self.migrations_table}" (migration_set, name, applied_at) '
                           "VALUES (?, ?, ?)", [self.name, migration.name, str(datetime.now(timezone.utc))])

    def ensure_migrations_table(self, db: Database) -> None:
        if self.migrations_table not in db.table_names():
            db.execute(_MIGRATIONS_TABLE_SQL)
            db.execute(_MIGRATIONS_INDEX_SQL)
