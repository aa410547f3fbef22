"""The engine's own promises: a failed input leaves the rules as the log says, and a
schedule the log refused never stands in for the one in force."""
from __future__ import annotations

import pytest

from dispenser.store import StoreError
from tests.support import Rig, contract_schedule


def test_a_refused_schedule_never_stands_in_for_the_one_in_force_after_a_failed_input(monkeypatch):
    rig = Rig(contract_schedule(), "2026-11-24T06:00:00", stock={"sertraline": 10})
    same_version = contract_schedule()
    same_version["medications"][0]["compartment"] = 5  # a different document claiming version 12
    assert rig.engine.apply_schedule(rig.now, same_version, "local").detail["reason"] == "stale_version"

    def full_disk(*args, **kwargs):
        raise StoreError("disk full")
    with monkeypatch.context() as patch:
        patch.setattr(rig.store, "append", full_disk)
        with pytest.raises(StoreError):
            rig.engine.fault(rig.now, "lcd", "gone")  # the rules are rebuilt from the log
    assert rig.engine.rules.state.schedule.medication("sertraline").compartment == 1
    assert rig.press("2026-11-24T07:45:00").feedback == "released"
    assert rig.moves == [(1, 1)]


def test_a_failed_input_leaves_nothing_behind_and_the_next_one_decides_afresh(monkeypatch):
    rig = Rig(contract_schedule(), "2026-11-24T06:00:00", stock={"sertraline": 10})
    rig.at("2026-11-24T07:45:00")
    seq = rig.engine.last_seq
    with monkeypatch.context() as patch:
        patch.setattr(rig.engine, "mover", lambda compartment, quantity: None)
        patch.setattr(rig.store, "append", lambda *a, **k: (_ for _ in ()).throw(StoreError("disk full")))
        with pytest.raises(StoreError):
            rig.engine.press(rig.now)
    assert rig.engine.last_seq == seq and rig.store.last_event()["seq"] == seq
    assert [dose.medication_id for dose in rig.engine.view.due] == ["sertraline"]  # still due, as the log says
    assert rig.engine.press(rig.now).feedback == "released" and rig.moves == [(1, 1)]
