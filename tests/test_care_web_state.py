"""What the web view says of a dispenser's connection, as `care status` says it: a device
whose events arrived but whose retained status never did (a `simulate --scenario` run,
or a device whose status the broker lost) was "heard" at a time, never "not heard"."""
from __future__ import annotations

import json
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest

from care_support import chained, ingest_events, quick_password_hashes, taken  # noqa: F401 - fixture
from dispenser.events import Draft
from dispenser.care.config import parse_care_config
from dispenser.care.database import Database
from dispenser.care.ingest import Ingest
from dispenser.care.tokens import issue_ack_tokens, issue_family_link
from care_web_site import add_user, web_server
from ports import free_port
from test_care_web_login import Browser

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=timezone.utc)
HEARD = NOW - timedelta(minutes=5)                       # 08:55 UTC, 08:55 in London in November
STAFF, PASSWORD = "ana", "correct horse battery"
pytestmark = pytest.mark.usefixtures("quick_password_hashes")   # staff only log in here


def serve(tmp_path, *, events: int):
    port = free_port()
    config = parse_care_config({"database": {"url": f"sqlite:///{tmp_path / 'care.db'}"},
                                "web": {"listen": f"127.0.0.1:{port}"},
                                "patient": [{"device": "disp-0001", "name": "Sam", "timezone": "Europe/London"}]})
    database = Database(config.database_url)
    with database.connect() as conn:
        add_user(conn, STAFF, PASSWORD, NOW)
        assert set(ingest_events(conn, config, chained("disp-0001", taken(events)), HEARD)) <= {"stored"}  # may be none
        token = issue_family_link(conn, "disp-0001", NOW)
    server = web_server(config, database, port, now=lambda: NOW)
    server.start()
    assert server.wait_ready(60)
    return server, f"http://127.0.0.1:{port}", token


def family_page(base: str, token: str) -> str:
    with urllib.request.urlopen(f"{base}/family/{token}", timeout=30) as response:
        return response.read().decode()


def test_events_without_a_status_are_heard_at_their_time_on_both_pages(tmp_path):
    server, base, token = serve(tmp_path, events=2)
    try:
        page = family_page(base, token)
        assert "Not heard" not in page
        assert "No status yet, last heard Mon 30 Nov 08:55" in page
        client = Browser(base, "10.0.0.1")
        assert client.log_in(STAFF, PASSWORD)[0] == 303
        status, overview, _ = client.request("/")
        assert status == 200
        assert "not heard" not in overview and "heard Mon 30 Nov 08:55" in overview
    finally:
        server.stop()


def test_a_device_nothing_arrived_from_is_not_heard(tmp_path):
    server, base, token = serve(tmp_path, events=0)
    try:
        assert "Not heard." in family_page(base, token)
    finally:
        server.stop()


def ack_page(tmp_path, *, rung: int, clinic_notify: list[str], escalate_after_min: int) -> str:
    """The page a message's acknowledgement link opens, for an alert told up to `rung`."""
    port = free_port()
    config = parse_care_config({"database": {"url": f"sqlite:///{tmp_path / 'care.db'}"},
                                "web": {"listen": f"127.0.0.1:{port}"},
                                "patient": [{"device": "disp-0001", "name": "Sam", "clinic_notify": clinic_notify,
                                             "escalate_after_min": escalate_after_min}]})
    database = Database(config.database_url)
    with database.connect() as conn:
        raised = Draft("alert.raised", {"alert_id": "a-1", "kind": "dose_missed", "severity": "warning",
                                        "message": "m", "events": []})
        [event] = chained("disp-0001", [raised])
        assert Ingest(conn, config).handle("pilldispenser/disp-0001/events", json.dumps(event).encode(),
                                           HEARD) == "stored"
        conn.execute("UPDATE alerts SET rung = ? WHERE alert_id = 'a-1'", (rung,))
        token = issue_ack_tokens(conn, ["a-1"], NOW)["a-1"]
    server = web_server(config, database, port, now=lambda: NOW)
    server.start()
    assert server.wait_ready(60)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ack/a-1?token={token}", timeout=30) as response:
            return response.read().decode()
    finally:
        server.stop()


def test_the_ack_page_says_who_is_told_next_only_when_someone_is(tmp_path):
    one = ack_page(tmp_path / "1", rung=1, clinic_notify=["json://127.0.0.1:9/clinic"], escalate_after_min=1)
    assert "the clinic is told 1 minute after the first message about it" in one
    fifteen = ack_page(tmp_path / "15", rung=1, clinic_notify=["json://127.0.0.1:9/clinic"], escalate_after_min=15)
    assert "the clinic is told 15 minutes after" in fifteen
    told = ack_page(tmp_path / "told", rung=2, clinic_notify=["json://127.0.0.1:9/clinic"], escalate_after_min=15)
    assert "The clinic has been told of it too." in told and "is told 15" not in told
    nobody = ack_page(tmp_path / "nobody", rung=1, clinic_notify=[], escalate_after_min=15)
    assert 'id="next"' not in nobody and 'id="ack"' in nobody
