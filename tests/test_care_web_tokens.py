"""Acknowledgement and family link tokens are kept only as their sha256: the database
never holds a token a message or `care link` handed out, a link still opens by it, and
a database made before (tokens in clear) is migrated in place so its old links keep
working, on SQLite and PostgreSQL alike."""
from __future__ import annotations

import re
from datetime import timedelta

from care_support import AT0, care_toml, chained, database_url, payload, postgres_cluster  # noqa: F401 - fixtures
from dispenser.care.config import load_care_config
from dispenser.care.database import SCHEMA, Connection, Database
from dispenser.care.ingest import Ingest
from dispenser.care.migrations import STEPS
from dispenser.care.rounds import care_round
from dispenser.care.tokens import digest, issue_family_link, linked_device
from dispenser.care.web.queries import alert_by_token
from dispenser.events import Draft
from dispenser.timeutil import format_at

TOPIC = "pilldispenser/disp-0001/events"


def everything_stored(conn: Connection) -> str:
    """Every value of every table, as one text to search."""
    if conn.dialect == "sqlite":
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    else:
        tables = [row[0] for row in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")]
    assert "alerts" in tables and "links" in tables and "ack_tokens" in tables
    return "\n".join(repr(row) for table in tables for row in conn.execute(f"SELECT * FROM {table}"))


def missed_alert(alert_id: str) -> Draft:
    return Draft("alert.raised", {"alert_id": alert_id, "kind": "dose_missed", "severity": "warning",
                                  "message": "", "events": []})


def test_the_database_keeps_no_token_a_message_or_a_link_carried(tmp_path, database_url):
    config = load_care_config(str(care_toml(tmp_path / "care.toml", database_url=database_url,
                                            notify=["json://127.0.0.1:9/people"],
                                            clinic_notify=["json://127.0.0.1:9/clinic"])))
    bodies: list[str] = []

    def deliver(urls: tuple[str, ...], title: str, body: str) -> bool:
        bodies.append(body)
        return True

    with Database(database_url).connect() as conn:
        for event in chained("disp-0001", [missed_alert("a-1"), missed_alert("a-2")]):
            assert Ingest(conn, config).handle(TOPIC, payload(event), AT0) == "stored"
        care_round(conn, config, AT0 + timedelta(minutes=2), deliver)            # rung 1, the people
        care_round(conn, config, AT0 + timedelta(minutes=30), deliver)           # rung 2, the clinic
        links = [(match.group(1), match.group(2))
                 for body in bodies for match in re.finditer(r"/ack/([\w-]+)\?token=([\w-]+)", body)]
        assert sorted(alert_id for alert_id, _ in links) == ["a-1", "a-1", "a-2", "a-2"]
        family = issue_family_link(conn, "disp-0001", AT0)
        stored = everything_stored(conn)
        for _, token in links:
            assert token not in stored
        assert family not in stored and digest(family) in stored
        for alert_id, token in links:     # the people's link still works after the clinic's message
            found = alert_by_token(conn, alert_id, token)
            assert found is not None and found.alert_id == alert_id
        other = dict(links)
        assert alert_by_token(conn, "a-1", other["a-2"]) is None, "a token opens its own alert only"
        assert alert_by_token(conn, "a-1", digest(other["a-1"])) is None, "the stored digest is no token"
        assert alert_by_token(conn, "a-1", "") is None
        assert linked_device(conn, family) == "disp-0001"
        assert linked_device(conn, digest(family)) is None


def test_a_database_from_before_is_migrated_and_its_old_links_keep_working(database_url):
    # The first schema, as a database made before the migrations existed, with tokens in clear.
    with Database(database_url, create=False).connect() as conn, conn.transaction():
        for statement in SCHEMA:
            conn.execute(statement)
        for alert_id, token in (("old-1", "old-ack-token-1"), ("old-2", "old-ack-token-2")):
            conn.execute("INSERT INTO alerts (alert_id, device, kind, severity, audience, origin, detail, evidence,"
                         " at, received, ack_token) VALUES (?, 'disp-0001', 'dose_missed', 'warning', 'people',"
                         " 'device', '', '[]', ?, ?, ?)", (alert_id, format_at(AT0), format_at(AT0), token))
        conn.execute("INSERT INTO links (token, device, created) VALUES ('family-kept', 'disp-0001', ?)",
                     (format_at(AT0),))
        conn.execute("INSERT INTO links (token, device, created, revoked) VALUES ('family-revoked', 'disp-0001',"
                     " ?, ?)", (format_at(AT0), format_at(AT0)))
    for _ in range(2):     # opened twice: the second opening changes nothing
        database = Database(database_url)
        with database.connect() as conn:
            assert [row[0] for row in conn.execute("SELECT name FROM migrations ORDER BY name")] == \
                sorted(name for name, _ in STEPS)
            stored = everything_stored(conn)
            for token in ("old-ack-token-1", "old-ack-token-2", "family-kept", "family-revoked"):
                assert token not in stored
            assert alert_by_token(conn, "old-1", "old-ack-token-1").alert_id == "old-1"
            assert alert_by_token(conn, "old-2", "old-ack-token-2").alert_id == "old-2"
            assert alert_by_token(conn, "old-1", "old-ack-token-2") is None
            assert linked_device(conn, "family-kept") == "disp-0001"
            assert linked_device(conn, "family-revoked") is None


def test_care_link_prints_a_token_the_database_does_not_hold_and_revoking_closes_it(tmp_path):
    from care_web_site import dispenser
    url = f"sqlite:///{tmp_path / 'care.db'}"
    path = care_toml(tmp_path / "care.toml", database_url=url)
    made = dispenser("care", "link", "disp-0001", "--config", path)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().rsplit("/family/", 1)[1]
    with Database(url).connect() as conn:
        assert token not in everything_stored(conn)
        assert linked_device(conn, token) == "disp-0001"
    revoked = dispenser("care", "link", "disp-0001", "--revoke", "--config", path)
    assert revoked.stdout.strip() == "disp-0001: 1 link revoked", revoked.stderr
    with Database(url).connect() as conn:
        assert linked_device(conn, token) is None
