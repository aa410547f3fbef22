"""The web view's parts without a browser: dose outcomes and the calendar, stock, the SVG
chart, staff accounts on SQLite and PostgreSQL, and `care user add` / `care serve`'s bad
input (one line, exit 2, nothing changed)."""
from __future__ import annotations

import socket
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from care_support import care_toml, database_url, postgres_cluster, quick_password_hashes_in_test  # noqa: F401 - fixtures
from inprocess import dispenser as run_in_process
from dispenser.care.database import Database
from dispenser.care.web import history
from dispenser.care.web.charts import mood_chart
from dispenser.care.web.history import Checkin
from ports import free_port

ROOT = Path(__file__).resolve().parents[1]
NY = ZoneInfo("America/New_York")
T0 = datetime(2026, 11, 20, 14, 0, tzinfo=timezone.utc)


def event(kind: str, at: datetime, **data: object) -> dict:
    return {"type": kind, "at": at.strftime("%Y-%m-%dT%H:%M:%S.000Z"), "data": data}


def dose_events(kind: str, scheduled: datetime, after: timedelta, medication: str = "sertraline") -> dict:
    return event(kind, scheduled + after, medication_id=medication, quantity=1,
                 scheduled_at=scheduled.strftime("%Y-%m-%dT%H:%M:%SZ"),
                 window_end=(scheduled + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"))


def test_each_dose_gets_the_outcome_report_py_gives_it_and_a_held_one_is_held():
    minutes = lambda n: timedelta(minutes=n)  # noqa: E731
    days = [T0 + timedelta(days=n) for n in range(6)]
    events = [dose_events("dose.released", days[0], minutes(1)), dose_events("dose.taken", days[0], minutes(2)),
              dose_events("dose.released", days[1], minutes(40)), dose_events("dose.taken", days[1], minutes(41)),
              dose_events("dose.released", days[2], minutes(1)), dose_events("dose.unconfirmed", days[2], minutes(60)),
              dose_events("dose.missed", days[3], minutes(60)),
              dose_events("dose.held", days[4], minutes(0)),
              dose_events("dose.released", days[5], minutes(1)), dose_events("dose.taken", days[5], minutes(300))]
    marks = history.dose_marks(events, NY)
    assert [mark.outcome for mark in marks] == ["on_time", "late", "unconfirmed", "missed", "held", "confirmed_late"]
    assert history.missed_on(marks, days[3].astimezone(NY).date(), NY) == 1
    assert history.missed_on(marks, days[2].astimezone(NY).date(), NY) == 0


def test_the_calendar_is_whole_weeks_around_the_last_28_days_with_each_dose_on_its_local_day():
    late_evening = datetime(2026, 11, 25, 3, 30, tzinfo=timezone.utc)   # 22:30 on the 24th in New York
    marks = [history.DoseMark("sertraline", late_evening, "missed")]
    weeks = history.calendar(marks, date(2026, 11, 30), NY)
    assert all(len(week) == 7 and week[0].day.weekday() == 0 for week in weeks)
    days = [day for week in weeks for day in week]
    assert sum(day.in_range for day in days) == 28
    marked = [day.day for day in days if day.marks]
    assert marked == [date(2026, 11, 24)]


def test_stock_follows_refills_releases_and_the_devices_own_count():
    now = T0 + timedelta(days=7)
    events = [event("stock.refilled", T0, medication_id="sertraline", count=10)]
    events += [dose_events("dose.released", T0 + timedelta(days=n), timedelta(minutes=1)) for n in range(1, 7)]
    events += [event("stock.refilled", T0, medication_id="lithium", count=5),
               event("stock.low", T0 + timedelta(hours=1), medication_id="lithium", remaining=2)]
    rows = {row.medication_id: row for row in history.stock(events, [], now)}
    assert rows["sertraline"].count == 4
    assert rows["sertraline"].per_day == pytest.approx(6 / 7)
    assert rows["sertraline"].days_left == pytest.approx(4 / (6 / 7))
    assert rows["lithium"].count == 2 and rows["lithium"].days_left is None


def test_the_mood_chart_is_svg_with_a_point_per_mood_and_a_mark_per_side_effect():
    checkins = [Checkin(T0 + timedelta(days=n), mood, side) for n, (mood, side) in
                enumerate([(4, "none"), (3, "mild"), (1, "strong"), (None, "<b>odd</b>")])]
    svg = mood_chart(checkins, T0 - timedelta(days=1), T0 + timedelta(days=5), NY)
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    assert len(root.findall(f"{ns}circle")) == 3
    assert [r.get("class") for r in root.findall(f"{ns}rect")] == ["se-mild", "se-strong", "se-mild"]
    ys = [float(c.get("cy")) for c in root.findall(f"{ns}circle")]
    assert ys[0] < ys[1] < ys[2], "a lower mood is drawn lower"
    assert "<b>" not in svg
    assert "no check-ins" in mood_chart([], T0, T0 + timedelta(days=1), NY)


def test_a_staff_password_is_stored_as_argon2id_at_the_production_cost_and_verifies(tmp_path):
    """The one test at the production cost (argon2-cffi's defaults, ~0.25 s of CPU a hash):
    the others hash at the smallest cost (care_support.quick_hashing)."""
    from argon2 import PasswordHasher, Type, extract_parameters
    from dispenser.care.web import accounts
    production = PasswordHasher()
    with Database(f"sqlite:///{tmp_path / 'care.db'}").connect() as conn:
        assert accounts.add_user(conn, "ana", "correct horse battery", T0) is True
        stored = conn.execute("SELECT password_hash FROM staff WHERE name = 'ana'")[0][0]
        parameters = extract_parameters(stored)
        assert parameters.type is Type.ID
        assert (parameters.time_cost, parameters.memory_cost, parameters.parallelism) == \
            (production.time_cost, production.memory_cost, production.parallelism)
        assert not production.check_needs_rehash(stored)
        # An unknown name is checked against a hash of the same cost: as long as a wrong password.
        assert not production.check_needs_rehash(accounts._dummy_hash())
        assert accounts.check_password(conn, "ana", "correct horse battery")


def test_staff_passwords_are_hashed_and_checked(database_url, quick_password_hashes_in_test):
    from dispenser.care.web import accounts
    database = Database(database_url)
    with database.connect() as conn:
        assert accounts.add_user(conn, "ana", "correct horse battery", T0) is True
        stored = conn.execute("SELECT password_hash FROM staff WHERE name = 'ana'")[0][0]
        assert stored.startswith("$argon2id$") and "correct horse" not in stored
        assert accounts.check_password(conn, "ana", "correct horse battery")
        assert not accounts.check_password(conn, "ana", "correct horse batterY")
        assert not accounts.check_password(conn, "bob", "correct horse battery")
        assert accounts.add_user(conn, "ana", "another long password", T0) is False
        assert accounts.check_password(conn, "ana", "another long password")
        with pytest.raises(accounts.AccountError):
            accounts.add_user(conn, "bob", "short", T0)
        assert not conn.execute("SELECT 1 FROM staff WHERE name = 'bob'")
        key = accounts.session_key(conn)
    with database.connect() as conn:
        assert accounts.session_key(conn) == key and len(key) >= 40


def dispenser(*args: object, stdin: str = "") -> subprocess.CompletedProcess:
    return run_in_process(*args, cwd=ROOT, input=stdin)


def one_line_error(result: subprocess.CompletedProcess, words: str) -> None:
    assert result.returncode == 2, result.stdout
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, result.stderr
    assert words in result.stderr


def test_care_user_add_reads_the_password_from_stdin_and_refuses_a_short_one(tmp_path, quick_password_hashes_in_test):
    from dispenser.care.web import accounts
    url = f"sqlite:///{tmp_path / 'care.db'}"
    path = care_toml(tmp_path / "care.toml", database_url=url)
    one_line_error(dispenser("care", "user", "add", "ana", "--config", path, stdin="short\n"), "at least 10")
    one_line_error(dispenser("care", "user", "add", " ana", "--config", path, stdin="long enough pass\n"),
                   "staff name")
    with Database(url).connect() as conn:
        assert conn.execute("SELECT count(*) FROM staff")[0][0] == 0
    added = dispenser("care", "user", "add", "ana", "--config", path, stdin="long enough pass\n")
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("ana: added")
    with Database(url).connect() as conn:
        assert accounts.check_password(conn, "ana", "long enough pass")


def test_care_serve_says_in_one_line_when_the_web_port_is_taken(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        path = care_toml(tmp_path / "care.toml", database_url=f"sqlite:///{tmp_path / 'care.db'}", port=free_port(),
                         extra="")
        text = path.read_text().replace('listen = "127.0.0.1:', f'listen = "127.0.0.1:{port}" #')
        path.write_text(text)
        one_line_error(dispenser("care", "serve", "--config", path), f"web.listen: cannot listen on 127.0.0.1:{port}")


def test_the_device_side_never_imports_the_web_view_or_its_libraries():
    code = ("import sys, dispenser.cli, dispenser.runner, dispenser.daemon; dispenser.cli.build_parser(); "
            "heavy = [m for m in ('starlette', 'uvicorn', 'jinja2', 'argon2', 'dispenser.care.web') if m in sys.modules]; "
            "print(heavy)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
