"""Crash torture, small: the real daemon process SIGKILLed at random moments (bench/torture.py).

The full run (`bench/torture.py --kills 1000`) takes minutes; this one checks the same
things on three kills (15 with `./dev test --deep`, tests/depth.py) so that a change that
breaks crash safety fails the test suite.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import torture  # noqa: E402
from depth import size  # noqa: E402
from waiting import wait_until  # noqa: E402


# tests/depth.py; bench/torture.py runs a thousand. Seed 6's three kills fall in each mode
# (a release, the start-up, a commit: seed 3's first six were five commits and one release);
# with the start's report of open intents planted to skip the first, both sizes fail.
KILLS = size(quick=3, deep_size=15)
SEED = size(quick=6, deep_size=3)


def test_random_sigkills_break_nothing(tmp_path):
    tally = torture.run(kills=KILLS, jobs=1, seed=SEED, folder=tmp_path, cli_every=5, quiet=True)
    assert tally.violations == []
    assert tally.kills == KILLS
    # Every kill was checked (how many checks beyond that depends on where the kills fell, which
    # the machine's speed decides): each check_after_kill runs at least 9, the final one too.
    assert tally.checks >= (KILLS + 1) * 9


def test_a_sigkill_inside_an_as_needed_release_is_reported_once_and_the_device_starts_again(tmp_path):
    """An as-needed release has no scheduled dose: its uncertain report must still fold at the next start."""
    worker = torture.Worker(tmp_path, seed=1, cli_every=1)
    # The longest dwell there is: the intent stays open for seconds, so that a slow machine
    # still sees it open; the kill follows at once, the test does not wait for the dwell.
    worker.config.write_text(worker.config.read_text().replace(f"dwell_ms = {torture.DWELL_MS}", "dwell_ms = 5000"))
    before = torture.max_seq(worker.db)
    proc = worker.spawn()
    try:
        assert worker.wait_started(proc, before), worker.tally.violations
        started = torture.max_seq(worker.db)
        worker.send(proc, [f"hold {torture.PRN_FREE[0]}"])
        assert wait_until(lambda: torture.open_intents(worker.db, started), interval=0.002)
        [intent] = torture.open_intents(worker.db, started)
        proc.kill()  # SIGKILL while the servo is open
    finally:
        proc.kill()
        proc.wait()
        proc.stdin.close()
        proc.stderr.close()
    worker.check_after_kill(set(), before, 1)
    worker.finish()  # a clean start and stop: the open intent must be reported, then all checked
    assert worker.tally.violations == []
    uncertain = [e for e in torture.read_events(worker.db) if e["type"] == "dose.release_uncertain"]
    assert [e["data"]["release_event_id"] for e in uncertain] == [intent]
