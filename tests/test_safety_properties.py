"""Property tests: over random schedules, presses, holds and power cuts, the safety rules hold.

Each example runs the real engine and log (SQLite in memory) and then checks the log
against the schedule's own expansion: nothing released outside its window, nothing
released twice, as-needed limits kept, every closed window in exactly one final state,
and the hash chain intact.
"""
from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispenser.logcheck import check_store
from support import Rig, as_needed, daily, schedule

ZONES = ["America/New_York", "Europe/London", "Australia/Lord_Howe", "Asia/Kolkata"]
# Days just before DST changes (or none), so that runs cross them.
STARTS = ["2026-03-07T06:00:00", "2026-03-28T06:00:00", "2026-10-24T06:00:00", "2026-10-31T06:00:00",
          "2026-04-04T06:00:00", "2026-11-24T06:00:00"]

times = st.lists(st.sampled_from([f"{h:02d}:{m:02d}" for h in range(24) for m in (0, 15, 30, 45)]),
                 min_size=1, max_size=3, unique=True)


@st.composite
def medications(draw):
    meds = []
    for index in range(draw(st.integers(1, 3))):
        meds.append(daily(f"m{index}", index + 1, sorted(draw(times)), quantity=draw(st.integers(1, 2)),
                          before=draw(st.sampled_from([0, 15, 30, 60, 120])),
                          after=draw(st.sampled_from([15, 60, 120, 240]))))
    if draw(st.booleans()):
        quantity = draw(st.integers(1, 2))
        meds.append(as_needed("prn", 8, every_h=draw(st.sampled_from([0.5, 1, 4, 6])),
                              max_units=quantity * draw(st.integers(1, 4)),
                              per_unit=draw(st.sampled_from(["h", "d"])), per_value=draw(st.sampled_from([12, 1])),
                              quantity=quantity))
    return meds


# Steps of minutes as often as of hours, and the button pressed again and again: presses or
# holds close together inside one window or one as-needed period are what a second release
# or a limit off by one needs to show.
actions = st.lists(st.tuples(st.one_of(st.integers(0, 30), st.integers(0, 300)),
                             st.sampled_from(["press", "press", "press", "mash", "hold", "hold", "cut", "refill", "wait"])),
                   min_size=5, max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(meds=medications(), zone=st.sampled_from(ZONES), start=st.sampled_from(STARTS), steps=actions,
       stock=st.integers(0, 12))
def test_nothing_early_nothing_twice_limits_hold_every_dose_ends_once(meds, zone, start, steps, stock):
    document = schedule(*meds, timezone=zone)
    tz = ZoneInfo(zone)
    rig = Rig(document, start, stock={m["id"]: stock for m in meds}, tz=tz)
    for minutes, action in steps:
        rig.now += timedelta(minutes=minutes)
        if action == "cut":
            rig.restart()  # a power cut: the next start rebuilds everything from the log
            continue
        rig.engine.tick(rig.now)
        if action == "press":
            rig.engine.press(rig.now)
        elif action == "mash":  # the button pressed again and again: release, confirm, then nothing
            for _ in range(3):
                rig.engine.press(rig.now)
        elif action == "hold":
            rig.engine.hold(rig.now)
        elif action == "refill":
            rig.engine.refill(rig.now, meds[0]["id"], 10)
    end = rig.now + timedelta(days=1, hours=6)
    rig.engine.tick(end)  # let every window that opened close
    check_log(rig, end)




def check_log(rig: Rig, end) -> None:
    """The shared checker (dispenser/logcheck.py): chain, windows, once, limits, final states."""
    violations = check_store(rig.store, until=end)
    assert not violations, "\n".join(str(v) for v in violations[:5])
