"""The daemon on mock pins: press-to-servo latency, idle CPU, resident memory.

    .venv/bin/python bench/daemon.py [--presses 300] [--idle-seconds 60]

Latency: an as-needed request goes on the daemon's queue, the loop takes it, the rules
decide, the release intent is committed to a real SQLite file (WAL, synchronous=FULL),
and the servo's first move is timed (goals: p99 under 20 ms). Idle: the loop running
with nothing due, CPU time over wall time (goal under 0.5 % of a core), and wake-ups:
how often any thread of the process was scheduled in, from the kernel's count per
thread (/proc/self/task/*/schedstat, its third field), per second (goal at most 1; a
sleeping Pi's cores stay idle). The simulated device has the lid switch and the drop
sensor too. Memory: the resident set of this process with everything loaded (goal
under 40 MB).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from dispenser.daemon import Daemon, SystemClock
from dispenser.engine import Engine
from dispenser.hardware import build_sim_hardware
from dispenser.store import Store

UTC = timezone.utc


class SteppedClock(SystemClock):
    """Real time plus an offset the bench moves, so that each request is a minute after the last."""

    def __init__(self):
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset


def as_needed_schedule() -> dict:
    return {"schema": "dispenser.schedule/1", "version": 1, "issued_at": "2026-01-01T00:00:00Z",
            "timezone": "UTC", "medications": [{
                "id": "prn", "name": "Bench", "compartment": 1,
                "dosage": [{"asNeededBoolean": True,
                            "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "h"}},
                            "maxDosePerPeriod": {"numerator": {"value": 24}, "denominator": {"value": 1, "unit": "d"}},
                            "doseAndRate": [{"doseQuantity": {"value": 1}}]}]}]}


def wakeups() -> dict[str, int]:
    """Times each thread of this process has been scheduled in (Linux; {} elsewhere)."""
    counts = {}
    for task in Path("/proc/self/task").glob("*"):
        try:
            counts[task.name] = int((task / "schedstat").read_text().split()[2])
        except (OSError, IndexError, ValueError):
            continue  # a thread that ended meanwhile
    return counts


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--presses", type=int, default=300)
    parser.add_argument("--idle-seconds", type=float, default=60)
    args = parser.parse_args()

    folder = tempfile.TemporaryDirectory()
    clock = SteppedClock()
    moved, ready, stopped = threading.Event(), threading.Event(), threading.Event()
    built: dict = {}

    def owner() -> None:
        """The loop's thread owns the log, as in the daemon: SQLite objects stay on it."""
        store = Store.open(Path(folder.name) / "bench.db", "disp-bench")
        engine = Engine(store, 8, "UTC")
        # Loaded as it applies: a refill before the schedule names no medication in force (section 6).
        engine.apply_schedule(clock.now(), as_needed_schedule(), "local", stock={"prn": 100000})
        hardware = build_sim_hardware(lambda item: built["daemon"].put(item), compartments=8, sleep=lambda s: None,
                                      on_move=lambda c, state: state == "open" and moved.set())
        built["daemon"] = Daemon(engine, hardware, timezone_name="UTC", sleep=lambda s: None)
        ready.set()
        built["daemon"].run(clock, stopped.is_set)
        hardware.close()
        store.close()

    loop = threading.Thread(target=owner, daemon=True)
    loop.start()
    ready.wait(10)
    daemon = built["daemon"]
    time.sleep(0.2)

    latencies = []
    for _ in range(args.presses):
        clock.offset += timedelta(hours=1, seconds=1)  # past the minimum interval
        moved.clear()
        began = time.perf_counter()
        daemon.put("hold")
        if not moved.wait(5):
            raise SystemExit("the servo never moved")
        latencies.append((time.perf_counter() - began) * 1000)
    latencies.sort()
    p50 = statistics.median(latencies)
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    print(f"press-to-servo latency over {len(latencies)} requests: p50 {p50:.2f} ms, p99 {p99:.2f} ms, "
          f"max {latencies[-1]:.2f} ms (goal p99 < 20 ms)")

    clock.offset += timedelta(hours=2)
    time.sleep(0.5)
    me = str(threading.get_native_id())  # this thread only sleeps: its one wake-up at the end is not the daemon's
    woke0 = wakeups()
    cpu0, wall0 = time.process_time(), time.monotonic()
    time.sleep(args.idle_seconds)
    cpu = time.process_time() - cpu0
    wall = time.monotonic() - wall0
    woke = wakeups()
    per_thread = {tid: n - woke0.get(tid, 0) for tid, n in woke.items() if tid != me}
    total = sum(per_thread.values())
    print(f"idle CPU over {wall:.0f} s with nothing due: {cpu / wall * 100:.3f} % of a core (goal < 0.5 %)")
    if woke:
        busiest = max(per_thread.values(), default=0)
        print(f"idle wake-ups: {total / wall:.2f} a second over {len(per_thread)} thread(s), the busiest "
              f"{busiest / wall:.2f} a second (goal at most 1)")
    print(f"resident memory: {rss_mb():.1f} MB (goal < 40 MB)")
    stopped.set()
    daemon.put("stop")
    loop.join(5)
    folder.cleanup()


if __name__ == "__main__":
    main()
