"""Staff accounts and the session key, kept in the care database.

Passwords are hashed with argon2id (argon2-cffi's defaults); only the hash is stored.
The key that signs session cookies is made once, at random, and kept in the database,
so every worker and every restart of `care serve` accepts the same sessions.

    add_user(conn, "ana", "a long passphrase", now)
    check_password(conn, "ana", "a long passphrase")   # True
"""
from __future__ import annotations

import secrets
from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ..database import Connection
from ...timeutil import format_at

MIN_PASSWORD = 10
MAX_NAME = 64
_hasher = PasswordHasher()
# Verified against when the name is unknown, so a wrong name costs as long as a wrong password;
# made at the first unknown name, not at import (a hash at full cost is ~0.1 s of CPU).
_DUMMY_HASH: str | None = None


def _dummy_hash() -> str:
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = _hasher.hash("no such user, no such password")
    return _DUMMY_HASH


class AccountError(ValueError):
    """A name or password that cannot be used; one line."""


def check_name(name: str) -> str:
    if not name or len(name) > MAX_NAME or not name.isprintable() or name != name.strip():
        raise AccountError(f"a staff name is 1 to {MAX_NAME} printable characters without spaces around them")
    return name


def add_user(conn: Connection, name: str, password: str, now: datetime) -> bool:
    """Store `name` with the hash of `password`; True when new, False when its password changed."""
    check_name(name)
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"the password must be at least {MIN_PASSWORD} characters")
    digest = _hasher.hash(password)
    with conn.transaction():
        known = conn.execute("SELECT 1 FROM staff WHERE name = ?", (name,))
        conn.execute("INSERT INTO staff (name, password_hash, created) VALUES (?, ?, ?)"
                     " ON CONFLICT (name) DO UPDATE SET password_hash = excluded.password_hash",
                     (name, digest, format_at(now)))
    return not known


def check_password(conn: Connection, name: str, password: str) -> bool:
    """Whether `name` is staff and `password` is theirs."""
    rows = conn.execute("SELECT password_hash FROM staff WHERE name = ?", (name,))
    try:
        return _hasher.verify(rows[0][0] if rows else _dummy_hash(), password) and bool(rows)
    except (VerificationError, InvalidHashError):
        return False


def session_key(conn: Connection) -> str:
    """The key session cookies are signed with: made on first use, then always the same."""
    with conn.transaction():
        conn.execute("INSERT INTO web_keys (name, value) VALUES ('session', ?) ON CONFLICT (name) DO NOTHING",
                     (secrets.token_urlsafe(32),))
        return str(conn.execute("SELECT value FROM web_keys WHERE name = 'session'")[0][0])
