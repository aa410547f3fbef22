"""The wall clock jumping: an hour forward and back (a boot with no RTC, then NTP), and back then forward.

The rules work on the log's time, which never decreases (RULES.md, "Time"). These tests
drive the real engine and log through clock steps and show what happens: no dose is
released twice, nothing is released while the clock reads earlier than the log (the
clamped time is not a real one), a correction back never reopens a window or repeats a
missed dose, and limits are counted on the log's time. A clock running ahead is taken
at its word: that one case is shown too, as documented.
"""
from __future__ import annotations

from datetime import timedelta

from support import Rig, as_needed, daily, local, schedule

HOUR = timedelta(hours=1)


def set_clock(rig: Rig, text: str):
    """The wall clock now reads `text` (local), whichever way it moved; the engine ticks."""
    rig.now = local(text, rig.tz)
    rig.engine.tick(rig.now)
    return rig.now


def morning() -> Rig:
    """Sertraline at 08:00, window [07:30, 10:00); stock for days."""
    return Rig(schedule(daily("sertraline", 1, ["08:00"], before=30, after=120)), "2026-11-24T06:00:00",
               stock={"sertraline": 30})


def releases(rig: Rig) -> list[dict]:
    return rig.events("dose.released", "prn.released")


def ats_never_decrease(rig: Rig) -> bool:
    ats = [e["at"] for e in rig.events()]
    return ats == sorted(ats)


def test_forward_then_back_releases_once_and_the_correction_confirms_instead():
    rig = morning()
    rig.at("2026-11-24T07:00:00")
    set_clock(rig, "2026-11-24T08:15:00")  # really 07:15: the clock runs an hour ahead
    assert rig.engine.press(rig.now).feedback == "released"
    set_clock(rig, "2026-11-24T07:16:00")  # NTP: back to the true time
    assert rig.engine.press(rig.now).feedback == "confirmed"
    for text in ("2026-11-24T07:20:00", "2026-11-24T07:40:00", "2026-11-24T08:16:00", "2026-11-24T09:30:00"):
        set_clock(rig, text)
        assert rig.engine.press(rig.now).feedback != "released"
    assert len(releases(rig)) == 1
    rig.at("2026-11-24T12:00:00")
    assert rig.events("dose.missed") == [] and ats_never_decrease(rig)


def test_nothing_is_released_while_the_clock_reads_earlier_than_the_log():
    """After a clock that ran ahead is corrected, the log's time lies ahead of the true time:
    releasing at that clamped time could give a dose before its window truly opened."""
    rig = morning()
    rig.at("2026-11-24T07:00:00")
    set_clock(rig, "2026-11-24T08:00:00")  # really 07:00: the window seems open, dose.due is logged
    assert [e["at"] for e in rig.events("dose.due")] == ["2026-11-24T13:00:00.000Z"]
    set_clock(rig, "2026-11-24T07:01:00")  # corrected: the window truly opens at 07:30
    outcome = rig.engine.press(rig.now)
    assert outcome.feedback == "too_early" and outcome.detail["reason"] == "clock_behind"
    assert outcome.detail["opens_at"] == local("2026-11-24T08:00:00")
    set_clock(rig, "2026-11-24T07:45:00")  # truly in the window, but the log still reads 08:00
    assert rig.engine.press(rig.now).feedback == "too_early"
    assert releases(rig) == []
    set_clock(rig, "2026-11-24T08:00:01")  # the clock has passed the log: time is real again
    assert rig.engine.press(rig.now).feedback == "released"
    [release] = releases(rig)
    assert release["at"] == "2026-11-24T13:00:01.000Z"  # the wall clock, not a clamped time
    assert ats_never_decrease(rig)


def test_a_correction_back_never_reopens_a_missed_window_nor_misses_it_twice():
    """A clock an hour ahead closes the window early: the dose is logged missed then. That is
    the one false miss a wrong clock can cause (the rules cannot tell a clock ahead from an
    hour that passed); it errs on the safe side, and the correction makes nothing worse."""
    rig = morning()
    rig.at("2026-11-24T09:30:00")
    set_clock(rig, "2026-11-24T10:30:00")  # really 09:30, the window [07:30, 10:00) truly still open
    assert len(rig.events("dose.missed")) == 1
    set_clock(rig, "2026-11-24T09:31:00")
    assert rig.engine.press(rig.now).feedback == "too_early"  # not released: the dose is final
    for text in ("2026-11-24T09:59:00", "2026-11-24T10:00:00", "2026-11-24T10:31:00", "2026-11-24T12:00:00"):
        set_clock(rig, text)
        rig.engine.press(rig.now)
    assert len(rig.events("dose.missed")) == 1 and releases(rig) == []
    rig.at("2026-11-25T07:45:00")
    assert rig.engine.press(rig.now).feedback == "released"  # tomorrow is untouched
    assert ats_never_decrease(rig)


