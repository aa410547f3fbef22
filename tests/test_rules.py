"""The dose rules through the engine, on a clock the test moves and a real (in-memory) log."""
from __future__ import annotations

from datetime import timedelta

import pytest

from support import Rig, as_needed, contract_schedule, daily, local, schedule


def types(events):
    return [e["type"] for e in events]


@pytest.fixture
def day():
    """The contract's example schedule on 2026-11-24 in New York, stocked."""
    return Rig(contract_schedule(), "2026-11-24T06:00:00",
               stock={"sertraline": 28, "naltrexone": 10, "hydroxyzine": 10})


# -- windows -------------------------------------------------------------------------------------


def test_press_before_the_window_releases_nothing_and_says_when_it_opens(day):
    outcome = day.press("2026-11-24T07:10:00")
    assert outcome.feedback == "too_early"
    assert outcome.detail["opens_at"] == local("2026-11-24T07:30:00")
    assert day.released() == []


def test_window_opening_logs_due_then_a_press_releases_it(day):
    day.at("2026-11-24T07:30:00")
    due = day.events("dose.due")
    assert [(e["data"]["medication_id"], e["at"]) for e in due] == [("sertraline", "2026-11-24T12:30:00.000Z")]
    outcome = day.press("2026-11-24T07:31:00")
    assert outcome.feedback == "released"
    assert day.released() == [("sertraline", "2026-11-24T13:00:00Z")]
    assert day.moves == [(1, 1)]


def test_a_press_at_the_windows_end_is_too_late_and_the_dose_is_missed(day):
    outcome = day.press("2026-11-24T10:00:00")  # sertraline's window is [07:30, 10:00)
    assert ("sertraline", "2026-11-24T13:00:00Z") not in day.released()
    missed = day.events("dose.missed")
    assert [(e["data"]["medication_id"], e["at"]) for e in missed] == [("sertraline", "2026-11-24T15:00:00.000Z")]
    alert = [e["data"] for e in day.events("alert.raised") if e["data"]["kind"] != "schedule_applied_locally"][0]
    assert alert["kind"] == "dose_missed" and alert["events"] == [missed[0]["event_id"]]
    assert "sertraline" not in alert["message"].lower()  # a caregiver alert names no drug
    assert outcome.feedback == "released"  # naltrexone's window [08:30, 11:00) is open


def test_one_press_releases_every_dose_due_together():
    rig = Rig(schedule(daily("a", 1, ["09:00"]), daily("b", 2, ["09:00"], quantity=2)), "2026-11-24T06:00:00",
              stock={"a": 5, "b": 5})
    rig.press("2026-11-24T09:05:00")
    assert sorted(rig.released()) == [("a", "2026-11-24T14:00:00Z"), ("b", "2026-11-24T14:00:00Z")]
    assert sorted(rig.moves) == [(1, 1), (2, 2)]


def test_reminders_repeat_until_release():
    rig = Rig(schedule(daily("a", 1, ["09:00"])), "2026-11-24T06:00:00", stock={"a": 5})
    rig.at("2026-11-24T10:10:00")
    reminders = rig.events("dose.reminder")
    assert [e["data"]["reminder"] for e in reminders] == [1, 2, 3]
    assert [e["at"][11:16] for e in reminders] == ["14:00", "14:30", "15:00"]
    rig.press("2026-11-24T10:15:00")
    rig.at("2026-11-24T11:30:00")
    assert len(rig.events("dose.reminder")) == 3


# -- confirmation ----------------------------------------------------------------------------------


def test_unconfirmed_after_15_minutes_with_an_alert_then_still_confirmable(day):
    day.press("2026-11-24T09:20:00")  # sertraline and naltrexone, both in their windows
    day.at("2026-11-24T09:34:59")
    assert day.events("dose.unconfirmed") == []
    day.at("2026-11-24T09:35:00")
    unconfirmed = day.events("dose.unconfirmed")
    assert [(e["data"]["medication_id"], e["at"]) for e in unconfirmed] == [
        ("sertraline", "2026-11-24T14:35:00.000Z"), ("naltrexone", "2026-11-24T14:35:00.000Z")]
    alerts = [e["data"] for e in day.events("alert.raised") if e["data"]["kind"] == "dose_unconfirmed"]
    assert [a["events"] for a in alerts] == [[e["event_id"]] for e in unconfirmed]
    outcome = day.press("2026-11-24T12:00:00")
    assert outcome.feedback == "confirmed"
    assert [e["data"]["medication_id"] for e in day.events("dose.taken")] == ["sertraline", "naltrexone"]


