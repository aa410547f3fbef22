"""The randomized safety simulation (dispenser/safety.py), its checker, and the bugs it found.

A few hundred simulated days on fixed seeds must end with zero violations; planted
violations prove the checker cannot pass silently; and each bug the simulation found
has a regression test here, through the engine.
"""
from __future__ import annotations

import copy
from datetime import timedelta

import pytest

from dispenser.events import GENESIS, event_hash
from dispenser.safety import LogChecker, Simulation, check_events, check_store, store_loader
from dispenser.timeutil import format_at, parse_utc
from support import Rig, as_needed, daily, schedule

# 10 patients x 30 days, one of them on a database file; seeds picked to cover every
# zone, titration, `h` entries, schedule changes, clock jumps and mid-release cuts.
SEEDS = range(1, 11)
DAYS = 30


@pytest.mark.xfail(reason="fails at this branch's base a79e392 already (no_final_state, seeds 5 and 9; the same two "
                          "with and without branch i-sign); main expects it to fail until section 6 lands in rules.py",
                   strict=False)
def test_the_simulation_finds_no_violation(tmp_path):
    days = events = 0
    violations = []
    exercised: dict[str, int] = {}
    for seed in SEEDS:
        db = str(tmp_path / f"sim{seed}.db") if seed == SEEDS[-1] else ":memory:"
        result = Simulation(seed, DAYS, db=db).run()
        days, events, violations = days + result.days, events + result.events, violations + result.violations
        for key, value in result.counts.items():
            exercised[key] = exercised.get(key, 0) + value
    assert days == 300 and events > 5000
    assert not violations, "\n".join(str(v) for v in violations[:5])
    for kind in ("press", "hold", "refill", "power_cuts", "jump", "schedule_changes", "cuts_mid_release"):
        assert exercised.get(kind, 0) > 0, f"the seeds never exercised {kind}: {exercised}"


def test_the_simulation_is_repeatable():
    first, second = Simulation(7, 5).run(), Simulation(7, 5).run()
    assert (first.events, first.counts) == (second.events, second.counts)


# -- the checker catches what it must ------------------------------------------------------


@pytest.fixture(scope="module")
def clean_log():
    """A day of a real engine's log: a morning dose released and taken, an evening one missed,
    as-needed releases 4 h apart."""
    document = schedule(daily("sertraline", 1, ["08:00", "20:00"]), as_needed("hydroxyzine", 3, every_h=4))
    rig = Rig(document, "2026-11-24T06:00:00", stock={"sertraline": 10, "hydroxyzine": 10})
    rig.press("2026-11-24T08:05:00")
    rig.press("2026-11-24T08:06:00")
    rig.hold("2026-11-24T09:00:00")
    rig.hold("2026-11-24T13:00:00")
    rig.at("2026-11-25T06:00:00")
    events = rig.events()
    loader = store_loader(rig.store)
    assert check_store(rig.store, until=rig.now) == []
    return events, loader, rig.now


def rechain(events: list[dict]) -> list[dict]:
    """Renumber and rehash, so that only the planted fault is wrong, not the chain."""
    prev = GENESIS
    for seq, event in enumerate(events, 1):
        event["seq"], event["prev_hash"] = seq, prev
        event["hash"] = prev = event_hash(prev, event)
    return events


def kinds(events, loader, until=None) -> set[str]:
    return {v.kind for v in check_events(events, loader, until)}


def test_the_checker_catches_an_early_release(clean_log):
    events, loader, until = clean_log
    planted = copy.deepcopy(events)
    release = next(e for e in planted if e["type"] == "dose.released")
    release["at"] = format_at(parse_utc(release["data"]["window_start"]) - timedelta(minutes=1))
    index = planted.index(release)
    for earlier in planted[:index]:  # keep `at` in order, so only the window is wrong
        earlier["at"] = min(earlier["at"], release["at"])
    assert "released_outside_window" in kinds(rechain(planted), loader, until)


