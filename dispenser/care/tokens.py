"""The web view's secrets in links: acknowledgement tokens and family link tokens.

They are random (128 bits and more), so a plain sha256 is the right way to keep them:
the database holds only the digest, and a link is checked by the digest of the token it
carries. Passwords, which people choose, stay argon2 (web/accounts.py). A token is made
when it is handed out: each message gets a new acknowledgement token per alert (the
link of an earlier message keeps working), and each `care link` a new family token.

    token = issue_family_link(conn, "disp-0001", now)
    linked_device(conn, token)        # 'disp-0001' until `care link --revoke`
"""
from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from ..timeutil import format_at
from .database import Connection

ACK_TOKEN_BYTES = 16
LINK_TOKEN_BYTES = 24


def digest(token: str) -> str:
    """What the database keeps of a token: its sha256, hex."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def issue_ack_tokens(conn: Connection, alert_ids: list[str], now: datetime) -> dict[str, str]:
    """A new token per alert for one message ({alert_id: token}); only their digests are stored."""
    tokens = {alert_id: secrets.token_urlsafe(ACK_TOKEN_BYTES) for alert_id in alert_ids}
    with conn.transaction():
        for alert_id, token in tokens.items():
            conn.execute("INSERT INTO ack_tokens (token_hash, alert_id, created) VALUES (?, ?, ?)",
                         (digest(token), alert_id, format_at(now)))
    return tokens


def ack_token_opens(conn: Connection, alert_id: str, token: str) -> bool:
    """Whether `token` was handed out to acknowledge this alert."""
    if not token:
        return False
    return bool(conn.execute("SELECT 1 FROM ack_tokens WHERE token_hash = ? AND alert_id = ?",
                             (digest(token), alert_id)))


def issue_family_link(conn: Connection, device: str, now: datetime) -> str:
    """A new family token for one patient's page; the links table keeps its digest."""
    token = secrets.token_urlsafe(LINK_TOKEN_BYTES)
    with conn.transaction():
        conn.execute("INSERT INTO links (token, device, created) VALUES (?, ?, ?)",
                     (digest(token), device, format_at(now)))
    return token


def linked_device(conn: Connection, token: str) -> str | None:
    """The device a family link's token opens, unless it was revoked."""
    if not token:
        return None
    rows = conn.execute("SELECT device FROM links WHERE token = ? AND revoked IS NULL", (digest(token),))
    return str(rows[0][0]) if rows else None
