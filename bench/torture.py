"""Crash torture: the real daemon process killed with SIGKILL at random moments.

    .venv/bin/python bench/torture.py --kills 1000 [--jobs 2] [--seed 1] [--dir PATH]

Each round starts `python -m dispenser simulate --config C --db D` (simulated hardware,
commands on stdin, a real SQLite file in WAL mode), feeds it `press` / `hold MED` lines
and kills it with SIGKILL:

- inside a release: a slow servo (`dwell_ms`) keeps the intent open; the db is polled
  read-only for a `releases` row with outcome NULL, then the kill falls at a random
  moment before the servo is done (between the intent commit and the end of the move);
- during a commit: at a random moment right after a burst of presses and holds;
- during start-up: at a random moment after the spawn, which also covers the start's
  own transaction that reports the previous round's open releases.

After each kill, on the dead process's file, and again after the next start:
`PRAGMA integrity_check`, the hash chain (every round in-process, `dispenser log verify`
every `--cli-every` rounds and at the end), no scheduled dose released twice, the
as-needed interval and maximum kept, every event seen committed before the kill still
there, every release intent left open reported exactly once as
`dose.release_uncertain` by the very next start (and never released again).

Real time runs at speed 1 (a faster clock would start behind the log after each kill),
so the schedule gives plenty to release every minute: two medications due every minute
(a one-minute window each), one hourly dose whose window always covers now, and as-needed
medications with a one-minute interval, one of them with a low maximum (3 an hour) so
that the limit is tested across crashes too.

Prints kills, kills inside a release, checks and violations; exits 1 on any violation.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dispenser.engine import Engine  # noqa: E402
from dispenser.events import verify_chain  # noqa: E402
from dispenser.store import Store  # noqa: E402

UTC = timezone.utc
DEVICE = "disp-torture"
DWELL_MS = 150  # one unit = open, dwell, close, dwell: 0.3 s with the intent open
PRN_LIMITED = "plim"  # 3 an hour: the maximum is reached and must hold across crashes
PRN_FREE = [f"p{i}" for i in range(1, 13)]
MINUTELY = ["m1", "m2"]
HOURLY = "h1"
BOUNDS = "2026-01-01T00:00:00Z"


def schedule_document() -> dict:
    """Doses always in a window, as-needed doses every minute: something to release at any time."""
    meds, compartment = [], 0

    def add(med: dict) -> None:
        nonlocal compartment
        compartment += 1
        meds.append({"compartment": compartment, **med})

    def every(med_id: str, frequency: int, before: int, after: int) -> dict:
        return {"id": med_id, "name": med_id.upper(), "window": {"before_min": before, "after_min": after},
                "dosage": [{"timing": {"repeat": {"boundsPeriod": {"start": BOUNDS}, "frequency": frequency,
                                                  "period": 1, "periodUnit": "h"}},
                            "doseAndRate": [{"doseQuantity": {"value": 1}}]}]}

    def prn(med_id: str, max_units: int, per_h: int) -> dict:
        return {"id": med_id, "name": med_id.upper(),
                "dosage": [{"asNeededBoolean": True,
                            "timing": {"repeat": {"frequency": 60, "period": 1, "periodUnit": "h"}},
                            "maxDosePerPeriod": {"numerator": {"value": max_units},
                                                 "denominator": {"value": per_h, "unit": "h"}},
                            "doseAndRate": [{"doseQuantity": {"value": 1}}]}]}

    add(every(HOURLY, 1, 30, 30))
    for med_id in MINUTELY:
        add(every(med_id, 60, 0, 1))
    add(prn(PRN_LIMITED, 3, 1))
    for med_id in PRN_FREE:
        add(prn(med_id, 60, 1))  # one a minute at most: the limit is never reached
    return {"schema": "dispenser.schedule/1", "version": 1, "issued_at": "2026-01-01T00:00:00Z",
            "timezone": "UTC", "medications": meds}


# --- reading the dead (or living) process's file, never writing it ---------------------


_READERS: dict[str, sqlite3.Connection] = {}
_READERS_LOCK = threading.Lock()


@contextlib.contextmanager
def ro(db: Path):
    """A read-only connection, one per file and thread, kept open: polling stays cheap."""
    key = f"{db}:{threading.get_ident()}"
    with _READERS_LOCK:
        conn = _READERS.get(key)
        if conn is None:
            conn = _READERS[key] = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10,
                                                   check_same_thread=False)
    yield conn


def read_events(db: Path) -> list[dict]:
    with ro(db) as conn:
        device = conn.execute("SELECT value FROM meta WHERE key = 'device_id'").fetchone()[0]
        rows = conn.execute("SELECT seq, event_id, schema, type, at, data, prev_hash, hash "
                            "FROM events ORDER BY seq").fetchall()
    return [{"schema": schema, "event_id": event_id, "device_id": device, "seq": seq, "type": type_,
             "at": at, "data": json.loads(data), "prev_hash": prev, "hash": hash_}
            for seq, event_id, schema, type_, at, data, prev, hash_ in rows]


def max_seq(db: Path) -> int:
    with ro(db) as conn:
        return conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]


def event_ids(db: Path) -> set[str]:
    with ro(db) as conn:
        return {row[0] for row in conn.execute("SELECT event_id FROM events")}


def open_intents(db: Path, after_seq: int = 0) -> list[str]:
    with ro(db) as conn:
        return [row[0] for row in conn.execute(
            "SELECT r.event_id FROM releases r JOIN events e ON e.event_id = r.event_id "
            "WHERE r.outcome IS NULL AND e.seq > ?", [after_seq])]


def started_after(db: Path, seq: int) -> bool:
    with ro(db) as conn:
        return conn.execute("SELECT 1 FROM events WHERE type = 'device.started' AND seq > ? LIMIT 1",
                            [seq]).fetchone() is not None


def integrity(db: Path) -> str:
    with ro(db) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


# --- one worker: one database, many lives ----------------------------------------------


@dataclass
class Tally:
    kills: int = 0
    in_release: int = 0
    uncertain_reported: int = 0
    checks: int = 0
    violations: list[str] = field(default_factory=list)
    modes: Counter = field(default_factory=Counter)
    dose_releases: int = 0
    prn_releases: int = 0
    starts: list[float] = field(default_factory=list)

    def check(self, ok: bool, what: str) -> None:
        self.checks += 1
        if not ok:
            self.violations.append(what)


class Worker:
    def __init__(self, folder: Path, seed: int, cli_every: int, tree: Path = ROOT):
        self.folder = folder
        self.tree = tree
        self.rng = random.Random(seed)
        self.cli_every = cli_every
        self.db = folder / "d.db"
        self.config = folder / "config.toml"
        self.tally = Tally()
        self.committed: set[str] = set()  # every event id ever seen on disk
        self.pending: set[str] = set()  # intents a kill left open, not yet reported
        self.reported: set[str] = set()
        folder.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            f'[device]\nid = "{DEVICE}"\ntimezone = "UTC"\n'
            f'[hardware]\nbackend = "sim"\ncompartments = 16\ndwell_ms = {DWELL_MS}\n'
            f'[storage]\ndb = "{self.db}"\n')
        self._setup()

    def _setup(self) -> None:
        """Schedule and stock, written the way `dispenser schedule apply` and `refill` would."""
        store = Store.open(self.db, DEVICE)
        try:
            engine = Engine(store, 16, "UTC")
            now = datetime.now(UTC)
            engine.start(now)
            outcome = engine.apply_schedule(now, schedule_document(), "local")
            assert outcome.feedback == "applied", outcome.detail
            for med in [HOURLY, *MINUTELY, PRN_LIMITED, *PRN_FREE]:
                engine.refill(now, med, 100000)
            engine.stop(now)
        finally:
            store.close()
        self.committed = event_ids(self.db)

    def spawn(self) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "dispenser", "simulate", "--config", str(self.config), "--db", str(self.db)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=self.tree,
            env={**os.environ, "PYTHONPATH": str(self.tree)})

    def send(self, proc: subprocess.Popen, lines: list[str]) -> None:
        try:
            proc.stdin.write("".join(line + "\n" for line in lines).encode())
            proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def wait_started(self, proc: subprocess.Popen, before: int, limit: float = 20.0) -> bool:
        began = time.monotonic()
        while not started_after(self.db, before):
            if proc.poll() is not None:
                self.tally.violations.append(f"daemon exited {proc.returncode}: "
                                             f"{proc.stderr.read().decode(errors='replace')[-400:]}")
                return False
            if time.monotonic() - began > limit:
                self.tally.violations.append("daemon did not start within 20 s")
                return False
            time.sleep(0.005)
        self.tally.starts.append(time.monotonic() - began)
        return True

    def available_prn(self) -> list[str]:
        """As-needed medications whose last release is over a minute ago (by the log's times)."""
        last: dict[str, str] = {}
        with ro(self.db) as conn:
            for med, at in conn.execute(
                    "SELECT json_extract(data, '$.medication_id'), max(at) FROM events "
                    "WHERE type = 'prn.released' GROUP BY 1"):
                last[med] = at
        cutoff = (datetime.now(UTC) - timedelta(seconds=62)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        return [m for m in PRN_FREE if last.get(m, "") < cutoff]

    def round(self, number: int) -> None:
        before = max_seq(self.db)
        mode = self.rng.choices(["release", "commit", "startup"], weights=[5, 4, 1])[0]
        proc = self.spawn()
        try:
            if mode == "startup":
                time.sleep(self.rng.uniform(0.05, 0.8))  # interpreter start, imports, the start commit
            else:
                if not self.wait_started(proc, before):
                    return
                started = max_seq(self.db)
                if mode == "release":
                    mode = self._kill_in_release(proc, started)
                else:
                    lines = [self.rng.choice(["press", "hold " + self.rng.choice([PRN_LIMITED, *PRN_FREE]),
                                              "hold " + PRN_LIMITED]) for _ in range(self.rng.randint(1, 4))]
                    self.send(proc, lines)
                    time.sleep(self.rng.uniform(0, 0.04))
            seen = event_ids(self.db)  # committed before the kill, read while the process lives
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
            proc.stdin.close()
            proc.stderr.close()
        self.tally.kills += 1
        self.tally.modes[mode] += 1
        self.check_after_kill(seen, before, number)

    def _kill_in_release(self, proc: subprocess.Popen, started: int) -> str:
        """Ask for releases, wait for an open intent, then kill before the servo is done."""
        free = self.available_prn()
        lines = ["press"] + [f"hold {m}" for m in self.rng.sample(free, min(len(free), 2))]
        self.rng.shuffle(lines)
        self.send(proc, lines)
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            if open_intents(self.db, started):
                time.sleep(self.rng.uniform(0, 2 * DWELL_MS / 1000 * 0.9))
                return "release"
            time.sleep(0.002)
        return "release-none-open"  # nothing left to release this minute: a plain kill

    def check_after_kill(self, seen: set[str], before: int, number: int) -> None:
        t = self.tally
        t.check(integrity(self.db) == "ok", f"round {number}: integrity_check failed")
        events = read_events(self.db)
        ok, bad, reason = verify_chain(events)
        t.check(ok, f"round {number}: chain broken at seq {bad}: {reason}")
        ids = {e["event_id"] for e in events}
        lost = (self.committed | seen) - ids
        t.check(not lost, f"round {number}: {len(lost)} committed events lost, e.g. {sorted(lost)[:2]}")
        self.committed |= ids
        t.check(len(ids) == len(events), f"round {number}: duplicate event ids")
        new = [e for e in events if e["seq"] > before]
        restarted = any(e["type"] == "device.started" for e in new)

        # Release intents a kill left open: reported exactly once, by the very next start.
        uncertain = [e for e in events if e["type"] == "dose.release_uncertain"]
        counts = Counter(e["data"]["release_event_id"] for e in uncertain)
        twice = [k for k, n in counts.items() if n > 1]
        t.check(not twice, f"round {number}: release reported uncertain twice: {twice[:2]}")
        if restarted:
            missing = [k for k in self.pending if counts.get(k) != 1]
            t.check(not missing, f"round {number}: open intents not reported at the start: {missing[:2]}")
            t.uncertain_reported += len(self.pending) - len(missing)
            self.pending -= set(counts)
        else:
            t.check(all(k not in counts for k in self.pending),
                    f"round {number}: an open intent was reported without a start")
        by_id = {e["event_id"]: e for e in events}
        for e in uncertain:
            release = by_id.get(e["data"]["release_event_id"])
            t.check(release is not None and release["type"] in ("dose.released", "prn.released"),
                    f"round {number}: uncertain about a release that is not in the log")
            # Logged by a start: in its transaction, so at the same `at` as the nearest device.started
            # before it, with nothing but that start's own catch-up in between.
            seq = e["seq"] - 1
            while seq > 1 and events[seq - 1]["type"] != "device.started":
                seq -= 1
            start = events[seq - 1]
            between = events[seq:e["seq"] - 1]
            t.check(start["type"] == "device.started" and all(x["at"] == start["at"] for x in between + [e])
                    and not any(x["type"] in ("dose.released", "prn.released", "prn.denied", "dose.taken")
                                for x in between),
                    f"round {number}: release_uncertain at seq {e['seq']} not logged by a start")
        open_now = set(open_intents(self.db))
        t.check(not (open_now & self.reported), f"round {number}: a reported intent is still open")
        self.reported |= set(counts)
        left_open = open_now - self.reported - self.pending
        if left_open and number >= 0:
            t.in_release += 1  # this kill left a release intent open: it fell inside a release
        self.pending |= left_open
        t.check(not (self.pending - open_now), f"round {number}: a pending intent was closed silently")

        self.check_doses(events, number)
        if number % self.cli_every == 0:
            self.check_cli(number)

    def check_doses(self, events: list[dict], number: int) -> None:
        t = self.tally
        released = [e for e in events if e["type"] == "dose.released"]
        keys = Counter((e["data"]["medication_id"], e["data"]["scheduled_at"]) for e in released)
        twice = [k for k, n in keys.items() if n > 1]
        t.check(not twice, f"round {number}: scheduled dose released twice: {twice[:2]}")
        t.dose_releases = len(released)
        prn: dict[str, list[datetime]] = defaultdict(list)
        for e in events:
            if e["type"] == "prn.released":
                prn[e["data"]["medication_id"]].append(datetime.fromisoformat(e["at"].replace("Z", "+00:00")))
        t.prn_releases = sum(len(v) for v in prn.values())
        for med, times in prn.items():
            gaps = [b - a for a, b in zip(times, times[1:])]
            t.check(all(g >= timedelta(minutes=1) for g in gaps),
                    f"round {number}: {med} released twice within its 1-minute interval")
            if med == PRN_LIMITED:
                over = [at for i, at in enumerate(times)
                        if sum(1 for other in times[:i + 1] if other > at - timedelta(hours=1)) > 3]
                t.check(not over, f"round {number}: {med} over 3 in an hour at {over[:1]}")

    def check_cli(self, number: int) -> None:
        """The shipped command, as a person would run it (it opens the file read-write: WAL recovery)."""
        out = subprocess.run([sys.executable, "-m", "dispenser", "log", "verify", "--config", str(self.config),
                              "--db", str(self.db)], capture_output=True, text=True, cwd=self.tree, timeout=60,
                             env={**os.environ, "PYTHONPATH": str(self.tree)})
        self.tally.check(out.returncode == 0, f"round {number}: dispenser log verify: {out.stderr.strip()}")

    def finish(self) -> None:
        """A last clean start: every intent still open is reported, then everything is checked once more."""
        before = max_seq(self.db)
        proc = self.spawn()
        self.wait_started(proc, before)
        self.send(proc, ["quit"])
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            self.tally.violations.append("the final clean stop did not finish")
        self.tally.check(proc.returncode == 0, f"final run exited {proc.returncode}")
        self.check_after_kill(set(), before, -1)
        self.tally.check(not self.pending, f"final: intents never reported: {sorted(self.pending)[:2]}")
        self.tally.check(open_intents(self.db) == [], "final: release intents still open after a clean stop")
        self.check_cli(0)


def run(kills: int, jobs: int, seed: int, folder: Path, cli_every: int, quiet: bool = False,
        tree: Path = ROOT) -> Tally:
    per = [kills // jobs + (1 if i < kills % jobs else 0) for i in range(jobs)]
    workers = [Worker(folder / f"w{i}", seed * 1000 + i, cli_every, tree) for i in range(jobs)]
    done = [0]
    lock = threading.Lock()

    def work(worker: Worker, count: int) -> None:
        for number in range(1, count + 1):
            worker.round(number)
            with lock:
                done[0] += 1
                if not quiet and done[0] % 100 == 0:
                    print(f"  {done[0]} kills", file=sys.stderr, flush=True)
        worker.finish()

    threads = [threading.Thread(target=work, args=(w, n)) for w, n in zip(workers, per)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = Tally()
    for w in workers:
        t = w.tally
        total.kills += t.kills
        total.in_release += t.in_release
        total.uncertain_reported += t.uncertain_reported
        total.checks += t.checks
        total.violations += t.violations
        total.modes += t.modes
        total.dose_releases += t.dose_releases
        total.prn_releases += t.prn_releases
        total.starts += t.starts
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cli-every", type=int, default=50, help="run `dispenser log verify` every N rounds")
    parser.add_argument("--dir", help="keep the databases here (default: a temporary folder, removed)")
    parser.add_argument("--tree", default=str(ROOT),
                        help="the source tree whose `dispenser` the daemon runs (e.g. a copy with a fix applied)")
    args = parser.parse_args(argv)
    folder = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="torture-"))
    began = time.monotonic()
    try:
        tally = run(args.kills, max(1, args.jobs), args.seed, folder, args.cli_every, tree=Path(args.tree))
    finally:
        if not args.dir:
            shutil.rmtree(folder, ignore_errors=True)
    elapsed = time.monotonic() - began
    starts = sorted(tally.starts)
    print(f"kills done              {tally.kills} in {elapsed:.0f} s ({args.jobs} workers)")
    print(f"kills inside a release  {tally.in_release} (open release intents reported uncertain: "
          f"{tally.uncertain_reported})")
    print(f"kill moments            {dict(tally.modes)}")
    print(f"releases in the logs    {tally.dose_releases} scheduled, {tally.prn_releases} as needed")
    if starts:
        print(f"start to device.started median {starts[len(starts) // 2]:.2f} s, max {starts[-1]:.2f} s")
    print(f"checks run              {tally.checks}")
    print(f"violations              {len(tally.violations)}")
    kinds = Counter(v.split(": ", 1)[-1] if v.startswith("round") else v for v in tally.violations)
    for kind, count in kinds.most_common(20):
        print(f"  {count} x {kind}")
    return 1 if tally.violations else 0


if __name__ == "__main__":
    sys.exit(main())