def test_the_checker_catches_a_second_release_and_a_missing_final_state(clean_log):
    events, loader, until = clean_log
    release = next(e for e in events if e["type"] == "dose.released")
    twice = copy.deepcopy(events)
    twice.insert(twice.index(next(e for e in twice if e["type"] == "dose.released")) + 1, copy.deepcopy(release))
    assert {"released_twice", "two_final_states"} <= kinds(rechain(twice), loader, until)
    unfinished = rechain([copy.deepcopy(e) for e in events if e["type"] != "dose.missed"])
    assert "no_final_state" in kinds(unfinished, loader, until)
    assert "no_final_state" not in kinds(unfinished, loader, None)  # only once settled


def test_the_checker_catches_as_needed_limits_broken(clean_log):
    events, loader, until = clean_log
    planted = copy.deepcopy(events)
    second = [e for e in planted if e["type"] == "prn.released"][1]
    second["at"] = format_at(parse_utc(second["at"]) - timedelta(hours=3, minutes=30))
    planted = [e for e in planted if e["at"] <= second["at"] or e is second]  # keep `at` in order
    assert "prn_interval" in kinds(rechain(planted), loader)


def test_the_checker_catches_a_broken_chain_a_lost_event_and_time_going_back(clean_log):
    events, loader, _ = clean_log
    tampered = copy.deepcopy(events)
    tampered[5]["data"]["quantity"] = 2
    assert "chain" in kinds(tampered, loader)
    lost = copy.deepcopy(events)
    del lost[4]
    assert "seq_gap" in kinds(lost, loader)
    backwards = copy.deepcopy(events)
    backwards[-1]["at"] = backwards[0]["at"]
    assert "time_backwards" in kinds(rechain(backwards), loader)


def test_the_checker_fed_in_pieces_finds_what_it_finds_at_once(clean_log):
    events, loader, until = clean_log
    checker = LogChecker(loader)
    for start in range(0, len(events), 7):
        checker.feed(events[start:start + 7])
        checker.settle(parse_utc(events[min(start + 6, len(events) - 1)]["at"]))
    checker.settle(until)
    assert checker.violations == [] and checker.events == len(events)


# -- bugs the simulation found: regressions --------------------------------------------------


def test_a_power_cut_during_an_as_needed_release_does_not_stop_the_device_starting(tmp_path):
    """Found by the simulation: the start's `dose.release_uncertain` for an as-needed release has
    no `scheduled_at`; folding it raised KeyError, so the device could never start again."""
    cut = {"now": False}

    def mover(compartment, quantity):
        if cut["now"]:
            raise KeyboardInterrupt  # the power goes while the servo turns: nothing after it runs
    rig = Rig(schedule(as_needed("hydroxyzine", 3)), "2026-11-24T06:00:00", stock={"hydroxyzine": 5},
              db=str(tmp_path / "d.db"), mover=mover)
    cut["now"] = True
    with pytest.raises(KeyboardInterrupt):
        rig.hold("2026-11-24T09:00:00")
    cut["now"] = False
    rig.restart("2026-11-24T09:05:00")
    [uncertain] = rig.events("dose.release_uncertain")
    assert uncertain["data"]["medication_id"] == "hydroxyzine"
    assert rig.engine.hold(rig.now).detail["reason"] == "interval"  # it still counts against the limits
    rig.restart("2026-11-24T09:06:00")
    assert len(rig.events("dose.release_uncertain")) == 1


def test_a_servo_fault_during_an_as_needed_release_is_logged_not_raised():
    """Found with the one above: `dose.release_failed` for an as-needed dose raised KeyError."""
    def broken(compartment, quantity):
        raise RuntimeError("servo stalled")
    rig = Rig(schedule(as_needed("hydroxyzine", 3)), "2026-11-24T06:00:00", stock={"hydroxyzine": 5},
              mover=broken)
    assert rig.hold("2026-11-24T09:00:00").feedback == "release_failed"
    assert len(rig.events("dose.release_failed")) == 1
    assert rig.hold("2026-11-24T09:30:00").detail["reason"] == "interval"


