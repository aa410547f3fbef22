"""How fast the log appends on a real file (WAL, synchronous=FULL): one fsync per append.

    .venv/bin/python bench/log_append.py [--dir /var/lib/dispenser] [--appends 500]

Run it on the device's own storage (an SD card is far slower than a laptop SSD):
each append is one transaction, so appends/s is bounded by commits/s, while a batch
of events costs about what one event does.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dispenser.events import Draft  # noqa: E402
from dispenser.store import Store  # noqa: E402

START = datetime(2026, 11, 21, 13, 0, tzinfo=timezone.utc)
DATA = {"medication_id": "sertraline", "scheduled_at": "2026-11-21T13:00:00Z", "quantity": 1}


def run(store: Store, appends: int, batch: int) -> float:
    """Appends per second for `appends` transactions of `batch` events each."""
    began = time.perf_counter()
    for i in range(appends):
        store.append([Draft("dose.taken", DATA) for _ in range(batch)], START + timedelta(seconds=i))
    return appends / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", help="where to put the scratch database (default: a temp dir)")
    parser.add_argument("--appends", type=int, default=500, help="transactions per measurement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        with Store.open(Path(scratch) / "bench.db", "bench-0001") as store:
            run(store, 20, 1)  # warm up: page cache, WAL file
            for batch in (1, 10):
                rate = run(store, args.appends, batch)
                print(f"{batch:>2}-event appends: {rate:8.0f} appends/s  {rate * batch:8.0f} events/s")
            ok, _, reason = store.verify()
            print(f"{store.event_count()} events written; verify: {reason}" + ("" if ok else " (FAILED)"))


if __name__ == "__main__":
    main()
