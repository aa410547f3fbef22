"""rules.copy_state: the engine's copy of the fold must be as independent as copy.deepcopy's."""
from __future__ import annotations

import copy
from dataclasses import fields, is_dataclass
from datetime import datetime, timezone

import pytest

from dispenser.rules import MissedTogether, State, copy_state
from harness.simulation import Simulation

IMMUTABLE = (str, int, float, bool, type(None), tuple, frozenset)


def shared_mutables(original: object, copied: object, path: str = "state") -> list[str]:
    """Paths of mutable objects (containers, non-frozen dataclasses) the copy shares with the original."""
    if isinstance(original, IMMUTABLE) or (is_dataclass(original) and original.__dataclass_params__.frozen):
        return []
    if type(original).__name__ == "datetime":
        return []
    found = [path] if original is copied else []
    if isinstance(original, dict):
        for key in original:
            found += shared_mutables(original[key], copied[key], f"{path}[{key!r}]")
    elif isinstance(original, list):
        for index, (a, b) in enumerate(zip(original, copied)):
            found += shared_mutables(a, b, f"{path}[{index}]")
    elif is_dataclass(original):
        for item in fields(original):
            if item.name != "schedule":  # the parsed schedule is frozen and shared on purpose
                found += shared_mutables(getattr(original, item.name), getattr(copied, item.name),
                                         f"{path}.{item.name}")
    return found


@pytest.mark.parametrize("seed", [2, 5, 9])
def test_a_copy_of_a_simulated_fold_equals_deepcopy_and_shares_nothing_mutable(seed: int) -> None:
    simulation = Simulation(seed, 12, unseen=0.2)
    simulation.run()
    assert simulation.engine is not None
    for state in (simulation.engine.rules.state, simulation.engine._folded):
        copied = copy_state(state)
        assert copied == copy.deepcopy(state, {id(state.schedule): state.schedule})
        assert copied.schedule is state.schedule
        assert shared_mutables(state, copied) == []


def test_every_mutable_field_of_a_state_is_copied_even_when_empty() -> None:
    """A field added to State later, as a container, fails here until copy_state copies it."""
    state = State()
    assert shared_mutables(state, copy_state(state)) == []
    assert copy_state(state) == state
    at = datetime(2026, 3, 1, tzinfo=timezone.utc)
    state.missed_together = MissedTogether(at, at, 1, ["e-1"], {2}, {"device_off"}, "e-1")
    assert shared_mutables(state, copy_state(state)) == []
    assert copy_state(state) == state
