"""Every time a person reads in the web view is the patient's local time, on the overview as
on the patient's page, and the page says which zone; counts read "1 check-in", "2 check-ins",
never "check-in(s)" (nor "1 minutes" in a message: test_care_messages_words.py)."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from care_support import chained, ingest_events, quick_password_hashes  # noqa: F401 - fixture
from dispenser.care.config import parse_care_config
from dispenser.care.database import Database
from dispenser.care.web import times
from care_web_site import add_user, web_server
from dispenser.events import Draft
from ports import free_port
from test_care_web_login import Browser

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=timezone.utc)   # 04:00 in New York, 18:00 in Tokyo
HEARD = NOW - timedelta(minutes=5)
LOGGED = datetime(2026, 11, 29, 14, 0, tzinfo=timezone.utc)   # seq 1 at 14:01 UTC, seq 2 at 14:02
PATIENTS = {"disp-0001": ("Sam", "America/New_York"), "disp-0002": ("Kei", "Asia/Tokyo")}
STAFF, PASSWORD = "ana", "correct horse battery"
TEMPLATES = Path(__file__).resolve().parents[1] / "dispenser" / "care" / "web" / "templates"


def drafts(checkins: int) -> list[Draft]:
    dose = Draft("dose.taken", {"medication_id": "sertraline", "scheduled_at": "2026-11-29T13:00:00Z", "quantity": 1})
    return [dose] + [Draft("checkin.recorded", {"mood": 4, "side_effects": "mild", "medications": []})] * checkins


@pytest.fixture(scope="module")
def site(tmp_path_factory, quick_password_hashes):
    """The two patients' site, logged in; shared by the tests that only read its pages (a fixed
    clock, nothing written), so it is built, its password hashed and its server started once."""
    folder = tmp_path_factory.mktemp("times")
    port = free_port()
    config = parse_care_config({"database": {"url": f"sqlite:///{folder / 'care.db'}"},
                                "web": {"listen": f"127.0.0.1:{port}"},
                                "patient": [{"device": device, "name": name, "timezone": zone}
                                            for device, (name, zone) in PATIENTS.items()]})
    database = Database(config.database_url)
    with database.connect() as conn:
        add_user(conn, STAFF, PASSWORD, NOW)
        for device, checkins in (("disp-0001", 1), ("disp-0002", 2)):
            assert set(ingest_events(conn, config, chained(device, drafts(checkins), at=LOGGED), HEARD)) == {"stored"}
    server = web_server(config, database, port, now=lambda: NOW)
    server.start()
    assert server.wait_ready(60)
    client = Browser(f"http://127.0.0.1:{port}", "10.0.0.1")
    assert client.log_in(STAFF, PASSWORD)[0] == 303
    try:
        yield client
    finally:
        server.stop()


def row_of(page: str, device: str) -> str:
    return re.search(rf'<tr class="row [^"]*" data-device="{device}">(.*?)</tr>', page, re.S).group(1)


def test_the_overview_reads_each_row_on_its_patients_clock_and_says_which(site):
    status, page, _ = site.request("/")
    assert status == 200
    sam, kei = row_of(page, "disp-0001"), row_of(page, "disp-0002")
    # Heard at 08:55 UTC; the last event (seq 2 for Sam, 3 for Kei) at 14:02 and 14:03 UTC the day before.
    assert "heard Mon 30 Nov 03:55" in sam and "at Sun 29 Nov 09:02" in sam
    assert "heard Mon 30 Nov 17:55" in kei and "at Sun 29 Nov 23:03" in kei
    assert '<td class="zone">America/New_York</td>' in sam and '<td class="zone">Asia/Tokyo</td>' in kei
    assert "As of <span id=\"as-of\">Mon 30 Nov 04:00 (America/New_York); Mon 30 Nov 18:00 (Asia/Tokyo)</span>" in page
    assert "2026-11-" not in page and "UTC" not in page, "no raw UTC left for a person to convert"


def test_the_patient_page_reads_the_calendar_and_the_chart_on_the_patients_clock(site):
    status, page, _ = site.request("/patient/disp-0001")
    assert status == 200
    assert "Times are America/New_York." in page
    assert 'title="sertraline Sun 29 Nov 08:00: ' in page          # scheduled at 13:00 UTC
    assert "<title>29 Nov 09:02: mood 4</title>" in page and "<title>29 Nov 09:02: side effects mild</title>" in page
    assert "2026-11-29T" not in page and "UTC" not in page


@pytest.mark.parametrize(("device", "words"), [("disp-0001", "1</span> check-in."), ("disp-0002", "2</span> check-ins.")])
def test_the_check_in_count_reads_right_for_one_and_for_more(site, device, words):
    _, page, _ = site.request(f"/patient/{device}")
    assert f'<span id="checkin-count">{words}' in page


def test_no_template_leaves_a_plural_to_the_reader():
    for template in TEMPLATES.glob("*.html"):
        assert "(s)" not in template.read_text(), template.name


def test_local_times_and_the_moment_of_a_page():
    tz = ZoneInfo("Europe/Berlin")
    assert times.local("2026-03-29T00:59:59.000Z", tz) == "Sun 29 Mar 01:59"    # before the spring change
    assert times.local("2026-03-29T01:00:00Z", tz) == "Sun 29 Mar 03:00"        # after it
    assert times.local(None, tz) == "-" and times.local("", tz) == "-"
    assert times.as_of(NOW, []) == "Mon 30 Nov 09:00 (UTC)"
    assert times.as_of(NOW, ["Asia/Tokyo", "Asia/Tokyo"]) == "Mon 30 Nov 18:00 (Asia/Tokyo)"