def test_the_catch_up_after_a_cut_during_a_release_still_misses_what_closed_meanwhile(tmp_path):
    """Found by the simulation: at the start, `dose.release_uncertain` was logged before the
    catch-up tick and marked time as settled, so windows that closed during the downtime
    were never logged missed."""
    cut = {"now": False}

    def mover(compartment, quantity):
        if cut["now"]:
            raise KeyboardInterrupt
    rig = Rig(schedule(daily("sertraline", 1, ["08:00", "14:00", "20:00"])), "2026-11-24T06:00:00",
              stock={"sertraline": 10}, db=str(tmp_path / "d.db"), mover=mover)
    cut["now"] = True
    with pytest.raises(KeyboardInterrupt):
        rig.press("2026-11-24T08:00:00")
    cut["now"] = False
    rig.restart("2026-11-25T06:00:00")  # a day later
    missed = sorted(e["data"]["scheduled_at"] for e in rig.events("dose.missed"))
    assert missed == ["2026-11-24T19:00:00Z", "2026-11-25T01:00:00Z"]
    assert check_store(rig.store, until=rig.now) == []


def test_after_a_downtime_of_days_every_window_that_closed_is_missed_once(tmp_path):
    """Found by the simulation: the catch-up only looked 4 days back, so after a longer
    downtime the older doses were never logged missed."""
    rig = Rig(schedule(daily("sertraline", 1, ["08:00"])), "2026-11-24T06:00:00",
              stock={"sertraline": 10}, db=str(tmp_path / "d.db"))
    rig.restart("2026-12-01T06:00:00")  # a week off
    missed = [e["data"]["scheduled_at"][:10] for e in rig.events("dose.missed")]
    assert missed == [f"2026-11-{day}" for day in range(24, 31)]
    rig.restart("2026-12-01T06:01:00")
    assert len(rig.events("dose.missed")) == 7
    assert check_store(rig.store, until=rig.now) == []


@pytest.mark.parametrize("every_h, per_unit, per_value", [(240, "d", 1), (1, "wk", 2)])
def test_as_needed_limits_longer_than_eight_days_are_kept(every_h, per_unit, per_value):
    """Found by the simulation: as-needed releases were forgotten after 8 days, so an interval
    of 10 days or a maximum per 2 weeks let a dose out too soon."""
    rig = Rig(schedule(as_needed("p", 3, every_h=every_h, max_units=1, per_unit=per_unit, per_value=per_value)),
              "2026-11-24T06:00:00", stock={"p": 10})
    assert rig.hold("2026-11-24T09:00:00").feedback == "released"
    rig.at("2026-12-03T09:00:00")  # 9 days on
    assert rig.hold("2026-12-03T09:00:00").feedback == "denied"
    rig.restart("2026-12-03T10:00:00")  # the same after a restart
    assert rig.engine.hold(rig.now).feedback == "denied"
    assert len(rig.events("prn.released")) == 1
    assert check_store(rig.store, until=rig.now) == []


def test_a_release_cut_off_before_days_of_downtime_is_reported_with_its_dose(tmp_path):
    """The catch-up now runs before `dose.release_uncertain`; it must not forget the dose first."""
    cut = {"now": False}

    def mover(compartment, quantity):
        if cut["now"]:
            raise KeyboardInterrupt
    rig = Rig(schedule(daily("sertraline", 1, ["08:00"])), "2026-11-24T06:00:00",
              stock={"sertraline": 10}, db=str(tmp_path / "d.db"), mover=mover)
    cut["now"] = True
    with pytest.raises(KeyboardInterrupt):
        rig.press("2026-11-24T08:00:00")
    cut["now"] = False
    rig.restart("2026-11-30T06:00:00")  # six days later
    [uncertain] = rig.events("dose.release_uncertain")
    assert uncertain["data"]["scheduled_at"] == "2026-11-24T13:00:00Z"
    missed = [e["data"]["scheduled_at"][:10] for e in rig.events("dose.missed")]
    assert missed == [f"2026-11-{day}" for day in range(25, 30)]
    assert check_store(rig.store, until=rig.now) == []


