"""Start-up, queries and memory as the log ages: 1, 3 and 10 years of a realistic patient.

    .venv/bin/python bench/log_age.py [--years 1 3 10] [--presses 100] [--dir DIR]

Builds one log with the real Engine and Store on a virtual clock (synchronous=OFF while
building only): a person with four scheduled medications (08:00 two, 09:00, 20:00 and
21:00; the 09:00 one moved now and then by a new schedule), an as-needed one, most doses
released within minutes and confirmed, some late, unconfirmed or missed, a check-in after
about half the confirmations, refills every four weeks, a clean restart every ten days
and a power cut (no stop) every month. Copies are taken at 1 and 3 years as it grows, as
a device would have them then: ending wherever the last snapshot left its tail, the
outbox sent (a device that reaches its broker).

Then for each age, each in fresh processes on a fresh copy, at a moment a minute after the log's end:
- start to READY: `dispenser run`'s own code (runner.build_daemon, run_daemon, simulated
  hardware), from the process's spawn to its READY; the first start of a boot and a
  restart in the same boot;
- after READY, the CPU of the background check on its thread at nice 19: the whole file
  (quick_check, at the first start of a boot) and the whole chain (every start);
- resident memory once the background check is done, offline and with MQTT
  (a private Mosquitto, tests/broker.py);
- `dispenser status`, `dispenser report --days 7`, `dispenser log verify`: the commands'
  own code in a fresh process, wall time from spawn to exit, after the daemon's start in
  this boot (as on a device: the file passed the daemon's quick_check then);
- press to servo with MQTT: as-needed requests on the daemon's queue until its servo
  moves, with the clinic's state document published after every input;
- for reference, the fold of the whole log that every start did before (in-process).
Goals: start-up under 0.3 s and memory under 40 MB at ten years, flat with age.

The package's bytecode is compiled first, as `pip install` does on a device: without it
(an editable install, or PYTHONDONTWRITEBYTECODE as in some shells) every start compiles
the sources again, 0.1 s of CPU here that a device never spends.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

UTC = timezone.utc
DEVICE = "disp-age"
TZ = "Europe/London"
BEGIN = datetime(2016, 11, 20, 7, 0, tzinfo=UTC)
GROUPS = {"08:00": ["sertraline", "lithium_am"], "09:00": ["naltrexone"], "20:00": ["lithium_pm"],
          "21:00": ["quetiapine"]}


# --- the log ---------------------------------------------------------------------------------


def document(version: int, naltrexone_at: str) -> dict:
    def daily(med_id: str, compartment: int, at: str, code: str | None = None) -> dict:
        return {"id": med_id, "name": med_id.replace("_", " ").title(), "compartment": compartment,
                "window": {"before_min": 30, "after_min": 120},
                "dosage": [{"timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d",
                                                  "timeOfDay": [f"{at}:00"]}},
                            "doseAndRate": [{"doseQuantity": {"value": 1}}]}]}
    return {"schema": "dispenser.schedule/1", "version": version, "issued_at": "2016-11-01T00:00:00Z",
            "timezone": TZ, "medications": [
                daily("sertraline", 1, "08:00"), daily("lithium_am", 2, "08:00"),
                daily("naltrexone", 3, naltrexone_at), daily("lithium_pm", 4, "20:00"),
                daily("quetiapine", 5, "21:00"),
                {"id": "hydroxyzine", "name": "Hydroxyzine", "compartment": 6,
                 "dosage": [{"asNeededBoolean": True,
                             "timing": {"repeat": {"frequency": 1, "period": 6, "periodUnit": "h"}},
                             "maxDosePerPeriod": {"numerator": {"value": 3}, "denominator": {"value": 1, "unit": "d"}},
                             "doseAndRate": [{"doseQuantity": {"value": 1}}]}]}]}


class Patient:
    """The engine on a virtual clock, driven through a person's days."""

    def __init__(self, path: Path, seed: int = 13):
        from dispenser.store import Store
        self.path, self.rng = path, random.Random(seed)
        self.store = Store.open(path, DEVICE)
        self.store.db.execute("PRAGMA synchronous=OFF")  # building only: the figures are measured on copies
        self.now = BEGIN
        self.engine = self._engine()
        self.engine.start(self.now)
        self.version, self.naltrexone_at = 1, "09:00"
        self.engine.apply_schedule(self.now, document(1, "09:00"), "local")
        self._refill()

    def _engine(self):
        from dispenser.engine import Engine
        return Engine(self.store, 8, TZ, read_model=False)

    def _refill(self) -> None:
        for medication in ("sertraline", "lithium_am", "naltrexone", "lithium_pm", "quetiapine", "hydroxyzine"):
            self.engine.refill(self.now, medication, 60)

    def advance(self, target: datetime) -> None:
        while True:
            wakeup = self.engine.next_wakeup(self.now)
            if wakeup is None or wakeup > target:
                break
            self.now = wakeup
            self.engine.tick(self.now)
        self.now = max(self.now, target)

    def day(self, number: int) -> None:
        from zoneinfo import ZoneInfo
        rng, tz = self.rng, ZoneInfo(TZ)
        local = (BEGIN + timedelta(days=number)).astimezone(tz).date()
        plan: list[tuple[datetime, str]] = []
        for at in ("08:00", self.naltrexone_at, "20:00", "21:00"):
            hour, minute = map(int, at.split(":"))
            dose = datetime(local.year, local.month, local.day, hour, minute, tzinfo=tz).astimezone(UTC)
            roll = rng.random()
            if roll < 0.04:
                continue  # missed
            press = dose + timedelta(minutes=rng.choice([0, 1, 2, 5, 10, 20, 45]) if roll < 0.9 else rng.randrange(31, 110))
            plan.append((press, "press"))
            if rng.random() < 0.96:
                plan.append((press + timedelta(minutes=rng.randrange(1, 6)), "confirm"))
        if rng.random() < 0.25:
            plan.append((datetime(local.year, local.month, local.day, rng.randrange(10, 23), tzinfo=tz)
                         .astimezone(UTC), "hold"))
        for moment, kind in sorted(plan):
            self.advance(moment)
            if kind == "hold":
                self.engine.hold(self.now, "hydroxyzine")
            else:
                outcome = self.engine.press(self.now)
                if outcome.feedback == "confirmed" and rng.random() < 0.5:
                    self.engine.checkin(self.now, rng.choice([2, 3, 3, 4, 4, 5]), rng.choice([None, None, "mild"]),
                                        outcome.detail.get("medications", []))
        if number % 28 == 27:
            self._refill()
        if number % 120 == 119:
            self.version += 1
            self.naltrexone_at = "10:00" if self.naltrexone_at == "09:00" else "09:00"
            self.engine.apply_schedule(self.now, document(self.version, self.naltrexone_at), "local")
        if number % 10 == 9:  # a clean restart
            self.engine.stop(self.now)
            self.now += timedelta(minutes=2)
            self.engine = self._engine()
            self.engine.start(self.now)
        elif number % 30 == 17:  # a power cut: no stop, no snapshot with it
            self.now += timedelta(minutes=5)
            self.engine = self._engine()
            self.engine.start(self.now)

    def copy(self, target: Path) -> datetime:
        """A consistent copy of the log as it is now; returns the moment a minute after it."""
        self.advance(self.now + timedelta(hours=self.rng.randrange(1, 5)))  # a tail after the last snapshot
        drained(self.store.db.conn, self.now)
        destination = sqlite3.connect(target)
        self.store.db.conn.backup(destination)
        destination.close()
        return self.now + timedelta(minutes=1)


