"""The care web view in a real headless Chromium (Debian's, driven by playwright), served by
uvicorn on a free port: the pages load, their numbers equal `care status --json` and
`dispenser report --json` for the same events, logging in works and a wrong password does
not, the family link shows one patient read-only until revoked, and acknowledging in the
browser (by the staff's button or the notification's link) stops the escalation.
Screenshots of the four kinds of page people see are kept in the test's tmp dir
(`screenshots/`); not of every state, each costs Chromium a full-page render."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from zoneinfo import ZoneInfo

from care_web_site import CLINIC_URL, PASSWORD, PEOPLE_URL, STAFF, TZ, Site, build_site, dispenser
from care_support import quick_password_hashes  # noqa: F401 - fixture
from dispenser.care.rounds import care_round
from dispenser.timeutil import parse_utc

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    # Imported here, not by each xdist worker that collects this module: skipped without it.
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: `./dev test` installs it")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def now() -> datetime:
    return datetime.now(timezone.utc)


@pytest.fixture
def site(tmp_path, now, quick_password_hashes):
    """A site of its own, for a test that changes it (a failed login, a link, acknowledgements)."""
    served = build_site(tmp_path, now)
    try:
        yield served
    finally:
        served.stop()


@pytest.fixture(scope="module")
def shared_site(tmp_path_factory, quick_password_hashes):
    """One site for the tests that only read it (built once: its log, ingest, password hash, server)."""
    served = build_site(tmp_path_factory.mktemp("site"), datetime.now(timezone.utc))
    try:
        yield served
    finally:
        served.stop()


def new_tab(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(60_000)
    return tab


@pytest.fixture
def page(browser):
    """A context of its own, for a test that logs in or out, clicks or changes cookies."""
    tab = new_tab(browser)
    try:
        yield tab
    finally:
        tab.context.close()


@pytest.fixture(scope="module")
def staff_page(browser, shared_site):
    """One tab, logged in once, for the tests that only read the shared site: each of them
    opens its own page first. A context and a log-in (three page loads) cost Chromium about
    as much CPU as the test itself."""
    tab = new_tab(browser)
    try:
        log_in(tab, shared_site)
        assert tab.url == f"{shared_site.url}/"
        yield tab
    finally:
        tab.context.close()


def shot(page, tmp_path: Path, name: str) -> Path:
    folder = tmp_path / "screenshots"
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 1000
    return path


def local(at: str) -> str:
    """A `care status --json` time as the web view shows it, on the patients' clock (care_web_site.TZ)."""
    return f"{parse_utc(at).astimezone(ZoneInfo(TZ)):%a %d %b %H:%M}"


def log_in(page, site: Site, password: str = PASSWORD) -> None:
    page.goto(f"{site.url}/")
    assert page.url.startswith(f"{site.url}/login")
    page.fill("input[name=name]", STAFF)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")


def test_a_wrong_password_is_refused_and_the_right_one_opens_the_overview(page, site, tmp_path):
    log_in(page, site, "not the password at all")
    assert page.inner_text("#login-error") == "Wrong name or password."
    page.goto(f"{site.url}/patient/disp-0001")
    assert page.url.startswith(f"{site.url}/login"), "no page without logging in"
    log_in(page, site)
    assert page.url == f"{site.url}/"
    assert page.inner_text("h1") == "Patients, who needs attention first"
    shot(page, tmp_path, "overview")


def test_the_overview_says_what_care_status_says_most_urgent_first(staff_page, shared_site):
    page = staff_page
    page.goto(f"{shared_site.url}/")
    status = json.loads(dispenser("care", "status", "--json", "--config", shared_site.config_path).stdout)
    rows = page.query_selector_all("table.overview tbody tr")
    shown = {row.get_attribute("data-device"): row for row in rows}
    assert set(shown) == {entry["device"] for entry in status["devices"]}
    for entry in status["devices"]:
        row = shown[entry["device"]]
        assert int(row.query_selector(".open-alerts").inner_text()) == len(entry["open_alerts"])
        assert int(row.query_selector(".seq").inner_text()) == entry["last_event"]["seq"]
        state = ("online" if entry["online"] else "offline") if entry["online"] is not None else (
            f"heard {local(entry['last_heard'])}" if entry["last_heard"] else "not heard")
        assert row.query_selector(".state").inner_text().startswith(state)
        # The times people read are the patient's local ones, as on the patient's page, and the row says whose.
        assert row.query_selector(".last-event").inner_text().endswith(f" at {local(entry['last_event']['at'])}")
        assert row.query_selector(".zone").inner_text() == TZ
    # Alex's critical fault comes before Sam's warning, whatever their names or counts.
    assert [row.get_attribute("data-device") for row in rows] == ["disp-0002", "disp-0001"]
    assert shown["disp-0002"].query_selector(".worst").inner_text() == "critical"


