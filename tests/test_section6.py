"""CONTRACT section 6 through the real engine and store: what may come out on the day a
regimen changes. Each test is a case from the issue that released on the old rules."""
from __future__ import annotations

import copy

from dispenser.engine import Engine
from dispenser.store import Store
from support import Rig, as_needed, daily, local, schedule

QUETIAPINE = {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "51272", "display": "quetiapine"}
LORAZEPAM = {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "6470", "display": "lorazepam"}


def med(base: dict, **fields) -> dict:
    medication = copy.deepcopy(base)
    medication.update(fields)
    return medication


def held(rig: Rig) -> list[tuple[str, str, str]]:
    return [(e["data"]["medication_id"], e["data"]["scheduled_at"], e["data"]["reason"])
            for e in rig.events("dose.held")]


def test_a_strength_switch_under_a_new_id_does_not_give_the_day_again():
    q100 = med(daily("quetiapine-100", 2, ["21:00"]), ingredient=QUETIAPINE, strength={"value": 100, "unit": "mg"})
    rig = Rig(schedule(q100), "2026-11-24T18:00:00", stock={"quetiapine-100": 10})
    assert rig.press("2026-11-24T20:45:00").feedback == "released"
    q200 = med(daily("quetiapine-200", 2, ["21:00"]), ingredient=QUETIAPINE, strength={"value": 200, "unit": "mg"})
    rig.at("2026-11-24T20:50:00")
    assert rig.engine.apply_schedule(rig.now, schedule(q200, version=2), "local").feedback == "applied"
    rig.engine.refill(rig.now, "quetiapine-200", 10)
    assert rig.press("2026-11-24T21:25:00").feedback == "confirmed"  # the 100 mg, taken
    assert rig.press("2026-11-24T21:26:00").feedback == "too_early"  # tomorrow's opens next
    assert rig.released() == [("quetiapine-100", "2026-11-25T02:00:00Z")]
    assert ("quetiapine-200", "2026-11-25T02:00:00Z", "day_limit") in held(rig)
    # The clinic hears once, with no drug name in the message.
    alerts = [e["data"] for e in rig.events("alert.raised") if e["data"]["kind"] == "dose_held"]
    assert len(alerts) == 1 and "quetiapine" not in alerts[0]["message"].lower()
    # The next day the new strength is given as planned.
    rig.press("2026-11-25T21:00:00")
    assert rig.released()[-1] == ("quetiapine-200", "2026-11-26T02:00:00Z")


def test_a_dose_moved_later_after_it_was_taken_is_held_not_given_again():
    rig = Rig(schedule(daily("sertraline", 1, ["08:00"])), "2026-11-24T06:00:00", stock={"sertraline": 10})
    assert rig.press("2026-11-24T07:45:00").feedback == "released"
    rig.at("2026-11-24T09:00:00")
    rig.engine.apply_schedule(rig.now, schedule(daily("sertraline", 1, ["13:00"]), version=2), "local")
    assert rig.press("2026-11-24T12:45:00").feedback == "too_early"  # tomorrow's opens next
    assert rig.released() == [("sertraline", "2026-11-24T13:00:00Z")]
    assert held(rig) == [("sertraline", "2026-11-24T18:00:00Z", "already_given")]
    # Held for good: never due, never reminded, never missed.
    rig.at("2026-11-24T20:00:00")
    later = [e["type"] for e in rig.events() if e["data"].get("scheduled_at") == "2026-11-24T18:00:00Z"]
    assert later == ["dose.held"]
    rig.press("2026-11-25T12:45:00")
    assert rig.released()[-1] == ("sertraline", "2026-11-25T18:00:00Z")


def test_a_corrected_schedule_time_zone_does_not_give_the_day_again():
    rig = Rig(schedule(daily("sertraline", 1, ["08:00"]), timezone="UTC"), "2026-11-24T02:00:00",
              stock={"sertraline": 10})
    assert rig.press("2026-11-24T02:45:00").feedback == "released"  # 07:45 UTC
    rig.engine.apply_schedule(rig.now, schedule(daily("sertraline", 1, ["08:00"]), version=2), "local")
    assert rig.press("2026-11-24T07:45:00").feedback == "too_early"  # 08:00 New York: held
    assert len(rig.released()) == 1
    assert held(rig)[0][2] == "already_given"


