"""The catch-up after downtime: bounded slices, one summary alert, and a first boot with the clock ahead."""
from __future__ import annotations

from datetime import timedelta

import pytest

from dispenser.engine import Engine
from dispenser.events import Draft
from dispenser.rules import CATCH_UP_DOSES, dose_data
from dispenser.scheduler import doses_between
from dispenser.store import StoreError
from dispenser.timeutil import format_utc
from support import Rig, daily, local, schedule


def set_clock(rig: Rig, text: str):
    """The wall clock now reads `text` (local), whichever way it moved; the engine ticks."""
    rig.now = local(text, rig.tz)
    rig.engine.tick(rig.now)
    return rig.now


def walk(rig: Rig, text: str, step: timedelta = timedelta(minutes=30)) -> None:
    """Let true time pass to `text` on a correct clock, ticking every `step` (the daemon's loop)."""
    end = local(text, rig.tz)
    while rig.now + step < end:
        rig.now += step
        rig.engine.tick(rig.now)
    rig.now = end
    rig.engine.tick(rig.now)


def keys(events):
    return [(e["data"]["medication_id"], e["data"]["scheduled_at"]) for e in events]


def test_a_first_boot_with_the_clock_days_ahead_still_judges_the_days_it_jumped_over(tmp_path):
    """A new device whose clock reads three days ahead (taken at its word, `"always"`) is set up,
    then the clock is corrected. The doses of the three days between truly exist (the schedule
    was truly applied before them); nothing can be released while the clock reads earlier than
    the log, so each is missed once when the clock passes the log again, never released."""
    rig = Rig(schedule(daily("sertraline", 1, ["08:00"])), "2026-11-27T06:00:00",  # truly 11-24 06:00
              stock={"sertraline": 30}, db=str(tmp_path / "d.db"))
    set_clock(rig, "2026-11-24T06:01:00")  # corrected: behind the log by three days
    walk(rig, "2026-11-25T12:00:00")
    rig.restart("2026-11-25T12:05:00")  # a power cut meanwhile changes nothing
    walk(rig, "2026-11-26T08:00:00")
    assert rig.engine.press(rig.now).detail["reason"] == "clock_behind"  # truly in the window, but held
    walk(rig, "2026-11-27T07:45:00")
    assert rig.engine.press(rig.now).feedback == "released"  # the clock has passed the log: today's dose
    walk(rig, "2026-11-28T12:00:00")
    missed = rig.events("dose.missed")
    assert keys(missed) == [("sertraline", "2026-11-24T13:00:00Z"), ("sertraline", "2026-11-25T13:00:00Z"),
                            ("sertraline", "2026-11-26T13:00:00Z"), ("sertraline", "2026-11-28T13:00:00Z")]
    assert [e["data"].get("while") for e in missed] == ["clock_behind"] * 3 + [None]
    [behind] = rig.events("clock.behind")
    assert (behind["data"]["wall"], behind["at"]) == ("2026-11-24T11:01:00.000Z", "2026-11-27T11:00:00.000Z")
    alerts = [e["data"] for e in rig.events("alert.raised") if "missed" in e["data"]["kind"]]
    assert [(a["kind"], a["count"] if "count" in a else a["events"]) for a in alerts] == [
        ("doses_missed_while_unavailable", 3), ("dose_missed", [missed[3]["event_id"]])]
    assert keys(rig.events("dose.released")) == [("sertraline", "2026-11-27T13:00:00Z")]
    ats = [e["at"] for e in rig.events()]
    assert ats == sorted(ats) and rig.store.verify()[0]


class FirstBootRig(Rig):
    """A device whose clock is trusted only once `synced` (timesyncd's marker, simplified)."""

    synced = False

    def _engine(self) -> Engine:
        return Engine(self.store, self.compartments, "America/New_York", mover=self.mover, new_id=self.new_id,
                      clock_trusted=lambda: self.synced)


def test_a_first_boot_ahead_waiting_for_ntp_judges_the_days_between_too(tmp_path):
    """`"synchronized"`: the empty log's first event takes the clock at its word (three days
    ahead); set up before NTP answers, everything is logged at that time; NTP then sets the
    clock back. The schedule was truly applied before the days between: their doses exist."""
    rig = FirstBootRig(schedule(daily("sertraline", 1, ["08:00", "20:00"])), "2026-11-27T06:00:00",
                       stock={"sertraline": 30}, db=str(tmp_path / "d.db"))
    rig.synced = True
    set_clock(rig, "2026-11-24T06:01:00")
    walk(rig, "2026-11-27T07:45:00")
    assert rig.engine.press(rig.now).feedback == "released"
    missed = rig.events("dose.missed")
    assert [e["data"]["scheduled_at"][8:13] for e in missed] == ["24T13", "25T01", "25T13", "26T01", "26T13", "27T01"]
    assert {e["data"]["while"] for e in missed} == {"clock_behind"}
    [alert] = [e["data"] for e in rig.events("alert.raised") if "missed" in e["data"]["kind"]]
    assert alert["events"] == [e["event_id"] for e in missed] and alert["count"] == 6
    walk(rig, "2026-11-28T12:00:00")
    assert len(rig.events("dose.missed")) == 8 and len(rig.events("dose.released")) == 1  # 27T20, 28T08 missed
    assert rig.store.verify()[0]


