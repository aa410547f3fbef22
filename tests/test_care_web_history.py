"""The web view's pages read only the days they show: a device with five years of events
before the page's 90 days gets the same numbers as a reading of its whole log would give
(adherence 7/30/90, the calendar, the check-ins, stock from a refill months old, missed
today), while reading about the window's rows, by the index on (device, at); on SQLite
and PostgreSQL."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from care_support import database_url, postgres_cluster  # noqa: F401 - fixtures
from dispenser.care.config import parse_care_config
from dispenser.care.database import Connection, Database
from dispenser.care.web import history, pages, queries
from dispenser.timeutil import format_at, format_utc

NOW = datetime(2026, 11, 30, 20, 0, tzinfo=timezone.utc)
YEARS = 5
DEVICE = "disp-0001"
CONFIG = parse_care_config({"patient": [{"device": DEVICE, "name": "Sam", "timezone": "America/New_York"}]})
PATIENT = CONFIG.patients[0]


def long_log() -> list[dict]:
    """Five years: sertraline daily (refilled monthly), lithium every other day from one
    refill 130 days ago, a medication last used three years ago, a check-in a day; in the
    last 90 days every outcome."""
    events: list[dict] = []

    def add(kind: str, at: datetime, **data: object) -> None:
        seq = len(events) + 1
        events.append({"event_id": f"e{seq}", "device_id": DEVICE, "seq": seq, "type": kind,
                       "at": format_at(at), "data": data})

    def dose(kind: str, medication: str, scheduled: datetime, after: timedelta) -> None:
        add(kind, scheduled + after, medication_id=medication, scheduled_at=format_utc(scheduled), quantity=1,
            window_end=format_utc(scheduled + timedelta(hours=1)))

    start = NOW - timedelta(days=365 * YEARS)
    for day in range(365 * YEARS):
        morning = (start + timedelta(days=day)).replace(hour=13, minute=0, second=0, microsecond=0)
        if morning >= NOW - timedelta(hours=1):
            break
        back = (NOW - morning).days
        if day % 30 == 0:
            add("stock.refilled", morning - timedelta(hours=1), medication_id="sertraline", count=40, compartment=1)
        if back == 130:
            add("stock.refilled", morning - timedelta(minutes=30), medication_id="lithium", count=200, compartment=2)
        if back > 3 * 365 and day % 7 == 0:
            dose("dose.released", "retired", morning, timedelta(minutes=1))
        outcome = back % 7 if back <= 95 else 0
        if outcome == 1:
            dose("dose.missed", "sertraline", morning, timedelta(hours=1))
        elif outcome == 2:
            dose("dose.released", "sertraline", morning, timedelta(minutes=45))
            dose("dose.taken", "sertraline", morning, timedelta(minutes=46))
        elif outcome == 3:
            dose("dose.released", "sertraline", morning, timedelta(minutes=1))
            dose("dose.unconfirmed", "sertraline", morning, timedelta(hours=1))
        elif outcome == 4:
            dose("dose.held", "sertraline", morning, timedelta(0))
        else:
            dose("dose.released", "sertraline", morning, timedelta(minutes=1))
            dose("dose.taken", "sertraline", morning, timedelta(minutes=2))
        if back <= 130 and back % 2 == 0:
            dose("dose.released", "lithium", morning + timedelta(hours=2), timedelta(minutes=1))
            dose("dose.taken", "lithium", morning + timedelta(hours=2), timedelta(minutes=3))
        add("checkin.recorded", morning + timedelta(minutes=10), mood=1 + day % 5,
            side_effects=("none", "mild", "strong")[day % 3], medications=["sertraline"])
    return events


@pytest.fixture(scope="module")
def log() -> list[dict]:
    return long_log()


def store(conn: Connection, events: list[dict]) -> None:
    rows = [(DEVICE, e["event_id"], e["seq"], e["type"], e["at"], f"h{e['seq']}", f"h{e['seq'] - 1}",
             json.dumps(e), e["at"]) for e in events]
    sql = ("INSERT INTO events (device, event_id, seq, type, at, hash, prev_hash, body, received)"
           " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
    with conn.transaction():
        if conn.dialect == "sqlite":
            conn.raw.executemany(sql, rows)
        else:
            with conn.raw.cursor() as cursor:
                cursor.executemany(sql.replace("?", "%s"), rows)
    if conn.dialect == "postgresql":
        conn.execute("ANALYZE")   # as autovacuum would; SQLite is left without statistics, as deployed


class Counting:
    """Counts the rows a page's queries return (the real connection does the work)."""

    def __init__(self, conn: Connection):
        self.conn, self.rows = conn, 0
        real = conn.execute

        def execute(sql: str, params=()) -> list:
            found = real(sql, params)
            self.rows += len(found)
            return found
        conn.execute = execute  # type: ignore[method-assign]