def test_a_press_confirms_before_it_releases():
    rig = Rig(schedule(daily("a", 1, ["09:00"]), daily("b", 2, ["09:30"])), "2026-11-24T06:00:00",
              stock={"a": 5, "b": 5})
    rig.press("2026-11-24T08:45:00")  # releases a only (b opens 09:00)
    assert rig.press("2026-11-24T09:10:00").feedback == "confirmed"
    assert rig.released() == [("a", "2026-11-24T14:00:00Z")]
    assert rig.press("2026-11-24T09:11:00").feedback == "released"
    assert rig.released()[-1] == ("b", "2026-11-24T14:30:00Z")


def test_confirmation_ends_when_the_next_window_opens():
    rig = Rig(schedule(daily("a", 1, ["09:00", "21:00"])), "2026-11-24T06:00:00", stock={"a": 5})
    rig.press("2026-11-24T09:00:00")
    outcome = rig.press("2026-11-24T20:45:00")  # the 21:00 window is open: release it, not confirm 09:00
    assert outcome.feedback == "released"
    assert rig.events("dose.taken") == []
    assert rig.released()[-1] == ("a", "2026-11-25T02:00:00Z")


# -- never twice -------------------------------------------------------------------------------------


def test_a_dose_is_released_once_however_often_the_button_is_pressed(day):
    for minute in range(45, 60):
        day.press(f"2026-11-24T07:{minute}:00")
    assert day.released().count(("sertraline", "2026-11-24T13:00:00Z")) == 1


def test_crash_between_intent_and_servo_is_reported_uncertain_and_never_repeated(tmp_path):
    class PowerCut(BaseException):
        """Not an Exception: nothing in the engine may catch it, as nothing survives a real cut."""

    def cut(compartment, quantity):
        raise PowerCut()

    rig = Rig(contract_schedule(), "2026-11-24T06:00:00", stock={"sertraline": 5}, db=str(tmp_path / "d.db"),
              mover=cut)
    with pytest.raises(PowerCut):
        rig.press("2026-11-24T07:45:00")
    assert rig.store.open_releases()[0]["type"] == "dose.released"
    rig.mover = lambda c, q: rig.moves.append((c, q))
    rig.store.close()
    from dispenser.store import Store
    rig.store = Store.open(str(tmp_path / "d.db"), "disp-test")
    rig.restart("2026-11-24T07:47:00")
    uncertain = rig.events("dose.release_uncertain")
    assert len(uncertain) == 1 and uncertain[0]["data"]["scheduled_at"] == "2026-11-24T13:00:00Z"
    assert rig.events("alert.raised")[-1]["data"]["severity"] == "critical"
    assert rig.store.open_releases() == []
    rig.press("2026-11-24T07:48:00")  # confirms; never a second release
    rig.press("2026-11-24T07:49:00")
    assert rig.released() == [("sertraline", "2026-11-24T13:00:00Z")]
    assert rig.moves == []
    rig.restart("2026-11-24T07:50:00")
    assert len(rig.events("dose.release_uncertain")) == 1  # reported once, not at every start


def test_a_failing_servo_is_logged_alerted_and_not_retried():
    def broken(compartment, quantity):
        raise OSError("servo stalled")

    rig = Rig(contract_schedule(), "2026-11-24T06:00:00", stock={"sertraline": 5}, mover=broken)
    rig.press("2026-11-24T07:45:00")
    failed = rig.events("dose.release_failed")
    assert len(failed) == 1 and "servo stalled" in failed[0]["data"]["error"]
    assert rig.events("alert.raised")[-1]["data"]["kind"] == "release_failed"
    rig.press("2026-11-24T07:46:00")
    assert len(rig.released()) == 1
    rig.at("2026-11-24T11:00:00")
    missed = [e["data"]["medication_id"] for e in rig.events("dose.missed")]
    assert missed == ["naltrexone"]  # never stocked; the failed sertraline is its own final state


# -- catch-up after downtime ---------------------------------------------------------------------------


def test_windows_that_closed_while_off_become_missed_once_at_the_start(tmp_path):
    rig = Rig(contract_schedule(), "2026-11-24T06:00:00", stock={"sertraline": 5, "naltrexone": 5},
              db=str(tmp_path / "d.db"))
    rig.at("2026-11-24T07:00:00")
    started = rig.restart("2026-11-25T09:15:00")  # off for a day
    missed = rig.events("dose.missed")
    assert [(e["data"]["medication_id"], e["data"]["scheduled_at"]) for e in missed] == [
        ("sertraline", "2026-11-24T13:00:00Z"), ("naltrexone", "2026-11-24T14:00:00Z")]
    assert {e["at"] for e in missed} == {"2026-11-25T14:15:00.000Z"}  # logged at the start, not back-dated
    assert {e["data"]["while"] for e in missed} == {"device_off"}  # the person could not have taken them
    assert started.drafts[0].type == "device.started"
    # Today's windows are open: due, not missed.
    assert {e["data"]["scheduled_at"] for e in rig.events("dose.due")} >= {"2026-11-25T13:00:00Z"}
    rig.restart("2026-11-25T09:16:00")
    assert len(rig.events("dose.missed")) == 2


