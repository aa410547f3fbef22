"""The timer's round on a real database (SQLite and PostgreSQL) with apprise delivering to
a local endpoint: a message that could not be delivered is tried again, every attempt is
recorded, and what was delivered is not sent twice."""
from __future__ import annotations

from datetime import timedelta

from care_support import AT0, Hook, chained, database_url, payload, postgres_cluster  # noqa: F401 - fixtures
from dispenser.care.config import parse_care_config
from dispenser.care.database import Database
from dispenser.care.ingest import Ingest
from dispenser.care.notify import deliver
from dispenser.care.rounds import care_round
from dispenser.events import Draft
from ports import free_port


def test_a_failed_delivery_is_tried_again_and_recorded(database_url):
    hook_port = free_port()
    config = parse_care_config({
        "database": {"url": database_url}, "alerts": {"batch_s": 10, "retry_after_s": 60},
        "patient": [{"device": "disp-0001", "name": "Sam", "notify": [f"json://127.0.0.1:{hook_port}/people"]}]})
    raised = Draft("alert.raised", {"alert_id": "a-1", "kind": "stock_empty", "severity": "warning",
                                    "message": "Sertraline is empty", "events": []})
    with Database(database_url).connect() as conn:
        Ingest(conn, config).handle("pilldispenser/disp-0001/events", payload(chained("disp-0001", [raised])[0]), AT0)
        assert care_round(conn, config, AT0 + timedelta(seconds=10), deliver) == []     # nobody listening yet
        assert conn.execute("SELECT rung, retry_at FROM alerts") == [(0, "2026-11-24T14:01:10.000Z")]
        hook_server = Hook(hook_port)      # now someone is
        try:
            assert care_round(conn, config, AT0 + timedelta(seconds=69), deliver) == []  # waits for its retry
            [sent] = care_round(conn, config, AT0 + timedelta(seconds=70), deliver)
            assert [a.alert_id for a in sent.alerts] == ["a-1"]
            assert care_round(conn, config, AT0 + timedelta(hours=1), deliver) == []     # once per rung
            [message] = hook_server.on("people")
            assert message["title"] == "Sam: a compartment is empty (warning)"
            assert "sertraline" not in message["message"].lower()
        finally:
            hook_server.close()
        assert conn.execute("SELECT ok, title FROM deliveries ORDER BY at") == [
            (0, "Sam: a compartment is empty (warning)"), (1, "Sam: a compartment is empty (warning)")]

