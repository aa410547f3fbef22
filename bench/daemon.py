"""The daemon on mock pins: press-to-servo latency, idle CPU, resident memory.

    .venv/bin/python bench/daemon.py [--presses 300] [--idle-seconds 60] [--mqtt]

The package's bytecode is compiled first, as `pip install` does on a device.

Latency: an as-needed request goes on the daemon's queue, the loop takes it, the rules
decide, the release intent is committed to a real SQLite file (WAL, synchronous=FULL),
and the servo's first move is timed (goals: p99 under 20 ms). Idle: the loop running
with nothing due, CPU time over wall time (goal under 0.5 % of a core), and wake-ups:
how often any thread of the process was scheduled in, from the kernel's count per
thread (/proc/self/task/*/schedstat, its third field), per second (goal at most 1; a
sleeping Pi's cores stay idle). The simulated device has the lid switch and the drop
sensor too. Memory: the resident set of this process with everything loaded (goal
under 40 MB).

With `--mqtt` the daemon has its MQTT sync, connected to a private Mosquitto
(tests/broker.py) where the clinic's service reads the events (its client's thread is
the bench's, not counted): nothing is due when the idle time begins. With
`--nobody-subscribed` no one reads them: every event is answered "no matching
subscribers" (0x10) and waits to be sent again, 30 s later and then doubling, so the
idle minute holds retry rounds. Wake-ups are shown per thread (the daemon's loop, paho's
network thread, the sync worker).
"""
from __future__ import annotations

import argparse
import statistics
import sys
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


def thread_names() -> dict[str, str]:
    """Native thread id -> a name that says whose thread it is."""
    names = {str(t.native_id): t.name for t in threading.enumerate() if t.native_id is not None}
    for tid, name in names.items():
        if name.startswith("paho-mqtt-client-bench-clinic"):
            names[tid] = CLINIC
        elif name.startswith("paho-mqtt-client"):
            names[tid] = "paho network"
        elif name.startswith("sync-"):
            names[tid] = "sync worker"
        elif name == "MainThread":
            names[tid] = "bench (main)"
    return names


CLINIC = "the clinic's subscriber (not counted)"


def start_sync(folder: Path, put, subscribed: bool):
    """The daemon's MQTT sync (runner.build_sync) on a private broker; the clinic reading its
    events when `subscribed`. Returns (broker, sync, clinic or None)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from broker import Broker, Clinic

    from dispenser.config import Config
    from dispenser.mqtt_settings import Topics
    from dispenser.runner import build_sync
    broker = Broker(Path(folder) / "broker").start()
    config = Config(device_id="disp-bench", mqtt={"host": broker.host, "port": broker.port, "tls": False})
    sync = build_sync(config, put, str(Path(folder) / "bench.db"))
    topics = Topics(sync.settings.topic_prefix, "disp-bench")
    clinic = Clinic(broker, client_id="bench-clinic").connect(topics.events, topics.alerts) if subscribed else None
    return broker, sync, clinic


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--presses", type=int, default=300)
    parser.add_argument("--idle-seconds", type=float, default=60)
    parser.add_argument("--mqtt", action="store_true", help="with the MQTT sync on a private Mosquitto")
    parser.add_argument("--nobody-subscribed", action="store_true",
                        help="with --mqtt: nobody reads the events (0x10), they wait to be sent again")
    args = parser.parse_args()
    import compileall
    compileall.compile_dir(str(Path(__file__).resolve().parent.parent / "dispenser"), quiet=1)

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
        sync = None
        if args.mqtt:
            built["broker"], sync, built["clinic"] = start_sync(
                Path(folder.name), lambda item: built["daemon"].put(item), not args.nobody_subscribed)
            sync.start()
        built["daemon"] = Daemon(engine, hardware, timezone_name="UTC", sleep=lambda s: None, sync=sync)
        ready.set()
        built["daemon"].run(clock, stopped.is_set)
        if sync is not None:
            sync.stop()
        hardware.close()
        store.close()

    loop = threading.Thread(target=owner, daemon=True)
    loop.start()
    ready.wait(10)
    daemon = built["daemon"]
    time.sleep(0.2)
    if daemon.sync is not None and not daemon.sync.wait_connected(30):
        raise SystemExit("the sync did not connect to the bench's broker")

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
    if daemon.sync is not None and not args.nobody_subscribed and not daemon.sync.wait_idle(60):
        raise SystemExit("the outbox was not delivered to the bench's clinic")
    me = str(threading.get_native_id())  # this thread only sleeps: its one wake-up at the end is not the daemon's
    woke0 = wakeups()
    cpu0, wall0 = time.process_time(), time.monotonic()
    time.sleep(args.idle_seconds)
    cpu = time.process_time() - cpu0
    wall = time.monotonic() - wall0
    woke = wakeups()
    names = thread_names()
    per_thread = {tid: n - woke0.get(tid, 0) for tid, n in woke.items() if tid != me and names.get(tid) != CLINIC}
    total = sum(per_thread.values())
    print(f"idle CPU over {wall:.0f} s with nothing due: {cpu / wall * 100:.3f} % of a core (goal < 0.5 %)")
    if woke:
        busiest = max(per_thread.values(), default=0)
        print(f"idle wake-ups: {total / wall:.2f} a second over {len(per_thread)} thread(s), the busiest "
              f"{busiest / wall:.2f} a second (goal at most 1)")
        for tid, count in sorted(per_thread.items(), key=lambda item: -item[1]):
            print(f"  {names.get(tid, 'thread ' + tid)}: {count / wall:.2f} a second")
    print(f"resident memory: {rss_mb():.1f} MB (goal < 40 MB)")
    stopped.set()
    daemon.put("stop")
    loop.join(10)
    if built.get("clinic") is not None:
        built["clinic"].close()
    if "broker" in built:
        built["broker"].stop()
    folder.cleanup()


if __name__ == "__main__":
    main()
