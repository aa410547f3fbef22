"""How big the randomized tests are: a quick default, or the full-size proofs with `--deep`.

The default run keeps every randomized test at a size that still finds the bugs these
tests found when they were written, so `./dev test` stays well under a minute; the full
sizes (thousands of hostile payloads, fifteen SIGKILLs, every seed) run with

    ./dev test --deep          (or DISPENSER_TEST_DEEP=1 ./dev test)

Both sizes run the same assertions. The benchmarks under bench/ go further still.

    kills = size(quick=5, deep_size=15)

Each quick size below still fails on the bug planted (in a scratch copy, never committed)
that its test exists to catch; "n/m" is failed runs of random-seed runs:

- test_safety_sim: seeds 3, 7, 9, 10 x 30 days (1-10): a second release (`_pending` always
  true), a release 15 min early, the as-needed maximum off by one; every change exercised.
- test_hostile_input: 300 random payloads (2,500): bytes decoded outside the try, 5/5;
  500 mutations (3,000): the `when` validator's TypeError, 6/8, as 1,000 did (300: 4/8);
  300 valid documents (4,000): a compartment off by one 8/8, signatures unchecked.
- test_torture: 3 kills on seed 6, one per mode (15 on seed 3): the start not reporting an
  open release intent (seed 3's first 3 kills were all commits and missed it).
- test_concurrency: two writers 300 steps (400 x 3 seeds): the fold outside the write lock
  with the stale-append guard off, 6/6 (200 steps reach too few dose ends to pass).
- test_schedule_robust: 50 examples (300): the expander's clamp to LATEST or the date-time
  parser's OverflowError removed, 6/6 each (25: 6/6).
- test_snapshot_chaincheck: a 10-day log (20): verify_rows not comparing stored hashes.
- test_fleet_small: 10 devices (50): the outbox published at QoS 0 loses events across the
  broker's restart, 4/4.
- test_snapshot: seed 8 (8, 14, 12, 10): stock_low, released doses, the last release of an
  ingredient or prn_denied dropped from snapshot.dump (behind and unjudged, which no seed
  reaches, by the exact dump-and-restore test with every field set).

Kept at their size, a smaller one being weaker on its planted bug: the draw-thread race
(150 or 200 inputs: 7/8, 300: 8/8), the hostile config files (50: 0/6, 100: 5/5, compartments'
type check removed), test_safety_properties (30 examples missed the as-needed maximum off by
one 4/4), test_sensors_sim (only seed 26 of 21-26 fails on an unseen release that stops
counting).
"""
from __future__ import annotations

import os

ENV = "DISPENSER_TEST_DEEP"
# Examples per hypothesis test without a size of its own: (default run, --deep); conftest.py
# loads them as the "quick" and "deep" hypothesis profiles.
HYPOTHESIS_EXAMPLES = (100, 300)


def deep() -> bool:
    """True when the full-size proofs were asked for (conftest.py sets ENV for `--deep`)."""
    return os.environ.get(ENV, "") not in ("", "0")


def size(quick: int, deep_size: int) -> int:
    """`quick` in the default run, `deep_size` with --deep."""
    return deep_size if deep() else quick