# -- a long outage: slices, one alert ---------------------------------------------------------------


def eight_meds(times=("08:00", "12:00", "18:00", "22:00")) -> dict:
    return schedule(*[daily(f"med{n}", n, list(times), before=30, after=120) for n in range(1, 9)])


def start_counting(rig: Rig, text: str, fail_after: int | None = None) -> list[int]:
    """Restart at `text` with a listener counting the events of each committed transaction;
    with `fail_after`, the process dies (raises) right after that many transactions."""
    rig.now = local(text, rig.tz)
    rig.engine = rig._engine()
    batches: list[int] = []

    def listen(events):
        batches.append(len(events))
        if fail_after is not None and len(batches) >= fail_after:
            raise KeyboardInterrupt("power cut")

    rig.engine.listeners.append(listen)
    try:
        rig.engine.start(rig.now)
    except KeyboardInterrupt:
        pass
    return batches


def expected_misses(rig: Rig, start: str, end: str) -> list[tuple[str, str]]:
    """The doses whose windows closed in [start, end), by the scheduler itself."""
    sched = rig.engine.rules.state.schedule
    doses = doses_between(sched, local(start) - timedelta(days=2), local(end))
    return sorted((d.medication_id, format_utc(d.scheduled_at)) for d in doses
                  if local(start) < d.window_end <= local(end))


def test_a_months_outage_is_caught_up_in_slices_and_told_in_one_alert(tmp_path):
    rig = Rig(eight_meds(), "2026-11-24T06:00:00", stock={f"med{n}": 30 for n in range(1, 9)},
              db=str(tmp_path / "d.db"))
    rig.at("2026-11-24T07:00:00")
    batches = start_counting(rig, "2027-01-03T09:00:00")  # off for 40 days
    missed = rig.events("dose.missed")
    assert sorted(keys(missed)) == expected_misses(rig, "2026-11-24T07:00:00", "2027-01-03T09:00:00")
    assert len(set(keys(missed))) == len(missed) == 40 * 32  # each once; today's 08:00 doses are open
    assert len(batches) >= 6 and max(batches) <= CATCH_UP_DOSES + 2  # a week of schedule a transaction
    assert {e["at"] for e in missed} == {"2027-01-03T14:00:00.000Z"}  # all logged at the start
    assert {e["data"]["while"] for e in missed} == {"device_off"}
    [alert] = [e["data"] for e in rig.events("alert.raised") if "missed" in e["data"]["kind"]]
    assert alert["kind"] == "doses_missed_while_unavailable" and alert["count"] == len(missed)
    assert alert["events"] == [e["event_id"] for e in missed][:100]  # capped, and says so
    assert alert["first_window_end"] == "2026-11-24T15:00:00Z" and alert["last_window_end"] == "2027-01-03T05:00:00Z"
    assert alert["compartments"] == list(range(1, 9))
    assert alert["message"] == (
        "1280 doses from compartments 1, 2, 3, 4, 5, 6, 7, 8 were missed while the dispenser was off, so it "
        "could not give them: their windows closed between 2026-11-24 10:00 and 2027-01-03 00:00. "
        "The first 100 are listed.")
    assert "med" not in alert["message"]
    assert {e["data"]["scheduled_at"] for e in rig.events("dose.due")} >= {"2027-01-03T13:00:00Z"}  # today's
    ats = [e["at"] for e in rig.events()]
    assert ats == sorted(ats) and rig.store.verify()[0]


def test_a_catch_up_cut_by_a_power_cut_goes_on_where_the_log_says_and_misses_nothing_twice(tmp_path):
    rig = Rig(schedule(daily("a", 1, ["08:00", "20:00"]), daily("b", 2, ["09:00"])), "2026-11-24T06:00:00",
              stock={"a": 30, "b": 30}, db=str(tmp_path / "d.db"))
    rig.at("2026-11-24T07:00:00")
    assert len(start_counting(rig, "2027-01-03T06:00:00", fail_after=3)) == 3  # dies three slices into 40 days
    first = rig.events("dose.missed")
    assert 0 < len(first) < 120 and [e for e in rig.events("alert.raised") if e["data"]["kind"] != "schedule_applied_locally"] == []
    start_counting(rig, "2027-01-03T06:10:00")
    missed = rig.events("dose.missed")
    assert sorted(keys(missed)) == expected_misses(rig, "2026-11-24T07:00:00", "2027-01-03T06:10:00")
    assert len(set(keys(missed))) == len(missed) == 40 * 3
    assert {e["data"]["while"] for e in missed} == {"device_off"}  # also those after the cut
    [alert] = [e for e in rig.events("alert.raised") if e["data"]["kind"] != "schedule_applied_locally"]
    assert alert["data"]["events"] == [e["event_id"] for e in missed][:100] and alert["data"]["count"] == 120


