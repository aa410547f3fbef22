"""A start after a long outage: peak memory and the time to caught-up (goal: under 60 MB peak).

    .venv/bin/python bench/start_after_outage.py [--days 730] [--minute-days 2]

Builds a real log (Store on a temp file, real Engine): a patient with 8 medications at
4 doses a day, two days of normal running (every dose taken), then the device left off
for `--days`. Then a fresh process opens that log and starts, as the daemon would after
the power comes back, and reports its peak resident set (VmHWM, interpreter and imports
included; Linux's ru_maxrss would carry over the parent's peak across the exec) and the
time until it has caught up. Then a second fresh start on the
grown log, as after the next reboot. The same for a dose-a-minute schedule off for
`--minute-days`. The systemd unit allows 120 MB (MemoryMax=120M). Figures, not a test.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

UTC = timezone.utc
BEGIN = datetime(2026, 11, 20, 11, 0, tzinfo=UTC)  # 06:00 in New York


def eight_medications() -> dict:
    times = ["08:00:00", "12:00:00", "18:00:00", "22:00:00"]
    return _document([{
        "id": f"med{n}", "name": f"Medication {n}", "compartment": n,
        "dosage": [{"timing": {"repeat": {"frequency": 4, "period": 1, "periodUnit": "d", "timeOfDay": times}},
                    "doseAndRate": [{"doseQuantity": {"value": 1}}]}]} for n in range(1, 9)])


def dose_a_minute() -> dict:
    return _document([{
        "id": "minute", "name": "Every minute", "compartment": 1, "window": {"before_min": 0, "after_min": 1},
        "dosage": [{"timing": {"repeat": {"frequency": 60, "period": 1, "periodUnit": "h",
                                          "boundsPeriod": {"start": "2026-11-20T00:00:00"}}},
                    "doseAndRate": [{"doseQuantity": {"value": 1}}]}]}])


def _document(medications: list[dict]) -> dict:
    return {"schema": "dispenser.schedule/1", "version": 1, "issued_at": "2026-11-20T00:00:00Z",
            "timezone": "America/New_York", "medications": medications}


def build(path: Path, document: dict, running: timedelta) -> datetime:
    """The log of a device set up at BEGIN and used normally for `running`; returns its last time."""
    from dispenser.engine import Engine
    from dispenser.store import Store

    engine = Engine(Store.open(path, "disp-bench"), 8, "America/New_York")
    now = BEGIN
    engine.start(now)
    engine.apply_schedule(now, document, "local")
    for medication in document["medications"]:
        engine.refill(now, medication["id"], 10_000)
    end = BEGIN + running
    while now < end:
        wakeup = engine.next_wakeup(now)
        now = min(wakeup, end) if wakeup else end
        if engine.press(now).feedback == "released":  # released now, confirmed a minute later
            now += timedelta(minutes=1)
            engine.press(now)
    engine.stop(now)
    engine.store.db.conn.close()
    return now


def memory_mb(field: str) -> float:
    """VmHWM (the peak) or VmRSS of this process, in MB; ru_maxrss where /proc is missing."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def start(path: str, now_text: str) -> None:
    """In a fresh process: open the log and start at `now`; print the figures as JSON."""
    began = time.perf_counter()
    from dispenser.engine import Engine
    from dispenser.store import Store

    imported_mb = memory_mb("VmRSS")
    store = Store.open(path, "disp-bench")
    before = store.event_count()
    transactions = []
    engine = Engine(store, 8, "America/New_York")
    engine.listeners.append(lambda events: transactions.append(len(events)))
    engine.start(datetime.fromisoformat(now_text))
    print(json.dumps({
        "seconds": round(time.perf_counter() - began, 2),
        "peak_mb": round(memory_mb("VmHWM"), 1),
        "imported_mb": round(imported_mb, 1),
        "events": store.event_count() - before,
        "transactions": len(transactions),
        "largest_transaction": max(transactions, default=0),
        "log_events": store.event_count(),
    }))


def run(name: str, document: dict, off: timedelta, running: timedelta) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "dispenser.db"
        last = build(path, document, running)
        back = last + off
        for label, at in (("start after the outage", back), ("the next start", back + timedelta(minutes=5))):
            result = subprocess.run([sys.executable, __file__, "--start", str(path), at.isoformat()],
                                    capture_output=True, text=True, check=True)
            figures = json.loads(result.stdout)
            print(f"{name}, {label}: peak RSS {figures['peak_mb']} MB (after imports "
                  f"{figures['imported_mb']} MB), {figures['seconds']} s to caught up, "
                  f"{figures['events']} events in {figures['transactions']} transactions "
                  f"(largest {figures['largest_transaction']}), log {figures['log_events']} events")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=730)
    parser.add_argument("--minute-days", type=float, default=2)
    parser.add_argument("--start", nargs=2, metavar=("DB", "NOW"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.start:
        start(*args.start)
        return
    run(f"8 medications x 4 a day, {args.days:g} days off", eight_medications(), timedelta(days=args.days),
        timedelta(days=2))
    run(f"a dose a minute, {args.minute_days:g} days off", dose_a_minute(), timedelta(days=args.minute_days),
        timedelta(hours=2))
    print("goal: peak under 60 MB")


if __name__ == "__main__":
    main()