def test_two_releases_cut_off_before_days_of_downtime_both_name_their_doses(tmp_path):
    """Found by the 100,000-day run: one press released two doses, the power went during the
    first; after days off, the catch-up in the first report forgot the second's dose."""
    cut = {"now": False}

    def mover(compartment, quantity):
        if cut["now"]:
            raise KeyboardInterrupt
    rig = Rig(schedule(daily("a", 1, ["08:00"]), daily("b", 2, ["08:00"])), "2026-11-24T06:00:00",
              stock={"a": 10, "b": 10}, db=str(tmp_path / "d.db"), mover=mover)
    cut["now"] = True
    with pytest.raises(KeyboardInterrupt):
        rig.press("2026-11-24T08:00:00")
    cut["now"] = False
    rig.restart("2026-11-29T06:00:00")
    uncertain = rig.events("dose.release_uncertain")
    assert [(e["data"]["medication_id"], e["data"].get("scheduled_at")) for e in uncertain] == [
        ("a", "2026-11-24T13:00:00Z"), ("b", "2026-11-24T13:00:00Z")]
    assert check_store(rig.store, until=rig.now) == []


def test_a_dose_released_under_a_new_schedule_keeps_the_window_it_was_released_in():
    """Found by the 100,000-day run: a dose announced under one schedule and released under the
    next kept the old window, so it covered (silently withdrew) a later dose it did not overlap,
    or could miss one it did."""
    first = schedule(daily("sertraline", 1, ["08:00"], before=30, after=120))
    rig = Rig(first, "2026-11-24T06:00:00", stock={"sertraline": 10})
    rig.at("2026-11-24T07:40:00")  # dose.due with the window [07:30, 10:00)
    second = schedule(daily("sertraline", 1, ["08:00"], before=30, after=30), version=2)
    assert rig.engine.apply_schedule(rig.now, second, "local").feedback == "applied"
    rig.press("2026-11-24T07:45:00")
    [released] = rig.events("dose.released")
    assert released["data"]["window_end"] == "2026-11-24T13:30:00Z"  # 08:30 local
    assert rig.press("2026-11-24T07:50:00").feedback == "confirmed"
    [taken] = rig.events("dose.taken")
    assert taken["data"]["window_end"] == "2026-11-24T13:30:00Z"
    rig.restart("2026-11-24T07:51:00")
    record = rig.engine.state.doses[("sertraline", parse_utc(released["data"]["scheduled_at"]))]
    assert format_at(record.window_end) == "2026-11-24T13:30:00.000Z"  # the same after a restart


def test_a_dose_whose_quantity_changed_after_it_was_due_counts_the_pills_released():
    """Found by the 100,000-day run: a titration applied while a dose was due released the new
    quantity (2 pills) but the stock was counted down by the old one (1), so a later dose was
    "released" from a compartment the log believed held a pill and that was in truth empty."""
    first = schedule(daily("naltrexone", 2, ["08:00"], quantity=1))
    rig = Rig(first, "2026-11-24T06:00:00", stock={"naltrexone": 3})
    rig.at("2026-11-24T07:40:00")  # dose.due for 1 pill
    second = schedule(daily("naltrexone", 2, ["08:00"], quantity=2), version=2)
    assert rig.engine.apply_schedule(rig.now, second, "local").feedback == "applied"
    rig.press("2026-11-24T07:45:00")
    assert rig.moves == [(2, 2)] and rig.engine.state.stock["naltrexone"] == 1
    rig.restart("2026-11-24T07:50:00")
    assert rig.engine.state.stock["naltrexone"] == 1  # the fold agrees
    rig.press("2026-11-24T07:51:00")  # confirms
    assert rig.press("2026-11-25T07:45:00").feedback == "empty"  # 1 pill left, the dose is 2
    assert rig.moves == [(2, 2)]
    assert check_store(rig.store, until=rig.now) == []
