"""How big the randomized tests are: a quick default, or the full-size proofs with `--deep`.

The default run keeps every randomized test at a size that still finds the bugs these
tests found when they were written, so `./dev test` stays well under a minute; the full
sizes (thousands of hostile payloads, fifteen SIGKILLs, every seed) run with

    ./dev test --deep          (or DISPENSER_TEST_DEEP=1 ./dev test)

Both sizes run the same assertions. The benchmarks under bench/ go further still.

    kills = size(quick=5, deep=15)
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