def test_a_window_that_closes_while_the_device_is_on_is_the_persons_miss(tmp_path):
    """Only windows that closed while the device was off (or waiting for the time) say so."""
    rig = Rig(contract_schedule(), "2026-11-24T06:00:00", stock={"sertraline": 5, "naltrexone": 5},
              db=str(tmp_path / "d.db"))
    rig.at("2026-11-24T10:30:00")  # on all morning: sertraline's window closed at 10:00 unanswered
    rig.restart("2026-11-24T11:30:00")  # off from 10:30: naltrexone's window closes at 11:00
    whiles = {e["data"]["medication_id"]: e["data"].get("while") for e in rig.events("dose.missed")}
    assert whiles == {"sertraline": None, "naltrexone": "device_off"}
    missed = {e["data"]["medication_id"]: e["event_id"] for e in rig.events("dose.missed")}
    alerts = [e["data"] for e in rig.events("alert.raised") if "missed" in e["data"]["kind"]]
    assert [(a["kind"], a["events"]) for a in alerts] == [
        ("dose_missed", [missed["sertraline"]]), ("doses_missed_while_unavailable", [missed["naltrexone"]])]
    assert alerts[1]["message"] == ("1 dose from compartment 2 was missed while the dispenser was off, so it "
                                    "could not give it: its window closed at 2026-11-24 11:00.")
    from dispenser.report import adherence
    reports = adherence(rig.events(), local("2026-11-24T00:00:00"), local("2026-11-25T00:00:00"), rig.tz)
    assert (reports["naltrexone"].missed, reports["naltrexone"].missed_unavailable) == (1, 1)
    assert (reports["sertraline"].missed, reports["sertraline"].missed_unavailable) == (1, 0)


def test_nothing_is_missed_retroactively_when_a_schedule_is_first_applied():
    rig = Rig(contract_schedule(), "2026-11-24T12:00:00", stock={})
    assert rig.events("dose.missed") == []


# -- as needed -------------------------------------------------------------------------------------------


def test_as_needed_interval_counts_releases_not_denials(day):
    assert day.hold("2026-11-24T13:00:00").feedback == "released"
    denied = day.hold("2026-11-24T18:00:00")
    assert denied.feedback == "denied" and denied.detail["reason"] == "interval"
    assert denied.detail["allowed_at"] == local("2026-11-24T19:00:00")
    assert day.hold("2026-11-24T19:00:00").feedback == "released"


def test_as_needed_rolling_maximum():
    rig = Rig(schedule(as_needed("p", 1, every_h=1, max_units=3)), "2026-11-24T06:00:00", stock={"p": 20})
    for hour in ("08", "09", "10"):
        assert rig.hold(f"2026-11-24T{hour}:00:00").feedback == "released"
    outcome = rig.hold("2026-11-25T07:59:59")
    assert outcome.detail["reason"] == "max_per_period"
    assert outcome.detail["allowed_at"] == local("2026-11-25T08:00:00")
    assert rig.hold("2026-11-25T08:00:00").feedback == "released"  # (now - 1 d, now] leaves 08:00 out


def test_repeated_denials_raise_a_misuse_alert(day):
    day.hold("2026-11-24T13:00:00")
    for minute in ("01", "02", "03"):
        day.hold(f"2026-11-24T13:{minute}:00")
    alerts = [e["data"] for e in day.events("alert.raised") if e["data"]["kind"] == "prn_denied_repeatedly"]
    assert len(alerts) == 1 and alerts[0]["severity"] == "warning"


def test_several_as_needed_medications_open_a_menu_unless_one_is_named():
    rig = Rig(schedule(as_needed("p", 1), as_needed("q", 2)), "2026-11-24T06:00:00", stock={"p": 5, "q": 5})
    outcome = rig.hold("2026-11-24T08:00:00")
    assert outcome.feedback == "menu" and outcome.detail["medications"] == ["p", "q"]
    assert rig.released() == []
    assert rig.hold("2026-11-24T08:00:01", "q").feedback == "released"
    assert rig.released() == [("q", "prn")]


# -- stock ---------------------------------------------------------------------------------------------------


