"""A thousand dispensers: the real Store and Sync of N simulated devices through a month,
one Mosquitto (restarted in the middle), the care service's workers ingesting into PostgreSQL.

    .venv/bin/python bench/fleet.py [--devices 1000] [--days 30] [--processes P] [--workers 4]

What runs, all started here on free ports in temp folders (as the tests do) and stopped
at the end:
- PostgreSQL: a throwaway cluster (tests/postgres.py; fsync off, as in the tests);
- Mosquitto: a private broker (tests/broker.py) with persistence, so that the persistent
  sessions (every device's, every care worker's) and what is queued for them survive
  the restart; stopped (SIGTERM) and started again on the same port when every device
  process has lived half the days;
- the care service (dispenser/care/serve.py, `CareService`, as `care serve --workers 4`
  runs it) in a process of its own: N workers on the shared subscription, each storing
  into PostgreSQL and checking every device's chain as events arrive;
- P device processes (bench/fleet_devices.py), each with up to 100 devices: its real
  SQLite log (on tmpfs: the devices' fsyncs are not what is measured), the real engine
  on a virtual clock (about 31 events a device a day, a month in minutes), and the real
  Sync with its own MQTT connection and worker thread, as on a Pi. paho's select()
  silently never wakes for a socket numbered 1024 or more, and a device holds about 8
  descriptors, so a process never holds more than 100 devices (`--processes` lower
  than that allows is refused).

Prints: events per second end to end (the first append to the last event stored), how
long the devices took to live the month, the lag from a device's append to the care
database's `received` (p50, p99, max), the broker restart, and lost and doubled counted
against every device's own log (goal 0 and 0; exit 1 otherwise). Also the redeliveries
the care service absorbed (stored once by event_id).
"""
from __future__ import annotations

import argparse
import math
import multiprocessing
import queue
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from broker import Broker  # noqa: E402
from fleet_devices import DEVICES_PER_PROCESS, LIMIT_FDS, run_devices  # noqa: E402
from fleet_tally import LoggedEvent, StoredEvent, Tally, compare, percentile  # noqa: E402
from postgres import Postgres  # noqa: E402

READY_S = 120.0         # the care service's workers subscribed
STALL_S = 180.0         # nothing new stored for this long, with events still missing: give up and count
NOT_MESSAGES = ("stored_us", "batches", "restarts", "not_acked_stale")   # the care service's tallies that count no message


class FleetError(Exception):
    """Bad flags or a part that would not start: one line on stderr, exit 2."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="N simulated dispensers against one broker and the care service")
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--days", type=int, default=30, help="simulated days (about 31 events a device a day)")
    parser.add_argument("--processes", type=int, default=None,
                        help=f"device processes (default: one per {DEVICES_PER_PROCESS} devices)")
    parser.add_argument("--workers", type=int, default=4, help="care service ingest workers")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: a new temp folder)")
    args = parser.parse_args(argv)
    if args.devices < 1 or args.days < 1 or args.workers < 1:
        raise FleetError("--devices, --days and --workers must be at least 1")
    if args.processes is None:
        args.processes = math.ceil(args.devices / DEVICES_PER_PROCESS)
    if args.processes < 1:
        raise FleetError("--processes must be at least 1")
    if math.ceil(args.devices / args.processes) > DEVICES_PER_PROCESS:
        raise FleetError(f"{math.ceil(args.devices / args.processes)} devices a process: at most "
                         f"{DEVICES_PER_PROCESS} (paho's select() breaks on descriptors past 1024); "
                         f"use --processes {math.ceil(args.devices / DEVICES_PER_PROCESS)} or more")
    return args


def run_care(care_toml: str, workers: int, ready: Any, stop: Any, result: Any) -> None:
    """The care service in a process of its own, as `care serve` runs it (a process per
    worker, the timer here); reports what its workers' messages became."""
    from dispenser.care.config import load_care_config
    from dispenser.care.serve import CareService

    service = CareService(load_care_config(care_toml), workers=workers, processes=True)
    service.start()
    if service.wait_ready(READY_S):
        ready.set()
    stop.wait()
    service.stop()
    outcomes = service.outcomes()
    outcomes["restarts"] = sum(getattr(worker, "restarts", 0) for worker in service.workers)
    result.put(dict(outcomes))