def test_a_dose_a_minute_is_caught_up_a_bounded_number_of_doses_at_a_time(tmp_path):
    every_minute = {"id": "m", "name": "M", "compartment": 1, "window": {"before_min": 0, "after_min": 1},
                    "dosage": [{"timing": {"repeat": {"frequency": 60, "period": 1, "periodUnit": "h",
                                                      "boundsPeriod": {"start": "2026-11-24T00:00:00"}}},
                                "doseAndRate": [{"doseQuantity": {"value": 1}}]}]}
    rig = Rig(schedule(every_minute), "2026-11-24T06:00:00", stock={"m": 5}, db=str(tmp_path / "d.db"))
    batches = start_counting(rig, "2026-11-25T06:00:00")
    missed = rig.events("dose.missed")
    assert len(missed) == len(set(keys(missed))) == 24 * 60
    assert len(batches) >= 5 and max(batches) <= 257
    [alert] = [e["data"] for e in rig.events("alert.raised") if "missed" in e["data"]["kind"]]
    assert alert["count"] == len(missed) and len(alert["events"]) == 100


def test_a_month_waiting_for_ntp_is_caught_up_by_ticks_in_slices_and_told_once(tmp_path):
    """The daemon's ticks catch up in slices too (here: a month with no NTP, then the clock is trusted)."""
    rig = FirstBootRig(eight_meds(), "2026-11-24T06:00:00", stock={f"med{n}": 30 for n in range(1, 9)},
                       db=str(tmp_path / "d.db"))
    rig.synced = True
    rig.at("2026-11-24T07:00:00")
    rig.synced = False
    walk(rig, "2026-12-24T07:00:00", step=timedelta(hours=6))  # held: nothing judged
    assert rig.events("dose.missed") == []
    batches: list[int] = []
    rig.engine.listeners.append(lambda events: batches.append(len(events)))
    rig.synced = True
    rig.engine.tick(rig.now)
    missed = rig.events("dose.missed")
    assert len(missed) == len(set(keys(missed))) == 30 * 32 and len(batches) >= 5
    assert max(batches) <= CATCH_UP_DOSES + 2 and {e["data"]["while"] for e in missed} == {"clock_unsynchronized"}
    [alert] = [e["data"] for e in rig.events("alert.raised") if "missed" in e["data"]["kind"]]
    assert alert["count"] == 960 and "waiting for the correct time" in alert["message"]


def test_a_log_from_before_the_one_alert_raises_no_alert_for_doses_it_told_one_by_one(tmp_path):
    rig = Rig(schedule(daily("a", 1, ["08:00"])), "2026-11-24T06:00:00", stock={"a": 30}, db=str(tmp_path / "d.db"))
    dose = rig.engine.rules.releasable(local("2026-11-24T08:00:00"))[0]
    missed, alert = rig.store.append([  # as the software before wrote them: an alert per dose
        Draft("dose.missed", dose_data(dose, **{"while": "device_off"}), "00000000-0000-4000-8000-0000000000aa"),
        Draft("alert.raised", {"alert_id": "x", "kind": "dose_missed", "severity": "warning", "message": "...",
                               "events": ["00000000-0000-4000-8000-0000000000aa"]}, "")],
        local("2026-11-24T11:00:00"))
    rig.restart("2026-11-24T11:05:00")
    rig.at("2026-11-25T07:00:00")
    assert [e["data"]["kind"] for e in rig.events("alert.raised")
            if e["data"]["kind"] != "schedule_applied_locally"] == ["dose_missed"]


def test_a_disk_full_in_the_middle_of_a_catch_up_is_finished_by_a_later_tick(tmp_path):
    rig = Rig(eight_meds(), "2026-11-24T06:00:00", stock={f"med{n}": 30 for n in range(1, 9)},
              db=str(tmp_path / "d.db"))
    rig.at("2026-11-24T07:00:00")
    append, calls = rig.store.append, []

    def full_after_three(*args, **kwargs):
        calls.append(1)
        if len(calls) > 3:
            raise StoreError("d.db: database or disk is full")
        return append(*args, **kwargs)

    rig.store.append = full_after_three
    rig.now = local("2027-01-03T09:00:00")
    rig.engine = rig._engine()
    with pytest.raises(StoreError):
        rig.engine.start(rig.now)
    assert rig.engine.next_wakeup(rig.now) > rig.now  # no busy loop while the disk is full
    rig.store.append = append  # space again
    rig.now += timedelta(minutes=1)
    rig.engine.tick(rig.now)
    missed = rig.events("dose.missed")
    assert sorted(keys(missed)) == expected_misses(rig, "2026-11-24T07:00:00", "2027-01-03T09:01:00")
    assert len(set(keys(missed))) == len(missed) == 40 * 32
    [alert] = [e for e in rig.events("alert.raised") if e["data"]["kind"] != "schedule_applied_locally"]
    assert alert["data"]["count"] == 40 * 32
