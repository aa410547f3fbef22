"""The care database's changes after its first schema, each applied once, in order.

`database.SCHEMA` is the first schema (CREATE ... IF NOT EXISTS); every later change is
a step here, named and recorded in `migrations` in the same transaction that makes it,
so an old database and a new one end up alike, on SQLite and on PostgreSQL. A step
never runs twice; a new step goes at the end of STEPS, never in the middle.

    with conn.transaction():
        migrate(conn, now)      # -> the names applied now
"""
from __future__ import annotations

from datetime import datetime
from typing import Callable

from ..timeutil import format_at
from .database import Connection
from .tokens import digest

LOCK_KEY = 0x63617265   # PostgreSQL advisory lock: one process migrates at a time ("care")


def _tokens_hashed(conn: Connection) -> None:
    """Acknowledgement and family tokens kept only as their sha256 (tokens.py).

    The acknowledgement tokens move to `ack_tokens` (a message may carry a new one per
    alert; an older message's link keeps working); `alerts.ack_token` is left empty. The
    family tokens are hashed in place in `links.token`. Links already sent keep working.
    """
    conn.execute("""CREATE TABLE IF NOT EXISTS ack_tokens (
        token_hash TEXT PRIMARY KEY,
        alert_id TEXT NOT NULL,
        created TEXT NOT NULL)""")
    for alert_id, token, received in conn.execute("SELECT alert_id, ack_token, received FROM alerts"
                                                  " WHERE ack_token <> ''"):
        conn.execute("INSERT INTO ack_tokens (token_hash, alert_id, created) VALUES (?, ?, ?)"
                     " ON CONFLICT (token_hash) DO NOTHING", (digest(token), alert_id, received))
    conn.execute("UPDATE alerts SET ack_token = '' WHERE ack_token <> ''")
    for (token,) in conn.execute("SELECT token FROM links"):
        conn.execute("UPDATE links SET token = ? WHERE token = ?", (digest(token), token))


def _web_view_indexes(conn: Connection) -> None:
    """The web view reads a device's events by time (its 90 days, not its whole log), and
    the open alerts without the closed ones (a partial index: both databases have them)."""
    conn.execute("CREATE INDEX IF NOT EXISTS events_by_at ON events (device, at)")
    conn.execute("CREATE INDEX IF NOT EXISTS alerts_open ON alerts (device, at)"
                 " WHERE acked_at IS NULL AND resolved_at IS NULL")


STEPS: tuple[tuple[str, Callable[[Connection], None]], ...] = (
    ("tokens_hashed", _tokens_hashed),
    ("web_view_indexes", _web_view_indexes),
)


def lock(conn: Connection) -> None:
    """PostgreSQL: wait until no other process is making or migrating the schema (held to
    the end of the transaction; taking it twice in one is harmless). SQLite's BEGIN
    IMMEDIATE already holds its one write lock."""
    if conn.dialect == "postgresql":
        conn.execute("SELECT pg_advisory_xact_lock(?)", (LOCK_KEY,))


def migrate(conn: Connection, now: datetime) -> list[str]:
    """Apply the steps not yet recorded, inside the caller's transaction; their names."""
    lock(conn)
    conn.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied TEXT NOT NULL)")
    done = {str(row[0]) for row in conn.execute("SELECT name FROM migrations")}
    applied = []
    for name, step in STEPS:
        if name in done:
            continue
        step(conn)
        conn.execute("INSERT INTO migrations (name, applied) VALUES (?, ?)", (name, format_at(now)))
        applied.append(name)
    return applied