def test_empty_compartment_releases_nothing_until_refilled_in_time(day):
    rig = Rig(contract_schedule(), "2026-11-24T06:00:00", stock={"sertraline": 0})
    assert rig.press("2026-11-24T07:45:00").feedback == "empty"
    assert rig.released() == []
    assert len(rig.events("stock.empty")) == 1
    rig.engine.refill(rig.now, "sertraline", 30)
    assert rig.press("2026-11-24T07:50:00").feedback == "released"
    assert rig.released() == [("sertraline", "2026-11-24T13:00:00Z")]


def test_quantity_above_stock_is_not_released():
    rig = Rig(schedule(daily("a", 1, ["09:00"], quantity=2)), "2026-11-24T06:00:00", stock={"a": 1})
    rig.press("2026-11-24T09:00:00")
    assert rig.released() == []
    assert rig.events("stock.empty")


def test_stock_low_once_until_refilled():
    rig = Rig(schedule(daily("a", 1, ["09:00"])), "2026-11-24T06:00:00", stock={"a": 4})
    rig.press("2026-11-24T09:00:00")  # 3 left, 3 days need 3: not low yet
    assert rig.events("stock.low") == []
    rig.press("2026-11-24T09:01:00")
    rig.press("2026-11-25T09:00:00")  # 2 left: low
    rig.press("2026-11-25T09:01:00")
    rig.press("2026-11-26T09:00:00")  # 1 left: still low, not reported again
    assert [e["data"]["remaining"] for e in rig.events("stock.low")] == [2]
    rig.press("2026-11-26T09:01:00")
    rig.press("2026-11-27T09:00:00")  # the last one: empty
    assert [e["data"]["remaining"] for e in rig.events("stock.empty")] == [0]


# -- schedule changes ---------------------------------------------------------------------------------------


def test_stale_and_unknown_compartment_schedules_are_refused(day):
    stale = day.engine.apply_schedule(day.now, contract_schedule(), "local")
    assert stale.feedback == "rejected" and stale.detail["reason"] == "stale_version"
    document = contract_schedule()
    document["version"] = 13
    document["medications"][0]["compartment"] = 9
    outcome = day.engine.apply_schedule(day.now, document, "local")
    assert outcome.detail["reason"] == "unknown_compartment"
    assert day.engine.view.schedule_version == 12
    assert [e["data"]["reason"] for e in day.events("schedule.rejected")] == ["stale_version", "unknown_compartment"]


def test_a_new_schedule_cannot_give_a_released_dose_again(day):
    day.press("2026-11-24T09:00:00")  # sertraline 08:00 released
    moved = contract_schedule()
    moved["version"] = 13
    moved["routine"]["MORN"] = "09:30"  # the clinic moves the morning dose later
    assert day.engine.apply_schedule(day.now, moved, "local").feedback == "applied"
    day.press("2026-11-24T09:40:00")
    day.press("2026-11-24T09:41:00")
    sertraline = [r for r in day.released() if r[0] == "sertraline"]
    assert sertraline == [("sertraline", "2026-11-24T13:00:00Z")]
    day.press("2026-11-25T09:30:00")
    assert ("sertraline", "2026-11-25T14:30:00Z") in day.released()  # tomorrow follows the new time


def test_a_due_dose_withdrawn_by_a_new_schedule_is_skipped(day):
    day.at("2026-11-24T07:40:00")
    document = contract_schedule()
    document["version"] = 13
    document["medications"] = document["medications"][1:]  # sertraline stopped
    day.engine.apply_schedule(day.now, document, "local")
    skipped = day.events("dose.skipped")
    assert [(e["data"]["medication_id"], e["data"]["reason"]) for e in skipped] == [("sertraline", "schedule_changed")]
    day.press("2026-11-24T07:45:00")
    assert day.released() == []


def test_the_log_time_never_runs_backwards(day):
    day.at("2026-11-24T08:00:00")
    day.engine.press(day.now - timedelta(hours=1))  # the wall clock was set back
    ats = [e["at"] for e in day.events()]
    assert ats == sorted(ats)


def test_a_refill_by_another_process_reaches_the_running_engine(tmp_path):
    """`dispenser refill` appends beside the daemon: one chain, and the daemon sees the stock."""
    from dispenser.engine import Engine
    from dispenser.store import Store
    rig = Rig(contract_schedule(), "2026-11-24T06:00:00", stock={"sertraline": 0}, db=str(tmp_path / "d.db"))
    other = Store.open(str(tmp_path / "d.db"), "disp-test")
    Engine(other, 8, "America/New_York").refill(rig.now, "sertraline", 5)
    other.close()
    assert rig.press("2026-11-24T07:45:00").feedback == "released"
    assert rig.engine.view.medication("sertraline").count == 4
    assert rig.store.verify()[0]
