"""The care web view's page time as a device's log ages: 1 and 10 years of events.

    .venv/bin/python bench/care_web.py [--years 1 10] [--runs 5] [--dir DIR]

Writes a care database (SQLite, as one household has it) holding one patient's log: four
daily medications, most doses released and confirmed, some late, unconfirmed, missed or
held, a check-in a day, refills every four weeks (one medication refilled with 200 every
half year, so its stock is counted from a refill months old). Then, on a fresh
connection, times the patient's page (`pages.patient_page`: alerts, adherence 7/30/90, the
trend, the calendar, stock) and the overview (`pages.overview`), median of `--runs`,
and counts the rows their queries returned. For reference, the whole log read and
computed the way the pages did before they read only their days.
Goal: page time flat with age (the 10-year figure within 1.5x the 1-year one).
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dispenser.care.config import parse_care_config  # noqa: E402
from dispenser.care.database import Connection, Database  # noqa: E402
from dispenser.care.web import history, pages, queries  # noqa: E402
from dispenser.timeutil import format_at, format_utc  # noqa: E402

NOW = datetime(2026, 11, 30, 20, 0, tzinfo=timezone.utc)
DEVICE = "disp-0001"
CONFIG = parse_care_config({"patient": [{"device": DEVICE, "name": "Sam", "timezone": "Europe/London"}]})
MEDICATIONS = (("a", 8), ("b", 9), ("c", 20), ("d", 21))


def build_log(years: int) -> list[dict]:
    events: list[dict] = []

    def add(kind: str, at: datetime, **data: object) -> None:
        seq = len(events) + 1
        events.append({"event_id": f"e{seq}", "device_id": DEVICE, "seq": seq, "type": kind,
                       "at": format_at(at), "data": data})

    start = (NOW - timedelta(days=365 * years)).replace(hour=0, minute=0, second=0, microsecond=0)
    for day in range(365 * years):
        midnight = start + timedelta(days=day)
        if day % 28 == 0:
            for name, _ in MEDICATIONS[1:]:
                add("stock.refilled", midnight + timedelta(hours=7), medication_id=name, count=30)
        if day % 182 == 0:
            add("stock.refilled", midnight + timedelta(hours=7, minutes=1), medication_id="a", count=200)
        for index, (name, hour) in enumerate(MEDICATIONS):
            scheduled = midnight + timedelta(hours=hour)
            if scheduled >= NOW:
                continue
            dose = {"medication_id": name, "scheduled_at": format_utc(scheduled), "quantity": 1,
                    "window_end": format_utc(scheduled + timedelta(hours=1))}
            roll = (day * 7 + index * 3) % 40
            if roll == 0:
                add("dose.missed", scheduled + timedelta(hours=1), **dose)
            elif roll == 1:
                add("dose.held", scheduled, reason="day_limit", **dose)
            else:
                late = timedelta(minutes=45 if roll == 2 else 2)
                add("dose.released", scheduled + late, **dose)
                if roll == 3:
                    add("dose.unconfirmed", scheduled + timedelta(hours=1), **dose)
                else:
                    add("dose.taken", scheduled + late + timedelta(minutes=1), **dose)
        if midnight + timedelta(hours=12) < NOW:
            add("checkin.recorded", midnight + timedelta(hours=12), mood=1 + day % 5,
                side_effects=("none", "mild", "none", "strong")[day % 4], medications=["a"])
    return events


def write(database: Database, events: list[dict]) -> None:
    with database.connect() as conn, conn.transaction():
        conn.raw.executemany(
            "INSERT INTO events (device, event_id, seq, type, at, hash, prev_hash, body, received)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(DEVICE, e["event_id"], e["seq"], e["type"], e["at"], f"h{e['seq']}", f"h{e['seq'] - 1}",
              json.dumps(e), e["at"]) for e in events])


def counted(conn: Connection) -> list[int]:
    """Counts the rows every query returns on this connection; [total]."""
    total = [0]
    real = conn.execute

    def execute(sql: str, params=()) -> list:
        rows = real(sql, params)
        total[0] += len(rows)
        return rows
    conn.execute = execute  # type: ignore[method-assign]
    return total


def timed(database: Database, work) -> tuple[float, int]:
    """Median seconds of `work(conn)` over fresh connections, and the rows it read."""
    seconds, rows = [], 0
    for _ in range(ARGS.runs):
        with database.connect() as conn:
            total = counted(conn)
            began = time.perf_counter()
            work(conn)
            seconds.append(time.perf_counter() - began)
            rows = total[0]
    return statistics.median(seconds), rows


def whole_log(conn: Connection) -> None:
    """The patient's page as it was computed before: every event the device has."""
    patient = CONFIG.patients[0]
    events = queries.device_events(conn, DEVICE)
    marks = history.dose_marks(events, patient.tz)
    history.adherence_periods(events, NOW, patient.tz)
    history.stock(events, marks, NOW)


def main() -> None:
    folder = Path(ARGS.dir or tempfile.mkdtemp(prefix="care-web-bench-"))
    patient = CONFIG.patients[0]
    print(f"{'years':>5} {'events':>8} {'patient page':>13} {'rows':>6} {'overview':>9} {'rows':>5} "
          f"{'whole log (before)':>19}")
    for years in ARGS.years:
        path = folder / f"care-{years}y.db"
        path.unlink(missing_ok=True)
        database = Database(f"sqlite:///{path}")
        events = build_log(years)
        write(database, events)
        count = len(events)
        del events            # the pages read the database; a big list alive would only slow the collector
        gc.collect()
        page, page_rows = timed(database, lambda conn: pages.patient_page(conn, CONFIG, patient, NOW))
        overview, overview_rows = timed(database, lambda conn: pages.overview(conn, CONFIG, NOW))
        before, _ = timed(database, whole_log)
        print(f"{years:>5} {count:>8} {page * 1000:>10.1f} ms {page_rows:>6} {overview * 1000:>6.1f} ms "
              f"{overview_rows:>5} {before * 1000:>16.1f} ms", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--years", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dir", help="where the databases are written (default: a new temporary folder)")
    ARGS = parser.parse_args()
    main()
