"""dispenser/sqlitedb.py against sqlite-utils, whose API it keeps: the same transactions and
the same migrations table on disk, so files made by either are read by the other."""
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import sqlite_utils

from dispenser import store as store_module
from dispenser.sqlitedb import Database, Migrations
from dispenser.store import MIGRATION_NAMES, Store

ROOT = Path(__file__).resolve().parent.parent
DEVICE = "disp-0001"


def schema(path, table="_sqlite_migrations"):
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE tbl_name = ? ORDER BY name",
                        [table]).fetchall()
    conn.close()
    return rows


def their_migrations():
    """The store's migrations registered with sqlite-utils, as the store did before."""
    theirs = sqlite_utils.Migrations(store_module.APP)
    for name in MIGRATION_NAMES:
        theirs(name=name)(getattr(store_module, "_m" + name))
    return theirs


def test_the_migrations_table_is_the_one_sqlite_utils_writes(tmp_path):
    ours, theirs = tmp_path / "ours.db", tmp_path / "theirs.db"
    Store.open(ours, DEVICE).close()
    db = sqlite_utils.Database(theirs)
    their_migrations().apply(db)
    db.close()
    assert schema(ours) == schema(theirs) and len(schema(ours)) == 2
    for table in ("events", "outbox", "schedules", "releases", "snapshot", "meta"):
        assert schema(ours, table) == schema(theirs, table)


def test_a_file_migrated_by_sqlite_utils_is_carried_on_and_read_back_by_it(tmp_path):
    path = tmp_path / "old.db"
    db = sqlite_utils.Database(path)
    their_migrations().apply(db, stop_before="0003_schedules_per_apply")
    db.execute("INSERT INTO meta (key, value) VALUES ('app', 'dispenser'), ('device_id', ?)", [DEVICE])
    db.close()
    with Store.open(path, DEVICE) as store:  # ours applies the rest
        assert "snapshot" in store.db.table_names()
    again = sqlite_utils.Database(path)
    assert [m.name for m in their_migrations().applied(again)] == MIGRATION_NAMES
    assert their_migrations().pending(again) == []
    again.close()


def test_a_write_outside_a_transaction_commits_at_once(tmp_path):
    path = tmp_path / "t.db"
    db = Database(sqlite3.connect(path))
    db.execute("CREATE TABLE t (x INTEGER CHECK (x > 0))")
    db.execute("INSERT INTO t VALUES (1)")
    assert not db.conn.in_transaction
    other = sqlite3.connect(path)
    assert other.execute("SELECT x FROM t").fetchall() == [(1,)]
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("INSERT INTO t VALUES (0)")
    assert not db.conn.in_transaction  # the failed statement left no transaction holding the lock
    other.execute("INSERT INTO t VALUES (2)")  # so another writer is not locked out
    other.commit()
    other.close()
    db.close()


def test_atomic_commits_all_or_nothing_and_nests_as_a_savepoint():
    db = Database(memory=True)
    db.execute("CREATE TABLE t (x)")
    with db.atomic():
        db.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(RuntimeError):
            with db.atomic():
                db.execute("INSERT INTO t VALUES (2)")
                raise RuntimeError("inner")
        db.execute("INSERT INTO t VALUES (3)")
    assert [r[0] for r in db.execute("SELECT x FROM t ORDER BY x")] == [1, 3]
    with pytest.raises(RuntimeError):
        with db.atomic():
            db.execute("INSERT INTO t VALUES (4)")
            raise RuntimeError("outer")
    assert [r[0] for r in db.execute("SELECT x FROM t ORDER BY x")] == [1, 3]
    assert not db.conn.in_transaction


def test_a_failing_migration_leaves_nothing_and_stays_pending():
    db = Database(memory=True)
    trial = Migrations("dispenser")
    trial(name="0001_log")(store_module._m0001_log)

    @trial(name="0002_broken")
    def broken(db: Database) -> None:
        db.execute("CREATE TABLE half (x)")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        trial.apply(db)
    assert "events" in db.table_names() and "half" not in db.table_names()
    assert [m.name for m in trial.pending(db)] == ["0002_broken"]
    assert [m.name for m in trial.applied(db)] == ["0001_log"]


def test_stopping_before_an_applied_migration_is_refused():
    db = Database(memory=True)
    trial = Migrations("dispenser")
    trial(name="0001_log")(store_module._m0001_log)
    trial.apply(db)
    with pytest.raises(ValueError, match="already applied"):
        trial.apply(db, stop_before="0001_log")
    with pytest.raises(ValueError, match="already registered"):
        trial(name="0001_log")(store_module._m0001_log)


def test_the_daemon_imports_neither_sqlite_utils_nor_its_dependencies():
    code = ("import sys; from dispenser import runner, daemon, sync, store, config; "
            "print([m for m in ('sqlite_utils', 'click', 'dateutil', 'pluggy', 'csv') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stderr


def test_the_module_docstring_example_runs():
    import doctest

    from dispenser import sqlitedb
    assert doctest.testmod(sqlitedb).failed == 0
