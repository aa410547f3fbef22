"""The fleet benchmark, small: 10 devices, 2 days, the broker restarted, nothing lost or doubled.

`bench/fleet.py` with its defaults (1,000 devices, a month) takes many minutes; this runs
the same program, as a user does, on 10 devices (50 with `./dev test --deep`, tests/depth.py)
for 2 simulated days: its own Mosquitto
and PostgreSQL, the care service's 4 workers, the real Store and Sync of every device,
the broker stopped and started in the middle. It must exit 0 and count 0 lost and 0
doubled against the devices' own logs. The counting itself is checked on made-up logs,
so that a zero cannot come from a comparison that never finds anything.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from fleet_tally import LoggedEvent, StoredEvent, compare  # noqa: E402
from depth import size  # noqa: E402
from waiting import HANG  # noqa: E402

FLEET = ROOT / "bench" / "fleet.py"


def run_fleet(*args: str, folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(FLEET), *args, "--dir", str(folder)], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=20 * HANG)


# tests/depth.py: ./dev test --deep for fifty. Ten lose 10-46 events in 4 runs of 4 with the
# outbox published at QoS 0 (planted): the broker's restart drops what was in flight.
DEVICES = size(quick=10, deep_size=50)


def test_a_small_fleet_two_days_loses_and_doubles_nothing_across_a_broker_restart(tmp_path):
    result = run_fleet("--devices", str(DEVICES), "--days", "2", folder=tmp_path)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr[-3000:]
    assert "lost: 0  doubled: 0" in out
    logged, stored = map(int, re.search(r"events: (\d+) logged by the devices .*?, (\d+) stored", out).groups())
    assert logged == stored
    assert logged >= DEVICES * 2 * 25          # about 31 a device a day: the month is really lived
    assert "broker restarted when every process had lived day 1 of 2" in out
    assert re.search(r"end to end: \d+ events/s", out)
    assert re.search(r"lag append -> stored: p50 [\d.]+ s, p99 [\d.]+ s", out)


def test_too_few_processes_for_the_select_limit_is_refused_in_one_line(tmp_path):
    result = run_fleet("--devices", "500", "--processes", "2", folder=tmp_path / "work")
    assert result.returncode == 2
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert "250 devices a process" in line and "--processes 5" in line
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").iterdir())


def test_the_comparison_finds_a_lost_and_a_doubled_event():
    logs = [LoggedEvent("d1", 1, "e1", "h1", 100.0), LoggedEvent("d1", 2, "e2", "h2", 100.0),
            LoggedEvent("d2", 1, "e3", "h3", 100.0)]
    rows = [StoredEvent("d1", 1, "e1", "h1", 101.0),
            StoredEvent("d2", 1, "e3", "h3", 103.0),
            StoredEvent("d2", 1, "e9", "h9", 103.0)]       # a second event for d2's seq 1: nobody logged it
    tally = compare(logs, rows)
    assert (tally.lost, tally.doubled) == (1, 1)
    assert tally.lost_examples == ["d1 seq 2"]
    assert sorted(tally.lags) == [1.0, 3.0]


def test_a_stored_event_with_another_hash_or_seq_is_not_the_logged_one():
    logs = [LoggedEvent("d1", 1, "e1", "h1", 0.0), LoggedEvent("d1", 2, "e2", "h2", 0.0)]
    rows = [StoredEvent("d1", 1, "e1", "other", 1.0), StoredEvent("d1", 5, "e2", "h2", 1.0)]
    tally = compare(logs, rows)
    assert (tally.lost, tally.doubled) == (2, 2)
