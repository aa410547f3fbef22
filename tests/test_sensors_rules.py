"""The rules' decisions for the lid and the drop sensor, on the engine with no hardware at all:
a mover that reports the drop sensor's count, lid changes as engine inputs, and restarts that
rebuild the state from the log."""
from __future__ import annotations

from datetime import timedelta

from dispenser.inputs import PillNotSeen
from dispenser.logcheck import check_store
from dispenser.sensor_rules import REFILL_GRACE, RELEASE_GRACE
from support import Rig, as_needed, daily, local, schedule


class Chute:
    """A mover whose drop sensor sees nothing from the compartments in `jammed`."""

    def __init__(self):
        self.jammed: set[int] = set()
        self.moves: list[tuple[int, int]] = []

    def __call__(self, compartment: int, quantity: int) -> None:
        self.moves.append((compartment, quantity))
        if compartment in self.jammed:
            raise PillNotSeen(compartment, quantity, 0)


def rig(stock: int = 10, chute: Chute | None = None) -> Rig:
    return Rig(schedule(daily("sertraline", 1, ["08:00"]), as_needed("hydroxyzine", 3)), "2026-11-24T06:00:00",
               stock={"sertraline": stock, "hydroxyzine": 5}, mover=chute or Chute())


def test_reason_is_empty_exactly_when_the_count_reached_zero_with_the_release():
    for stock, reason in ((1, "empty"), (2, "jam"), (10, "jam")):
        chute = Chute()
        chute.jammed.add(1)
        device = rig(stock, chute)
        outcome = device.press("2026-11-24T08:00:00")
        assert outcome.feedback == "release_failed"
        assert [e["data"]["reason"] for e in device.events("dose.release_failed")] == [reason], stock


def test_the_failed_compartment_counts_zero_until_a_refill_and_then_gives_again():
    chute = Chute()
    chute.jammed.add(1)
    device = rig(chute=chute)
    device.press("2026-11-24T08:00:00")
    assert device.engine.view.stock[0].count == 0 and device.engine.view.stock[0].empty
    chute.jammed.clear()
    assert device.press("2026-11-25T08:00:00").feedback == "empty"  # the next day's dose waits for the refill
    device.engine.refill(device.now, "sertraline", 20)
    assert device.press("2026-11-25T08:01:00").feedback == "released"
    assert device.events("stock.empty") == []  # the failure's alert said it


def test_the_unseen_state_is_a_fold_of_the_log_and_survives_a_restart():
    chute = Chute()
    chute.jammed.add(1)
    device = rig(chute=chute)
    device.press("2026-11-24T08:00:00")
    before = device.engine.rules.state
    device.restart("2026-11-24T08:05:00")
    after = device.engine.rules.state
    assert after.loads[1].count == before.loads[1].count == 0
    record = after.doses[("sertraline", local("2026-11-24T08:00:00"))]
    assert record.status == "pending" and record.released is not None
    assert device.press("2026-11-24T08:06:00").feedback == "held"  # section 6 counts the unseen pill
    assert [e["data"]["reason"] for e in device.events("dose.held")] == ["already_given"]
    device.at("2026-11-25T06:00:00")
    assert check_store(device.store, until=device.now) == []


def test_the_log_checker_refuses_a_second_release_after_an_ordinary_servo_failure():
    """Only an unseen pill opens a dose again: a servo fault's dose stays final."""
    def broken(compartment: int, quantity: int) -> None:
        raise RuntimeError("stall")
    device = rig(chute=None)
    device.engine.mover = broken
    device.press("2026-11-24T08:00:00")
    failed = device.events("dose.release_failed")
    assert len(failed) == 1 and "reason" not in failed[0]["data"]
    assert device.press("2026-11-24T08:10:00").feedback in ("nothing_due", "too_early")
    assert len(device.events("dose.released")) == 1


def test_an_unexplained_opening_is_due_at_the_refill_grace_and_the_engine_wakes_for_it():
    device = rig()
    device.at("2026-11-24T10:00:00")
    device.engine.lid(device.now, opened=True)
    device.at("2026-11-24T10:04:00")
    device.engine.lid(device.now, opened=False)
    assert device.engine.next_wakeup(device.now) == local("2026-11-24T10:04:00") + REFILL_GRACE
    device.restart("2026-11-24T10:10:00")  # the opening still waits for a refill after a restart
    device.at("2026-11-24T10:19:00")
    alerts = [e for e in device.events("alert.raised") if e["data"]["kind"] == "lid_opened"]
    assert [a["at"][:19] for a in alerts] == ["2026-11-24T15:19:00"]
    assert alerts[0]["data"]["severity"] == "warning" and "10:00" in alerts[0]["data"]["message"]
    assert device.engine.next_wakeup(device.now) != local("2026-11-24T10:19:00")


def test_the_release_grace_is_measured_from_the_release():
    device = rig()
    device.hold("2026-11-24T13:00:00")  # as needed: a release too
    device.at("2026-11-24T13:00:00")
    device.now += RELEASE_GRACE + timedelta(seconds=1)
    device.engine.lid(device.now, opened=True)
    assert device.events("lid.opened")[0]["data"] == {}  # too long after it: not explained by it