def test_a_long_history_gives_the_numbers_of_the_whole_log_reading_only_the_window(database_url, log):
    database = Database(database_url)
    with database.connect() as conn:
        store(conn, log)
        tz = PATIENT.tz
        window = [e for e in log if e["at"] >= format_at(NOW - timedelta(days=92))]
        assert len(log) > 10 * len(window), "most of the log lies outside the page's days"
        counting = Counting(conn)
        context = pages.patient_page(conn, CONFIG, PATIENT, NOW)
        assert counting.rows < len(window) + 200, (counting.rows, len(window))
        every_mark = history.dose_marks(log, tz)
        assert context["periods"] == history.adherence_periods(log, NOW, tz)
        assert context["periods"][90]["sertraline"].missed > 0 and context["periods"][7]["lithium"].on_time > 0
        today = NOW.astimezone(tz).date()
        assert context["weeks"] == history.calendar(every_mark, today, tz)
        assert context["checkins"] == history.checkins(log, NOW - timedelta(days=pages.TREND_DAYS), NOW)
        whole = {row.medication_id: row for row in history.stock(log, every_mark, NOW)}
        shown = {row.medication_id: row for row in context["stock"]}
        assert set(shown) == {"sertraline", "lithium"}, "a medication unused for three years is not shown"
        assert shown == {name: whole[name] for name in shown}
        assert shown["lithium"].count == 200 - sum(1 for e in log if e["type"] == "dose.released"
                                                   and e["data"]["medication_id"] == "lithium")
        counting.rows = 0
        row = pages.overview(conn, CONFIG, NOW)[0]
        assert row.missed_today == history.missed_on(every_mark, today, tz)
        assert counting.rows < 50


def test_the_window_is_read_by_the_index_on_device_and_time(database_url, log):
    with Database(database_url).connect() as conn:
        store(conn, log)
        sql = "SELECT seq, received, body FROM events WHERE device = ? AND at >= ? ORDER BY at"   # events_since
        since = format_at(NOW - timedelta(days=92))
        if conn.dialect == "sqlite":
            plan = " ".join(str(row[-1]) for row in conn.execute("EXPLAIN QUERY PLAN " + sql, (DEVICE, since)))
        else:
            conn.execute("SET enable_seqscan = off")
            plan = " ".join(str(row[0]) for row in conn.execute("EXPLAIN " + sql, (DEVICE, since)))
        assert "events_by_at" in plan, plan
        open_sql = "SELECT alert_id FROM alerts WHERE device = ? AND acked_at IS NULL AND resolved_at IS NULL"
        if conn.dialect == "sqlite":
            plan = " ".join(str(row[-1]) for row in conn.execute("EXPLAIN QUERY PLAN " + open_sql, (DEVICE,)))
        else:
            plan = " ".join(str(row[0]) for row in conn.execute("EXPLAIN " + open_sql, (DEVICE,)))
        assert "alerts_open" in plan, plan
        assert queries.events_since(conn, DEVICE, NOW - timedelta(days=92)) == \
            [e for e in log if e["at"] >= since]
