"""`dispenser log verify --rules`: the log judged by the checker written from the contract."""
from __future__ import annotations

from datetime import timedelta

from dispenser.events import Draft
from dispenser.rules import dose_data
from dispenser.scheduler import doses_between
from dispenser.store import Store
from support import local
from test_cli import device, run  # noqa: F401  (the fixture)


def test_a_log_the_rules_wrote_passes(device):
    config, db = device
    assert run("refill", "sertraline", "10", "--config", str(config)).returncode == 0
    result = run("log", "verify", "--rules", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "within the safety rules" in result.stdout


def test_a_release_outside_its_window_is_named(device):
    """A release the rules would never log (hours before the window), chained like any other."""
    config, db = device
    store = Store.open(db, "disp-0042")
    try:
        from dispenser.engine import Engine
        engine = Engine(store, 8, "America/New_York")
        schedule = engine.rules.state.schedule
        dose = doses_between(schedule, local("2026-12-10T00:00:00"), local("2026-12-11T00:00:00"))[0]
        store.append([Draft("dose.released", dose_data(dose), "e-planted")], dose.window_start - timedelta(hours=3))
    finally:
        store.close()
    result = run("log", "verify", "--rules", "--config", str(config))
    assert result.returncode == 1
    assert "outside" in result.stderr or "window" in result.stderr, result.stderr
    assert run("log", "verify", "--config", str(config)).returncode == 0  # the chain itself is whole


def test_rules_without_verify_is_one_line(device):
    config, _ = device
    result = run("log", "--rules", "--config", str(config))
    assert result.returncode != 0 and "--rules goes with" in result.stderr and "Traceback" not in result.stderr