def resident_mb(broker: Broker) -> float:
    """The broker process's resident memory now (VmRSS), NaN when it cannot be read."""
    try:
        status = Path(f"/proc/{broker.proc.pid}/status").read_text()  # type: ignore[union-attr]
    except (OSError, AttributeError):
        return float("nan")
    return next((int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmRSS:")),
                float("nan"))


def stored_count(conn: Any) -> int:
    return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except FleetError as error:
        print(f"fleet: {error}", file=sys.stderr)
        return 2
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="fleet-"))
    workdir.mkdir(parents=True, exist_ok=True)
    shm = Path("/dev/shm")
    device_dir = Path(tempfile.mkdtemp(prefix="fleet-devices-", dir=shm if shm.is_dir() else workdir))
    cluster = broker = None
    try:
        cluster = Postgres().start()
        url = cluster.create_database("care")
        broker = Broker(workdir / "broker", persistence=True).start()
        return run(args, workdir, device_dir, url, broker)
    except FleetError as error:
        print(f"fleet: {error}", file=sys.stderr)
        return 2
    finally:
        if broker is not None:
            broker.stop()
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(device_dir, ignore_errors=True)
        if args.dir is None:
            shutil.rmtree(workdir, ignore_errors=True)


def run(args: argparse.Namespace, workdir: Path, device_dir: Path, url: str, broker: Broker) -> int:
    import psycopg

    spawn = multiprocessing.get_context("spawn")
    care_toml = workdir / "care.toml"
    care_toml.write_text(f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\ntls = false\n'
                         f'[database]\nurl = "{url}"\n')
    ready, stop, care_result = spawn.Event(), spawn.Event(), spawn.Queue()
    care = spawn.Process(target=run_care, args=(str(care_toml), args.workers, ready, stop, care_result),
                         name="care")   # not a daemon: it starts the worker processes
    care.start()
    try:
        if not ready.wait(READY_S):
            raise FleetError(f"the care service's workers did not subscribe within {READY_S:.0f} s:\n{broker.log()[-2000:]}")

        slices = [list(range(p, args.devices, args.processes)) for p in range(args.processes)]
        progress = [spawn.Value("i", 0) for _ in slices]
        report = spawn.Queue()
        began = time.monotonic()
        began_wall = time.time()
        devices = [spawn.Process(target=run_devices, name=f"devices-{n}", daemon=True,  # never outlive the bench
                                 args=(indexes, str(device_dir), broker.host, broker.port, args.days, args.seed,
                                       progress[n], report))
                   for n, indexes in enumerate(slices) if indexes]
        for process in devices:
            process.start()

        logs: list[LoggedEvent] = []
        fds: list[int] = []
        generated: list[float] = []
        done = 0
        restart: str | None = None
        middle = max(1, args.days // 2)
        while done < len(devices):
            if restart is None and min(value.value for value in progress) >= middle:
                down = time.monotonic()
                broker.stop()
                broker.start()
                restart = (f"broker restarted when every process had lived day {middle} of {args.days}, "
                           f"{down - began:.0f} s in; down {time.monotonic() - down:.2f} s")
            try:
                kind, value = report.get(timeout=0.5)
            except queue.Empty:
                if any(process.exitcode not in (None, 0) for process in devices):
                    raise FleetError("a device process failed; see its traceback above")
                continue
            if kind == "log":
                logs.extend(LoggedEvent(*row) for row in value)
            elif kind == "fds":
                fds.append(value)
            elif kind == "generated":
                generated.append(value)
            elif kind == "done":
                fds.append(value)
                done += 1
        for process in devices:
            process.join(60)
        lived = time.monotonic() - began
        broker_mb = resident_mb(broker)

        with psycopg.connect(url, autocommit=True) as conn:
            last_count, last_change = -1, time.monotonic()
            while True:
                count = stored_count(conn)
                if count >= len(logs):
                    break
                if count != last_count:
                    last_count, last_change = count, time.monotonic()
                elif time.monotonic() - last_change > STALL_S:
                    break
                time.sleep(0.2)
            last = conn.execute("SELECT max(received) FROM events").fetchone()[0]
            size = int(conn.execute("SELECT pg_total_relation_size('events')").fetchone()[0])
            rows = [StoredEvent(device, seq, event_id, hash_, _epoch(received))
                    for device, seq, event_id, hash_, received in
                    conn.execute("SELECT device, seq, event_id, hash, received FROM events")]
        stop.set()
        handled = care_result.get(timeout=180)
        tally = compare(logs, rows)
        report_figures(args, tally, handled, began_wall, _epoch(last) if last else time.time(), lived, generated,
                       fds, restart)
        print(f"broker resident memory with {args.devices + args.workers} persistent sessions: {broker_mb:.0f} MB; "
              f"PostgreSQL events table with its indexes: {size / 1e6:.0f} MB "
              f"({size / max(1, tally.stored):.0f} bytes an event)")
        if max(fds, default=0) >= LIMIT_FDS:
            print(f"fleet: a device process held {max(fds)} descriptors, past {LIMIT_FDS}: too near select()'s 1024",
                  file=sys.stderr)
            return 1
        return 0 if tally.lost == 0 and tally.doubled == 0 else 1
    finally:   # the care service and its worker processes never outlive the bench
        stop.set()
        care.join(120)
        if care.is_alive():
            care.terminate()
            care.join(10)


def _epoch(text: str) -> float:
    from dispenser.timeutil import parse_utc
    return parse_utc(text).timestamp()


def report_figures(args: argparse.Namespace, tally: Tally, handled: dict[str, int], began: float, last_stored: float,
                   lived: float, generated: list[float], fds: list[int], restart: str | None) -> None:
    span = max(last_stored - began, 1e-9)
    per_process = math.ceil(args.devices / args.processes)
    print(f"fleet: {args.devices} devices x {args.days} days in {args.processes} processes "
          f"(at most {per_process} devices, {max(fds, default=0)} descriptors a process; select() limit 1024), "
          f"care service {args.workers} workers on PostgreSQL")
    print(f"events: {tally.logged} logged by the devices ({tally.logged / args.devices / args.days:.1f} a device a day), "
          f"{tally.stored} stored by the care service")
    print(f"devices lived their {args.days} days in {max(generated, default=0):.0f} s; all sent and acknowledged after "
          f"{lived:.0f} s; the last event stored after {span:.0f} s")
    print(f"end to end: {tally.logged / span:.0f} events/s (first append to last event stored)")
    print(f"lag append -> stored: p50 {percentile(tally.lags, 0.5):.2f} s, p99 {percentile(tally.lags, 0.99):.2f} s, "
          f"max {max(tally.lags, default=float('nan')):.2f} s")
    print(restart or "broker not restarted (the run ended first)")
    batches = handled.get("batches", 0)
    print(f"care service: {handled.get('stored', 0)} events stored, {handled.get('duplicate', 0)} redeliveries "
          f"absorbed (stored once by event_id), {handled.get('status', 0)} status messages, "
          f"{handled.get('fork', 0)} forks, {handled.get('ignored', 0)} ignored, "
          f"{handled.get('restarts', 0)} worker processes started again; "
          + (f"{batches} transactions of {sum(v for k, v in handled.items() if k not in NOT_MESSAGES) / batches:.1f} "
             "messages on average; " if batches else "")
          + f"{handled.get('stored_us', 0) / 1000 / max(1, handled.get('stored', 0)):.2f} ms of a worker's time "
          f"per stored event (the chain check against the neighbours, bookkeeping, patterns, the commit)")
    print(f"lost: {tally.lost}  doubled: {tally.doubled}" +
          (f"  (lost e.g. {', '.join(tally.lost_examples)})" if tally.lost_examples else ""))


if __name__ == "__main__":
    sys.exit(main())