def test_a_correction_back_causes_no_missed_dose_of_its_own():
    """The clock ahead for a while logs nothing final; corrected, the dose is given in its window."""
    rig = morning()
    rig.at("2026-11-24T08:40:00")
    set_clock(rig, "2026-11-24T09:40:00")  # ahead, but the window [07:30, 10:00) is still open
    set_clock(rig, "2026-11-24T08:41:00")
    set_clock(rig, "2026-11-24T09:45:00")  # the clock has passed the log again
    assert rig.engine.press(rig.now).feedback == "released"
    rig.at("2026-11-24T12:00:00")
    assert rig.events("dose.missed") == [] and len(releases(rig)) == 1


def test_a_boot_with_the_clock_behind_the_log_releases_nothing_until_the_clock_is_right(tmp_path):
    """No RTC: the clock starts where it was saved, behind the log; NTP steps it forward later."""
    rig = Rig(schedule(daily("naltrexone", 2, ["09:00"], before=30, after=120)), "2026-11-24T06:00:00",
              stock={"naltrexone": 10}, db=str(tmp_path / "d.db"))
    rig.at("2026-11-24T09:00:00")
    rig.engine.refill(rig.now, "naltrexone", 20)  # the last event: 09:00
    rig.restart("2026-11-24T08:30:00")  # really 09:30; the clock reads 08:30
    outcome = rig.engine.press(rig.now)
    assert outcome.feedback == "too_early" and outcome.detail["reason"] == "clock_behind"
    assert releases(rig) == []
    set_clock(rig, "2026-11-24T09:31:00")  # NTP
    assert rig.engine.press(rig.now).feedback == "released"
    assert len(releases(rig)) == 1 and ats_never_decrease(rig) and rig.store.verify()[0]


def test_a_restart_while_the_clock_is_behind_loses_nothing_and_releases_nothing(tmp_path):
    rig = Rig(schedule(daily("sertraline", 1, ["08:00"])), "2026-11-24T06:00:00",
              stock={"sertraline": 10}, db=str(tmp_path / "d.db"))
    rig.at("2026-11-24T07:00:00")
    set_clock(rig, "2026-11-24T08:00:00")
    count = len(rig.events())
    set_clock(rig, "2026-11-24T07:02:00")
    rig.restart("2026-11-24T07:05:00")
    assert len(rig.events()) >= count
    assert rig.engine.press(rig.now).feedback == "too_early" and releases(rig) == []
    set_clock(rig, "2026-11-24T08:05:00")
    assert rig.engine.press(rig.now).feedback == "released"
    assert ats_never_decrease(rig) and rig.store.verify()[0]


def test_as_needed_across_a_jump_forward_and_back_keeps_its_interval_and_logs_no_denial():
    rig = Rig(schedule(as_needed("hydroxyzine", 3, every_h=4, max_units=3)), "2026-11-24T06:00:00",
              stock={"hydroxyzine": 10})
    rig.at("2026-11-24T12:00:00")
    set_clock(rig, "2026-11-24T13:00:00")  # really 12:00
    assert rig.engine.hold(rig.now).feedback == "released"  # logged 13:00
    set_clock(rig, "2026-11-24T12:01:00")
    denied = rig.engine.hold(rig.now)
    assert denied.feedback == "denied" and denied.detail["reason"] == "clock_behind"
    assert rig.events("prn.denied") == []  # not the person's doing: no misuse signal
    set_clock(rig, "2026-11-24T16:59:00")
    assert rig.engine.hold(rig.now).detail["reason"] == "interval"  # 4 h from the logged 13:00
    set_clock(rig, "2026-11-24T17:00:00")
    assert rig.engine.hold(rig.now).feedback == "released"
    ats = [e["at"] for e in releases(rig)]
    assert ats == ["2026-11-24T18:00:00.000Z", "2026-11-24T22:00:00.000Z"] and ats_never_decrease(rig)


def test_a_small_step_back_only_pauses_releases_for_that_long():
    rig = morning()
    rig.at("2026-11-24T07:50:00")
    rig.engine.refill(rig.now, "sertraline", 30)  # logged at 07:50:00
    rig.now -= timedelta(seconds=2)  # NTP steps back two seconds
    assert rig.engine.press(rig.now).feedback == "too_early"
    rig.now += timedelta(seconds=3)
    assert rig.engine.press(rig.now).feedback == "released"
