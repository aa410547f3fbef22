"""chain.judge's arguments: the stored event under the same id and its seq are always
passed, together; leaving the seq out is an error, never a silently skipped check."""
from __future__ import annotations

import pytest

from care_support import chained, taken
from dispenser.care import chain


def test_the_same_id_under_another_seq_is_a_fork_and_the_seq_cannot_be_left_out():
    first, second = chained("disp-0001", taken(2))
    moved = {**second, "event_id": first["event_id"]}      # seq 2 sent under seq 1's id
    new, findings = chain.judge("disp-0001", moved, {1: (chain.entry(first),)}, chain.entry(first), 1)
    forks = [finding.detail for finding in findings if finding.kind == "fork"]
    assert new and len(forks) == 1 and "stored before as seq 1" in forks[0]
    with pytest.raises(TypeError):
        chain.judge("disp-0001", moved, {1: (chain.entry(first),)}, chain.entry(first))  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="both or neither"):
        chain.judge("disp-0001", moved, {1: (chain.entry(first),)}, chain.entry(first), None)
    with pytest.raises(ValueError, match="both or neither"):
        chain.judge("disp-0001", moved, {}, None, 1)


def test_the_very_same_event_again_is_not_new():
    first = chained("disp-0001", taken(1))[0]
    assert chain.judge("disp-0001", first, {1: (chain.entry(first),)}, chain.entry(first), 1) == (False, [])
    assert chain.judge("disp-0001", first, {}, None, None) == (True, [])