def test_a_corrected_device_time_zone_and_a_restart_do_not_give_the_day_again(tmp_path):
    """A schedule without a timezone takes the configured one; correcting it changes the clock
    times, never what a day may hold."""
    document = schedule(daily("sertraline", 1, ["08:00"]))
    del document["timezone"]
    path = str(tmp_path / "d.db")
    store = Store.open(path, "disp-test")
    engine = Engine(store, 8, "Europe/London")
    now = local("2026-11-24T02:00:00")
    engine.start(now)
    engine.apply_schedule(now, document, "local")
    engine.refill(now, "sertraline", 10)
    now = local("2026-11-24T03:05:00")  # 08:05 in London
    engine.tick(now)
    assert engine.press(now).feedback == "released"
    store.close()
    store = Store.open(path, "disp-test")
    engine = Engine(store, 8, "America/New_York")  # the config corrected
    now = local("2026-11-24T07:45:00")
    engine.start(now)
    outcome = engine.press(now)
    assert outcome.feedback != "released"
    released = [e for e in store.events() if e["type"] == "dose.released"]
    assert len(released) == 1
    assert [e["data"]["reason"] for e in store.events() if e["type"] == "dose.held"] == ["already_given"]


def test_swapped_compartments_give_nothing_until_refilled_with_what_they_now_hold():
    first = schedule(daily("sertraline", 1, ["08:00"]), daily("lithium", 2, ["08:00"]))
    rig = Rig(first, "2026-11-24T06:00:00", stock={"sertraline": 10, "lithium": 10})
    swapped = schedule(daily("sertraline", 2, ["08:00"]), daily("lithium", 1, ["08:00"]), version=2)
    rig.engine.apply_schedule(rig.now, swapped, "local")
    outcome = rig.press("2026-11-24T08:00:00")
    assert outcome.feedback == "held" and outcome.detail["reason"] == "unloaded"
    assert rig.moves == [] and rig.released() == []
    assert sorted(r for _, _, r in held(rig)) == ["unloaded", "unloaded"]
    rig.engine.refill(rig.now, "sertraline", 5)  # compartment 2 now holds sertraline
    assert rig.press("2026-11-24T08:01:00").feedback == "released"
    assert rig.moves == [(2, 1)] and rig.released() == [("sertraline", "2026-11-24T13:00:00Z")]


def test_a_medication_moved_to_an_empty_compartment_is_held_not_logged_taken():
    rig = Rig(schedule(daily("sertraline", 1, ["08:00"])), "2026-11-24T06:00:00", stock={"sertraline": 10})
    rig.engine.apply_schedule(rig.now, schedule(daily("sertraline", 4, ["08:00"]), version=2), "local")
    assert rig.press("2026-11-24T08:00:00").feedback == "held"
    assert rig.press("2026-11-24T08:01:00").feedback == "held"
    assert rig.events("dose.taken", "dose.released") == [] and rig.moves == []
    assert rig.engine.rules.state.stock["sertraline"] == 0


def test_a_compartment_keeps_its_load_when_the_schedule_keeps_its_medication():
    rig = Rig(schedule(daily("sertraline", 1, ["08:00"])), "2026-11-24T06:00:00", stock={"sertraline": 10})
    rig.engine.apply_schedule(rig.now, schedule(daily("sertraline", 1, ["09:00"]), version=2), "local")
    assert rig.press("2026-11-24T09:00:00").feedback == "released"
    assert rig.engine.rules.state.stock["sertraline"] == 9


def test_as_needed_limits_hold_across_a_product_switch():
    """Lorazepam at most 2 mg a day: a new product id does not reset the interval or the maximum."""
    old = med(as_needed("lorazepam-a", 3, every_h=4, max_units=2), ingredient=LORAZEPAM,
              strength={"value": 1, "unit": "mg"})
    rig = Rig(schedule(old), "2026-11-24T06:00:00", stock={"lorazepam-a": 10})
    assert rig.hold("2026-11-24T08:00:00").feedback == "released"
    assert rig.hold("2026-11-24T12:00:00").feedback == "released"
    new = med(as_needed("lorazepam-b", 4, every_h=4, max_units=2), ingredient=LORAZEPAM,
              strength={"value": 1, "unit": "mg"})
    rig.engine.apply_schedule(rig.now, schedule(new, version=2), "local")
    rig.engine.refill(rig.now, "lorazepam-b", 10)
    outcome = rig.hold("2026-11-24T13:00:00")
    assert outcome.feedback == "denied" and outcome.detail["reason"] == "interval"
    outcome = rig.hold("2026-11-24T18:00:00")
    assert outcome.feedback == "denied" and outcome.detail["reason"] == "max_per_period"
    assert outcome.detail["allowed_at"] == local("2026-11-25T08:00:00")
    assert len(rig.released()) == 2
    assert rig.hold("2026-11-25T08:00:00").feedback == "released"


def test_as_needed_maximum_is_counted_in_the_ingredient_across_strengths():
    """2 mg a day: one 2 mg tablet of another product leaves nothing for a 1 mg one."""
    two = med(as_needed("lorazepam-2", 3, every_h=1, max_units=1), ingredient=LORAZEPAM,
              strength={"value": 2, "unit": "mg"})
    one = med(as_needed("lorazepam-1", 4, every_h=1, max_units=2), ingredient=LORAZEPAM,
              strength={"value": 1, "unit": "mg"})
    rig = Rig(schedule(two, one), "2026-11-24T06:00:00", stock={"lorazepam-2": 5, "lorazepam-1": 5})
    assert rig.hold("2026-11-24T08:00:00", "lorazepam-2").feedback == "released"
    outcome = rig.hold("2026-11-24T10:00:00", "lorazepam-1")
    assert outcome.feedback == "denied" and outcome.detail["reason"] == "max_per_period"


def test_a_wide_window_never_gives_two_days_a_minute_apart():
    wide = daily("olanzapine", 1, ["12:00"], before=720, after=720)
    rig = Rig(schedule(wide), "2026-11-24T06:00:00", stock={"olanzapine": 10})
    assert rig.press("2026-11-24T23:59:00").feedback == "released"
    rig.press("2026-11-24T23:59:30")  # confirmed
    outcome = rig.press("2026-11-25T00:00:00")
    assert outcome.feedback == "held" and outcome.detail["reason"] == "min_gap"
    assert outcome.detail["allowed_at"] == local("2026-11-25T11:59:00")
    assert len(rig.released()) == 1
    # The held dose is not lost: it goes out once the gap has passed, inside its window.
    assert rig.press("2026-11-25T11:59:00").feedback == "released"
    assert ("olanzapine", "2026-11-25T17:00:00Z", "min_gap") in held(rig)


def test_separate_from_keeps_two_ingredients_apart_either_way():
    calcium = {"code": "1897"}
    lithium = med(daily("lithium", 1, ["10:00"], after=360), ingredient={"code": "6448"},
                  separate_from=[{"ingredient": "1897", "hours": 4}])
    antacid = med(daily("antacid", 2, ["08:00"], after=600), ingredient=calcium)
    rig = Rig(schedule(lithium, antacid), "2026-11-24T06:00:00", stock={"lithium": 10, "antacid": 10})
    assert rig.press("2026-11-24T08:00:00").feedback == "released"
    rig.press("2026-11-24T08:01:00")
    outcome = rig.press("2026-11-24T10:00:00")
    assert outcome.feedback == "held" and outcome.detail["reason"] == "separation"
    assert outcome.detail["allowed_at"] == local("2026-11-24T12:00:00")
    assert rig.press("2026-11-24T12:00:00").feedback == "released"
    # And the other way round: the next day lithium first holds the antacid.
    rig.press("2026-11-24T12:01:00")
    rig.press("2026-11-25T07:55:00")  # nothing due for lithium yet; antacid due
    assert rig.released()[-1] == ("antacid", "2026-11-25T13:00:00Z")


def test_doses_of_one_ingredient_planned_together_go_out_together():
    a = med(daily("quetiapine-100", 1, ["21:00"]), ingredient=QUETIAPINE, strength={"value": 100, "unit": "mg"})
    b = med(daily("quetiapine-50", 2, ["21:00"]), ingredient=QUETIAPINE, strength={"value": 50, "unit": "mg"})
    rig = Rig(schedule(a, b), "2026-11-24T18:00:00", stock={"quetiapine-100": 5, "quetiapine-50": 5})
    outcome = rig.press("2026-11-24T21:00:00")
    assert outcome.feedback == "released" and sorted(outcome.detail["medications"]) == \
        ["quetiapine-100", "quetiapine-50"]


def test_a_dose_the_clinic_adds_for_today_is_given_not_lost():
    """The added 10:00 dose's window overlaps the 08:00 one already given: it is the day's
    second planned dose, given once the minimum gap (half of 2 h) has passed."""
    rig = Rig(schedule(daily("sertraline", 1, ["08:00"])), "2026-11-24T06:00:00", stock={"sertraline": 10})
    rig.press("2026-11-24T08:05:00")
    rig.press("2026-11-24T08:06:00")
    rig.at("2026-11-24T09:00:00")
    rig.engine.apply_schedule(rig.now, schedule(daily("sertraline", 1, ["08:00", "10:00"]), version=2), "local")
    assert rig.press("2026-11-24T09:30:00").feedback == "released"
    assert rig.released() == [("sertraline", "2026-11-24T13:00:00Z"), ("sertraline", "2026-11-24T15:00:00Z")]


def test_the_screen_does_not_offer_a_dose_a_press_would_hold():
    wide = daily("olanzapine", 1, ["12:00"], before=720, after=720)
    rig = Rig(schedule(wide), "2026-11-24T06:00:00", stock={"olanzapine": 10})
    rig.press("2026-11-24T23:59:00")
    rig.press("2026-11-24T23:59:30")
    rig.at("2026-11-25T00:00:00")
    assert rig.engine.rules.releasable(rig.now) == []


