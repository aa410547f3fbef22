"""The randomized safety simulation: many random patients, every invariant checked daily.

    .venv/bin/python bench/safety.py --days 100000 --seed 1 [--jobs 2] [--run-days 30] [--file-every 10]

Each run is one random patient (schedule, time zone, start near a DST change) for
`--run-days` simulated days on the real Engine, DoseRules and Store (SQLite in memory;
every `--file-every`th run on a file, closed and reopened at each power cut), with
random presses, holds, refills, servo faults, power cuts (also mid-release) with random
downtime, wall-clock jumps and schedule changes. Runs are seeded `seed, seed+1, ...`,
so a violation is replayed with `--days N --seed S --run-days N --jobs 1`.
Prints the days run, the events logged, the violations found (0 is the goal) counted
by kind with the first few of each described, and the time taken. Exit status 1 when any violation was found.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.simulation import Simulation  # noqa: E402


def one_run(job: tuple[int, int, bool]) -> tuple[int, int, int, list[str], dict]:
    seed, days, on_file = job
    if on_file:
        with tempfile.TemporaryDirectory(prefix="dispenser-safety-") as scratch:
            result = Simulation(seed, days, db=str(Path(scratch) / "sim.db")).run()
    else:
        result = Simulation(seed, days).run()
    return seed, result.days, result.events, [str(v) for v in result.violations], result.counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=3000, help="simulated days in all (default 3000)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the first run (default 1)")
    parser.add_argument("--run-days", type=int, default=30, help="days per random patient (default 30)")
    parser.add_argument("--jobs", type=int, default=1, help="processes (default 1)")
    parser.add_argument("--file-every", type=int, default=10,
                        help="every Nth run uses a database file instead of memory (0: never; default 10)")
    parser.add_argument("--show", type=int, default=2, help="violations to describe per kind (default 2)")
    args = parser.parse_args(argv)
    if args.days < 1 or args.run_days < 1 or args.jobs < 1:
        parser.error("--days, --run-days and --jobs must be at least 1")

    jobs, left, seed = [], args.days, args.seed
    while left > 0:
        days = min(args.run_days, left)
        on_file = args.file_every > 0 and (seed - args.seed) % args.file_every == args.file_every - 1
        jobs.append((seed, days, on_file))
        left -= days
        seed += 1

    began = time.perf_counter()
    days = events = 0
    violations: list[str] = []
    counts: Counter = Counter()
    if args.jobs == 1:
        results = map(one_run, jobs)
    else:
        pool = ProcessPoolExecutor(args.jobs)
        results = pool.map(one_run, jobs, chunksize=4)
    for _, run_days, run_events, run_violations, run_counts in results:
        days += run_days
        events += run_events
        violations += run_violations
        counts.update(run_counts)
    if args.jobs > 1:
        pool.shutdown()
    elapsed = time.perf_counter() - began

    print(f"runs: {len(jobs)} (seeds {args.seed}..{seed - 1}, {args.run_days} days each)")
    print(f"days: {days}")
    print(f"events: {events}")
    print(f"violations: {len(violations)}")
    by_kind = Counter(line.split(" ", 1)[0].rstrip(":") for line in violations)
    if by_kind:
        print("by kind: " + ", ".join(f"{kind} {count}" for kind, count in by_kind.most_common()))
    shown: Counter = Counter()
    for line in violations:  # the first few of each kind, so that every kind has an example
        kind = line.split(" ", 1)[0].rstrip(":")
        if shown[kind] < args.show:
            shown[kind] += 1
            print(f"  {line}")
    exercised = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    print(f"exercised: {exercised}")
    if counts.get("released_outside_window_by_true_clock"):
        print("  (released_outside_window_by_true_clock: releases while the wall clock ran ahead; inside the window "
              "by the log's time, which the rules use; not a violation, see docs/RULES.md \"Time\")")
    print(f"time: {elapsed:.1f} s ({elapsed / days * 1000:.1f} ms per simulated day, {args.jobs} process(es))")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
