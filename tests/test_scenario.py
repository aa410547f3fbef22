"""`dispenser simulate --scenario`: the contract's worked example and the scenario format."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from support import DEMO, EXAMPLES
from inprocess import dispenser

RELEASE_TYPES = {"dose.released", "prn.released"}


def simulate(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return dispenser("simulate", *args, cwd=cwd)


def events_of(result: subprocess.CompletedProcess) -> list[dict]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def expected_lines(path: Path) -> list[tuple[str, str, str]]:
    """(minute, type, medication) for each line of a `.expected` file; alerts name no medication."""
    lines = []
    for raw in path.read_text().splitlines():
        if not raw.strip() or raw.startswith("#"):
            continue
        minute, kind, rest = raw.split(None, 2)
        lines.append((minute, kind, "" if kind == "alert.raised" else rest.split()[0]))
    return lines


def observed(events: list[dict], kinds: set[str]) -> list[tuple[str, str, str]]:
    return [(e["at"][:16], e["type"], "" if e["type"] == "alert.raised" else e["data"].get("medication_id", ""))
            for e in events if e["type"] in kinds]


@pytest.mark.parametrize("scenario", [DEMO / "first-day.toml"])
def test_the_worked_example_logs_what_the_contract_expects(scenario):
    events = events_of(simulate("--scenario", str(scenario)))
    expected = expected_lines(EXAMPLES / "first-day.expected")
    kinds = {kind for _, kind, _ in expected}
    got = observed(events, kinds)
    # alerts other than the one the example names (stock, ...) may stand between the lines
    unconfirmed = next(e for e in events if e["type"] == "dose.unconfirmed")
    about_unconfirmed = [e for e in events if e["type"] == "alert.raised"
                         and e["data"]["events"] == [unconfirmed["event_id"]]]
    got = [line for line in got if line[1] != "alert.raised"]
    got.insert(got.index((unconfirmed["at"][:16], "dose.unconfirmed", "naltrexone")) + 1,
               (about_unconfirmed[0]["at"][:16], "alert.raised", ""))
    assert got == expected
    released = [e for e in events if e["type"] in RELEASE_TYPES]
    assert len(released) == 3  # nothing else is released
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    ats = [e["at"] for e in events]
    assert ats == sorted(ats)
    naltrexone = next(e for e in released if e["data"]["medication_id"] == "naltrexone")
    assert naltrexone["data"]["quantity"] == 1


def test_a_scenario_is_repeatable_to_the_byte():
    first = simulate("--scenario", str(DEMO / "first-day.toml"))
    second = simulate("--scenario", str(DEMO / "first-day.toml"))
    assert first.returncode == 0 and first.stdout == second.stdout


def write_scenario(tmp_path: Path, steps: str, start="2026-11-24T06:00:00", until="2026-11-25T06:00:00",
                   stock="sertraline = 28\nnaltrexone = 5\nhydroxyzine = 10") -> Path:
    (tmp_path / "schedule.json").write_text((DEMO / "schedule.json").read_text())
    path = tmp_path / "s.toml"
    path.write_text(f'start = "{start}"\nuntil = "{until}"\nschedule = "schedule.json"\n[stock]\n{stock}\n{steps}')
    return path


def test_power_cut_with_downtime_misses_what_closed_meanwhile_and_ignores_presses(tmp_path):
    path = write_scenario(tmp_path, """
[[step]]
at = "2026-11-24T07:00:00"
do = "power_cut"
for_min = 300
[[step]]
at = "2026-11-24T08:00:00"
do = "press"
""")
    events = events_of(simulate("--scenario", str(path), "--db", str(tmp_path / "d.db")))
    starts = [e for e in events if e["type"] == "device.started"]
    assert [e["at"][:16] for e in starts] == ["2026-11-24T11:00", "2026-11-24T17:00"]
    missed = [(e["data"]["medication_id"], e["at"][:16]) for e in events if e["type"] == "dose.missed"]
    assert missed == [("sertraline", "2026-11-24T17:00"), ("naltrexone", "2026-11-24T17:00")]
    assert not [e for e in events if e["type"] in RELEASE_TYPES]
    verify = dispenser("log", "verify", "--db", tmp_path / "d.db")
    assert verify.returncode == 0, verify.stderr


def test_power_cut_running_at_until_ends_with_the_device_off(tmp_path):
    path = write_scenario(tmp_path, """
[[step]]
at = "2026-11-24T07:00:00"
do = "power_cut"
for_min = 6000
""")
    events = events_of(simulate("--scenario", str(path)))
    assert [e["type"] for e in events if e["type"] == "device.started"] == ["device.started"]
    assert not [e for e in events if e["type"] == "dose.missed"]


def test_refill_and_apply_schedule_steps(tmp_path):
    newer = json.loads((DEMO / "schedule.json").read_text())
    newer["version"] = 13
    newer["routine"]["MORN"] = "11:00"
    (tmp_path / "newer.json").write_text(json.dumps(newer))
    path = write_scenario(tmp_path, """
[[step]]
at = "2026-11-24T07:00:00"
do = "apply_schedule"
file = "newer.json"
[[step]]
at = "2026-11-24T10:40:00"
do = "refill"
medication = "sertraline"
count = 3
[[step]]
at = "2026-11-24T10:45:00"
do = "press"
""", stock="naltrexone = 5")
    events = events_of(simulate("--scenario", str(path)))
    applied = [e["data"]["version"] for e in events if e["type"] == "schedule.applied"]
    assert applied == [12, 13]
    released = [(e["data"]["medication_id"], e["data"]["scheduled_at"]) for e in events
                if e["type"] == "dose.released"]
    assert released == [("naltrexone", "2026-11-24T14:00:00Z"), ("sertraline", "2026-11-24T16:00:00Z")]


@pytest.mark.parametrize("body, message", [
    ('start = 1\nuntil = "2026-11-25T06:00:00"\nschedule = "schedule.json"', "start"),
    ('start = "2026-11-24T06:00:00"\nuntil = "2026-11-24T05:00:00"\nschedule = "schedule.json"', "until"),
    ('start = "2026-11-24T06:00:00"\nuntil = "2026-11-25T06:00:00"\nschedule = "missing.json"', "missing.json"),
    ('start = "2026-11-24T06:00:00"\nuntil = "2026-11-25T06:00:00"\nschedule = "schedule.json"\n'
     '[[step]]\nat = "2026-11-24T07:00:00"\ndo = "dance"', "step[0].do"),
    ('start = "2026-11-24T06:00:00"\nuntil = "2026-11-25T06:00:00"\nschedule = "schedule.json"\n'
     '[[step]]\nat = "2026-11-26T07:00:00"\ndo = "press"', "step[0].at"),
    ('start = "2026-11-24T06:00:00"\nuntil = "2026-11-25T06:00:00"\nschedule = "schedule.json"\n'
     '[[step]]\nat = "2026-11-24T07:00:00"\ndo = "refill"', "step[0].medication"),
    ("this is = = not toml", "not valid TOML"),
])
def test_a_bad_scenario_is_one_line_and_exit_2(tmp_path, body, message):
    (tmp_path / "schedule.json").write_text((DEMO / "schedule.json").read_text())
    path = tmp_path / "bad.toml"
    path.write_text(body)
    result = simulate("--scenario", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr
