"""The type check `./dev test` runs first (pyproject.toml, [tool.mypy]) is strict enough to matter."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What `./dev test`'s mypy run left (the same config): the standard library's stubs already
# analysed, so a check of one small file does not analyse typeshed again (~0.5 s of CPU).
PROJECT_CACHE = ROOT / ".mypy_cache"


def mypy(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_the_configuration_refuses_what_it_promises_to(tmp_path):
    """An untyped function, an Optional used as if it were set, an unneeded `type: ignore`."""
    bad = tmp_path / "bad.py"
    bad.write_text("def untyped(x):\n    return x\n\n\n"
                   "def unchecked(y: int | None) -> int:\n    return y + 1\n\n\n"
                   "z: int = 1  # type: ignore\n")
    cache = tmp_path / "cache"
    if PROJECT_CACHE.is_dir():  # a copy: this check's results never enter the project's cache
        shutil.copytree(PROJECT_CACHE, cache)
    result = mypy("--cache-dir", str(cache), str(bad))
    assert result.returncode == 1, result.stdout + result.stderr
    for code in ("[no-untyped-def]", "[operator]", "[unused-ignore]"):
        assert code in result.stdout, result.stdout


def test_the_schedule_validator_needs_no_scheduler():
    """schedule.py checks entry spans with dosage.py; scheduler.py imports schedule.py, never
    the other way round (once a function-level import closed a cycle between them)."""
    code = ("import sys, json; from dispenser.schedule import load_schedule_file; "
            f"load_schedule_file({str(ROOT / 'dispenser' / 'demo' / 'schedule.json')!r}); "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('dispenser'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout))
    assert "dispenser.dosage" in loaded and "dispenser.scheduler" not in loaded