@pytest.mark.parametrize("days", [7, 30, 90])
def test_adherence_on_the_page_equals_dispenser_report(staff_page, shared_site, tmp_path, days):
    page = staff_page
    page.goto(f"{shared_site.url}/patient/disp-0001")
    assert page.inner_text("h1").startswith("Sam")
    result = dispenser("report", "--days", days, "--json", "--config", shared_site.device_config,
                       "--db", shared_site.device_db)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    table = page.query_selector(f"table.adherence[data-days='{days}']")
    rows = table.query_selector_all("tbody tr[data-medication]")
    assert {row.get_attribute("data-medication") for row in rows} == \
        {medication["medication_id"] for medication in report["medications"]}
    for medication in report["medications"]:
        row = table.query_selector(f"tr[data-medication='{medication['medication_id']}']")
        for field in ("on_time", "late", "confirmed_late", "unconfirmed", "missed", "skipped", "failed"):
            assert int(row.query_selector(f"[data-field={field}]").inner_text()) == medication[field], field
        shown = row.query_selector("[data-field=days_all_taken]").get_attribute("data-value")
        assert (None if shown == "" else round(float(shown), 3)) == medication["days_all_taken"]
    sertraline = next(m for m in report["medications"] if m["medication_id"] == "sertraline")
    assert sertraline["missed"] and sertraline["late"] and sertraline["unconfirmed"] and sertraline["on_time"]
    assert page.is_visible("details.definitions dl")
    if days == 30:
        assert int(page.inner_text("#checkin-count")) == report["checkins"]["count"]
        assert page.query_selector_all("#trend svg circle.mood-point").__len__() == report["checkins"]["count"]
        shot(page, tmp_path, "patient")


def test_the_calendar_shows_each_dose_by_its_outcome_and_the_stock_its_days_left(staff_page, shared_site):
    page = staff_page
    page.goto(f"{shared_site.url}/patient/disp-0001")
    marks = [mark.get_attribute("class").split()[1] for mark in page.query_selector_all(".calendar td.day .mark")]
    for outcome in ("on_time", "late", "unconfirmed", "missed", "held"):
        assert outcome in marks, outcome
    # Four weeks of days: sertraline every day of the 22 the log covers, lithium every other day.
    assert len(page.query_selector_all(".calendar td.day")) == 28
    assert marks.count("missed") == 3 and marks.count("held") == 4
    stock = page.query_selector("table.stock tr[data-medication=sertraline]")
    released = 22 - 3 - 4    # 30 refilled; every dose neither missed nor held was released
    assert int(stock.query_selector("[data-field=count]").inner_text()) == 30 - released
    assert stock.query_selector("[data-field=days_left]").inner_text() != "-"


def test_the_family_link_shows_one_patient_read_only_until_revoked(page, site, tmp_path):
    made = dispenser("care", "link", "disp-0001", "--config", site.config_path)
    assert made.returncode == 0, made.stderr
    link = made.stdout.strip()
    assert link.startswith(f"{site.url}/family/")
    page.goto(link)
    assert page.inner_text("h1").startswith("Sam")
    assert page.is_visible(".read-only")
    assert page.query_selector_all("button.ack") == [] and page.query_selector_all("form[method=post]") == []
    status = json.loads(dispenser("care", "status", "--json", "--config", site.config_path).stdout)
    sam = next(entry for entry in status["devices"] if entry["device"] == "disp-0001")
    assert {item.get_attribute("data-alert") for item in page.query_selector_all("li.alert")} == \
        {alert["alert_id"] for alert in sam["open_alerts"]}, "the open alerts are shown, without a button"
    assert page.query_selector_all("a[href='/']") == []
    assert "Sertraline was not taken" not in page.content(), "an alert's device text is never shown"
    shot(page, tmp_path, "family")
    for elsewhere in ("/", "/patient/disp-0002", "/patient/disp-0001"):
        page.goto(f"{site.url}{elsewhere}")
        assert page.url.startswith(f"{site.url}/login"), elsewhere
    revoked = dispenser("care", "link", "disp-0001", "--revoke", "--config", site.config_path)
    assert revoked.returncode == 0, revoked.stderr
    response = page.goto(link)
    assert response.status == 404
    assert "revoked" in page.inner_text("#message") and "Sam" not in page.content()


def test_acknowledging_in_the_browser_stops_the_escalation(page, site, tmp_path, now):
    sent: list[tuple[tuple[str, ...], str, str]] = []

    def deliver(urls: tuple[str, ...], title: str, body: str) -> bool:
        sent.append((urls, title, body))
        return True

    def round_at(moment: datetime) -> list:
        with site.database.connect() as conn:
            return care_round(conn, site.config, moment, deliver)

    first = round_at(now + timedelta(seconds=site.config.alerts.batch_s * 7))
    told = {alert.alert_id for send in first if send.urls == (PEOPLE_URL,) for alert in send.alerts}
    assert {"a-missed", "a-stock", "b-fault"} <= told
    # The staff acknowledge Sam's missed dose by its button ...
    log_in(page, site)
    page.goto(f"{site.url}/patient/disp-0001")
    page.click("li.alert[data-alert='a-missed'] button.ack")
    assert page.query_selector("li.alert[data-alert='a-missed']") is None
    assert page.query_selector("li.alert[data-alert='a-stock']") is not None
    # ... and Alex's people acknowledge the fault by the link in the message they got.
    body = next(body for urls, title, body in sent if title.startswith("Alex"))
    ack_url = next(word for word in body.split() if "/ack/b-fault?token=" in word)
    page.context.clear_cookies()
    page.goto(ack_url)
    assert page.query_selector("#acked") is None, "opening the link acknowledges nothing"
    shot(page, tmp_path, "ack-link")
    page.click("#ack")
    assert "Acknowledged by" in page.inner_text("#acked")
    page.goto(ack_url.replace("token=", "token=x"))
    assert "not valid" in page.inner_text("#message")
    sent.clear()
    later = round_at(now + timedelta(minutes=40))
    escalated = {alert.alert_id for send in later for alert in send.alerts}
    assert escalated == {"a-stock"}, "only the alert nobody acknowledged reached the clinic"
    assert all(send.urls == (CLINIC_URL,) for send in later)
    status = json.loads(dispenser("care", "status", "--json", "--config", site.config_path).stdout)
    acked = {alert["alert_id"] for entry in status["devices"] for alert in entry["open_alerts"]}
    assert "a-missed" not in acked and "b-fault" not in acked