def drained(conn: sqlite3.Connection, now: datetime) -> None:
    """The outbox as on a device that reaches its broker: everything sent (the sync's own
    bench, bench/outbox_drain.py, measures a backlog)."""
    from dispenser.timeutil import format_at
    with conn:
        conn.execute("UPDATE outbox SET sent_at = ? WHERE sent_at IS NULL", [format_at(now)])


def build(folder: Path, years: list[int]) -> dict[int, tuple[Path, datetime, int]]:
    """{years: (log copy, the moment after it, its events)}."""
    patient = Patient(folder / "growing.db")
    logs, last = {}, max(years)
    for number in range(int(365.25 * last) + 1):
        patient.day(number)
        for age in years:
            if age not in logs and number == int(365.25 * age):
                path = folder / f"log-{age}y.db"
                at = patient.copy(path)
                logs[age] = (path, at, patient.store.event_count())
                print(f"built {age} year(s): {logs[age][2]} events, {path.stat().st_size / 1e6:.1f} MB", flush=True)
    patient.store.close()
    return logs


# --- measuring, in fresh processes -------------------------------------------------------------


def config_file(folder: Path, mqtt: tuple[str, int] | None) -> Path:
    text = (f'[device]\nid = "{DEVICE}"\ntimezone = "{TZ}"\n[hardware]\nbackend = "sim"\ncompartments = 8\n'
            '[clock]\ntrust = "always"\n[checkin]\nenabled = false\n')
    if mqtt:
        text += f'[mqtt]\nhost = "{mqtt[0]}"\nport = {mqtt[1]}\ntls = false\nusername = "{DEVICE}"\npassword = "x"\n'
    path = folder / ("config-mqtt.toml" if mqtt else "config.toml")
    path.write_text(text)
    path.chmod(0o600)  # it holds a password: the config loader insists
    return path


