"""The randomized safety simulation (harness/simulation.py) with a drop sensor that misses
pills: section 6 and every other rule the log checker judges still hold when releases fail
unseen and their doses are released again (docs/RULES.md, "The lid and the drop sensor")."""
from __future__ import annotations

import pytest

from harness.simulation import Simulation

SEEDS = range(21, 27)
DAYS = 30


@pytest.fixture(scope="module")
def simulated():
    results = [Simulation(seed, DAYS, unseen=0.15).run() for seed in SEEDS]
    counts: dict[str, int] = {}
    for result in results:
        for key, value in result.counts.items():
            counts[key] = counts.get(key, 0) + value
    return results, counts


def test_unseen_releases_break_no_rule(simulated):
    results, counts = simulated
    violations = [v for result in results for v in result.violations]
    assert not violations, "\n".join(str(v) for v in violations[:5])
    assert sum(result.days for result in results) == len(SEEDS) * DAYS


def test_the_seeds_exercise_unseen_releases_and_their_refills(simulated):
    results, counts = simulated
    assert counts.get("unseen_releases", 0) >= 20, counts
    assert counts.get("refill", 0) > 0 and counts.get("press", 0) > 0, counts