def test_old_releases_are_kept_as_one_mark_a_day_and_never_leave_a_rolling_period_early():
    from datetime import timedelta
    from fractions import Fraction

    from dispenser.limits import Mark, compact
    start = local("2026-11-01T08:00:00")
    marks = [Mark(at=start + timedelta(hours=6 * i), amount=Fraction(1), unit="mg", medication_id="a",
                  scheduled_at=None) for i in range(40)]  # 10 days, 4 a day
    cut = start + timedelta(days=8)
    kept = compact(marks, cut)
    recent = [m for m in marks if m.at >= cut]
    assert kept[-len(recent):] == recent
    old = kept[:-len(recent)]
    assert len(old) < len(marks) - len(recent)
    assert sum(m.amount for m in kept) == sum(m.amount for m in marks)
    # Each merged mark stands at its day's last release: at least as late as any it merged.
    for item in marks:
        if item.at < cut:
            merged = next(m for m in old if m.at.date() == item.at.date())
            assert merged.at >= item.at
    assert compact(kept, cut) == kept  # compacting again changes nothing


def test_narrowing_a_window_never_withdraws_the_dose_being_reminded_about_in_silence():
    rig = Rig(schedule(daily("sertraline", 1, ["08:00"])), "2026-11-24T06:00:00", stock={"sertraline": 10})
    rig.at("2026-11-24T08:40:00")  # due and reminded, not yet taken
    narrow = schedule(daily("sertraline", 1, ["08:00"], before=10, after=30), version=2)
    assert rig.engine.apply_schedule(rig.now, narrow, "local").feedback == "applied"
    [skipped] = rig.events("dose.skipped")
    alerts = [e["data"] for e in rig.events("alert.raised") if e["data"]["kind"] == "dose_withdrawn"]
    assert len(alerts) == 1 and alerts[0]["events"] == [skipped["event_id"]]
    assert "08:00" in alerts[0]["message"] and "compartment 1" in alerts[0]["message"]


def test_a_separation_declared_on_one_product_holds_every_product_of_the_ingredient():
    """Found by the simulation: lithium-a names calcium, lithium-b does not; both are lithium."""
    lithium_a = med(daily("lithium-a", 1, ["06:00"]), ingredient={"code": "6448"},
                    separate_from=[{"ingredient": "1897", "hours": 4}])
    lithium_b = med(daily("lithium-b", 2, ["10:00"], after=360), ingredient={"code": "6448"})
    antacid = med(daily("antacid", 3, ["08:00"]), ingredient={"code": "1897"})
    rig = Rig(schedule(lithium_a, lithium_b, antacid), "2026-11-24T07:00:00",
              stock={"lithium-a": 5, "lithium-b": 5, "antacid": 5})
    assert rig.press("2026-11-24T08:00:00").feedback == "released"
    rig.press("2026-11-24T08:01:00")
    outcome = rig.press("2026-11-24T10:00:00")
    assert outcome.feedback == "held" and outcome.detail["reason"] == "separation"


def test_a_compartment_waiting_for_its_refill_is_told_once_not_at_every_dose():
    first = schedule(daily("sertraline", 1, ["08:00", "20:00"]), daily("lithium", 2, ["08:00", "20:00"]))
    rig = Rig(first, "2026-11-24T06:00:00", stock={"sertraline": 10, "lithium": 10})
    swapped = schedule(daily("sertraline", 2, ["08:00", "20:00"]), daily("lithium", 1, ["08:00", "20:00"]), version=2)
    rig.engine.apply_schedule(rig.now, swapped, "local")
    for day in ("24", "25", "26"):
        rig.press(f"2026-11-{day}T08:05:00")
        rig.press(f"2026-11-{day}T20:05:00")
    assert len([h for h in held(rig) if h[2] == "unloaded"]) == 12  # every dose held, and logged
    alerts = [e["data"] for e in rig.events("alert.raised") if e["data"]["kind"] == "dose_held"]
    assert sorted(a["message"].split("compartment ")[1][0] for a in alerts) == ["1", "2"]  # once each
    rig.engine.refill(rig.now, "sertraline", 5)
    rig.engine.apply_schedule(rig.now, schedule(daily("sertraline", 2, ["08:00", "20:00"]),
                                                daily("lithium", 1, ["08:00", "20:00"]),
                                                daily("folate", 3, ["08:00"]), version=3), "local")
    rig.press("2026-11-27T08:05:00")  # compartment 1 still waits: the new schedule tells it again, once
    alerts = [e["data"] for e in rig.events("alert.raised") if e["data"]["kind"] == "dose_held"]
    assert len(alerts) == 4 and rig.released()[-1][0] == "sertraline"