def child_daemon(config: str, db: str, at: str, presses: int) -> None:
    """In a fresh process: the daemon as `dispenser run` builds it, on a clock at `at`."""
    from dispenser.config import load_config
    from dispenser.daemon import SystemClock
    from dispenser.runner import build_daemon, run_daemon

    class Clock(SystemClock):
        def __init__(self) -> None:
            self.start, self.began, self.offset = datetime.fromisoformat(at), time.monotonic(), timedelta(0)

        def now(self) -> datetime:
            return self.start + self.offset + timedelta(seconds=time.monotonic() - self.began)

    class Notifier:
        def ready(self) -> None:
            print(f"READY {time.process_time():.4f}", flush=True)  # the CPU this process used to get here

        def watchdog(self) -> None:
            pass

        def watchdog_interval(self) -> None:
            return None

    clock, moved, built = Clock(), threading.Event(), {}

    def owner() -> None:
        daemon = built["daemon"] = build_daemon(load_config(config), db, simulated=False, notifier=Notifier(),
                                                on_move=lambda c, state: state == "open" and moved.set())
        daemon.sleep = lambda s: None
        run_daemon(daemon, clock)

    threading.Thread(target=owner, daemon=True).start()
    while "daemon" not in built or built["daemon"].chain_check is None or built["daemon"].chain_check.result is None:
        time.sleep(0.01)
    daemon = built["daemon"]
    figures = {"rss_mb": _memory("VmRSS"), "hwm_mb": _memory("VmHWM"), "cpu_checked": time.process_time(),
               "check": daemon.chain_check.result[2], "tail": daemon.engine.tail_folded}
    latencies = []
    if presses:
        daemon.put(("refill", "hydroxyzine", 10_000))
        if daemon.sync is not None:
            waited = time.monotonic()
            while not daemon.sync.connected and time.monotonic() - waited < 30:
                time.sleep(0.01)
            figures["mqtt_connected"] = daemon.sync.connected
        for _ in range(presses):
            clock.offset += timedelta(hours=8, seconds=1)  # past the 6-hour interval, 3 a day at most
            moved.clear()
            began = time.perf_counter()
            daemon.put(("hold", "hydroxyzine"))
            if not moved.wait(10):
                raise SystemExit("the servo never moved")
            latencies.append((time.perf_counter() - began) * 1000)
    figures["latencies"] = latencies
    print(json.dumps(figures), flush=True)
    daemon.put("stop")
    time.sleep(0.5)


def child_command(db: str, config: str, at: str, *argv: str) -> None:
    """In a fresh process: one `dispenser` command at the moment `at`, a minute after the log's end.

    At the wall clock instead, `report --days 7` read the last days of a log ending near
    today (the ten-year one) and nothing of one ending years ago: a window's content, not
    the log's age. Both clocks a command reads are set: `status`'s and `report`'s.
    """
    import dispenser.cli as cli
    import dispenser.cli.device as device
    import dispenser.opening as opening
    moment = datetime.fromisoformat(at)
    device.wall_now = lambda: moment  # type: ignore[assignment]
    opening.trusted_now = lambda trust: moment  # type: ignore[assignment]
    code = cli.main([*argv, "--config", config, "--db", db])
    raise SystemExit(code)


def _memory(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def start_daemon(config: Path, db: Path, at: datetime, presses: int = 0) -> dict:
    began = time.perf_counter()
    child = subprocess.Popen([sys.executable, __file__, "--child-daemon", str(config), str(db), at.isoformat(),
                              str(presses)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             cwd=str(ROOT))
    line = child.stdout.readline()
    ready = time.perf_counter() - began
    if not line.startswith("READY "):
        raise SystemExit(f"the daemon did not start: {line!r}")
    figures = json.loads(child.stdout.readline())
    child.wait(60)
    figures["ready_s"], figures["ready_cpu"] = ready, float(line.split()[1])
    figures["check_cpu"] = figures["cpu_checked"] - figures["ready_cpu"]  # the background check, after READY
    return figures


def command(config: Path, db: Path, at: datetime, *argv: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one command in a fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--child-command", str(db), str(config), at.isoformat(), *argv],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=str(ROOT))
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def full_fold(db: Path) -> tuple[float, float]:
    """What every start did before the snapshot: fold the whole log, checking each hash."""
    from dispenser.engine import Engine
    from dispenser.store import Store
    with Store.open(db, DEVICE) as store:
        began, cpu = time.perf_counter(), time.process_time()
        Engine(store, 8, TZ, snapshots=False)
        return time.perf_counter() - began, time.process_time() - cpu


def compiled() -> None:
    """The package's bytecode, as `pip install` leaves it on a device (see the docstring)."""
    import compileall
    if not compileall.compile_dir(str(ROOT / "dispenser"), quiet=1):
        raise SystemExit("the package does not compile")


def best(runs: int, measure) -> tuple[float, float]:
    """The least wall time and the least CPU time over `runs` (a loaded machine adds to both)."""
    results = [measure() for _ in range(runs)]
    return min(r[0] for r in results), min(r[1] for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--years", type=int, nargs="+", default=[1, 3, 10])
    parser.add_argument("--presses", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3, help="fresh processes per figure; the best is shown")
    parser.add_argument("--dir", type=Path, default=None, help="keep the logs here (built once, reused)")
    parser.add_argument("--child-daemon", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--child-command", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_daemon:
        config, db, at, presses = args.child_daemon
        child_daemon(config, db, at, int(presses))
        return
    if args.child_command:
        child_command(*args.child_command)
        return
    from broker import Broker

    compiled()
    folder = args.dir or Path(tempfile.mkdtemp(prefix="log-age-"))
    folder.mkdir(parents=True, exist_ok=True)
    index = folder / "logs.json"
    if index.exists():
        logs = {int(k): (Path(p), datetime.fromisoformat(a), n) for k, (p, a, n) in json.loads(index.read_text()).items()}
        for path, at, _ in logs.values():  # logs kept from an earlier run
            conn = sqlite3.connect(path)
            drained(conn, at)
            conn.close()
    else:
        began = time.perf_counter()
        logs = build(folder, sorted(args.years))
        index.write_text(json.dumps({k: (str(p), a.isoformat(), n) for k, (p, a, n) in logs.items()}))
        print(f"built in {time.perf_counter() - began:.0f} s", flush=True)
    broker = Broker(folder / "broker").start()
    offline, online = config_file(folder, None), config_file(folder, (broker.host, broker.port))
    rows = []
    try:
        for age in sorted(args.years):
            source, at, events = logs[age]
            copy = folder / f"run-{age}y.db"

            def fresh() -> Path:
                for side in ("", "-wal", "-shm"):
                    Path(f"{copy}{side}").unlink(missing_ok=True)
                shutil.copy(source, copy)
                return copy

            first = [start_daemon(offline, fresh(), at) for _ in range(args.runs)]
            restart = [start_daemon(offline, copy, at + timedelta(minutes=5 + i)) for i in range(args.runs)]
            with_mqtt = start_daemon(online, fresh(), at, presses=args.presses)
            start_daemon(offline, fresh(), at)  # the daemon ran this boot: the file passed quick_check
            at += timedelta(minutes=10)
            row = {
                "age": age, "events": events, "mb": round(source.stat().st_size / 1e6, 1),
                "first_start": min(f["ready_s"] for f in first), "restart": min(f["ready_s"] for f in restart),
                "first_cpu": min(f["ready_cpu"] for f in first), "restart_cpu": min(f["ready_cpu"] for f in restart),
                "tail": first[0]["tail"], "rss": min(f["rss_mb"] for f in first),
                "check_first": min(f["check_cpu"] for f in first), "check_restart": min(f["check_cpu"] for f in restart),
                "rss_mqtt": with_mqtt["rss_mb"], "hwm_mqtt": with_mqtt["hwm_mb"],
                "status": best(args.runs, lambda: command(offline, copy, at, "status")),
                "report": best(args.runs, lambda: command(offline, copy, at, "report", "--days", "7")),
                "verify": best(args.runs, lambda: command(offline, copy, at, "log", "verify")),
                "p50": statistics.median(with_mqtt["latencies"]) if with_mqtt["latencies"] else float("nan"),
                "p99": sorted(with_mqtt["latencies"])[int(len(with_mqtt["latencies"]) * 0.99) - 1]
                if with_mqtt["latencies"] else float("nan"),
                "mqtt": with_mqtt.get("mqtt_connected"),
                "fold": best(args.runs, lambda: full_fold(fresh())),
                "check": first[0]["check"],
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        broker.stop()
    print()
    print(f"Each time: wall / CPU seconds, the best of {args.runs} fresh processes (CPU time is what a loaded "
          f"machine changes least). Load average now: {os.getloadavg()[0]:.1f}")
    print("| log age | events | file | start to READY, first of a boot | restart | events folded at start | "
          "after READY: background check CPU, first / restart | "
          "status | report --days 7 | log verify | RSS offline / with MQTT | press to servo with MQTT p50 / p99 | "
          "whole fold with hashes (every start before) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")

    def pair(wall: float, cpu: float) -> str:
        return f"{wall:.2f} / {cpu:.2f} s"
    for r in rows:
        print(f"| {r['age']} y | {r['events']:,} | {r['mb']} MB | {pair(r['first_start'], r['first_cpu'])} | "
              f"{pair(r['restart'], r['restart_cpu'])} | {r['tail']} | "
              f"{r['check_first']:.2f} / {r['check_restart']:.2f} s | {pair(*r['status'])} | {pair(*r['report'])} | "
              f"{pair(*r['verify'])} | {r['rss']:.1f} / {r['rss_mqtt']:.1f} MB | {r['p50']:.1f} / {r['p99']:.1f} ms | "
              f"{pair(*r['fold'])} |")
    print("goals: start to READY under 0.3 s and memory under 40 MB at ten years, flat with age")
    if not args.dir:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
