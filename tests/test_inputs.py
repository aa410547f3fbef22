"""The daemon's inputs as types (dispenser/inputs.py): every kind has its case in the daemon's
`match`, the older string and tuple forms still arrive as the same inputs, and nothing put on
the queue is silently ignored."""
from __future__ import annotations

import dataclasses
import logging
import typing

import pytest

from dispenser import inputs
from dispenser.daemon import Daemon
from dispenser.engine import Engine
from dispenser.hardware import build_sim_hardware
from dispenser.inputs import (ChainCheckFailed, ConnectionChanged, Hold, Input, LidClosed, LidOpened, PillSeen, Press, Refill,
                              ScheduleMessage, Stop, Tick, UnknownInput, as_input)
from dispenser.store import Store
from support import contract_schedule, local

KINDS = typing.get_args(Input)


@pytest.fixture
def daemon():
    hw = build_sim_hardware(lambda item: None, compartments=8, sleep=lambda s: None)
    store = Store.open(":memory:", "disp-test")
    engine = Engine(store, 8, "America/New_York")
    now = local("2026-11-24T06:00:00")
    engine.apply_schedule(now, contract_schedule(), "local", stock={"sertraline": 28, "hydroxyzine": 10})
    made = Daemon(engine, hw, timezone_name="America/New_York", sleep=lambda s: None)
    made.start(now)
    yield made
    hw.close()
    store.close()


def example(kind: type) -> Input:
    """One input of each kind, with plausible fields."""
    values = {"medication": "hydroxyzine", "count": 3, "payload": b"{}", "seq": 7, "reason": "hash mismatch"}
    return kind(**{f.name: values[f.name] for f in dataclasses.fields(kind)})


def test_every_input_is_a_frozen_dataclass():
    assert len(KINDS) >= 10
    for kind in KINDS:
        assert dataclasses.is_dataclass(kind) and kind.__dataclass_params__.frozen, kind
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(example(kind), "x", 1)


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.__name__)
def test_every_kind_of_input_has_its_case_in_the_daemon(daemon, kind, monkeypatch):
    """`assert_never` at the end of the daemon's match raises for an input without a case: call
    the match directly, so a kind added to `Input` and forgotten in daemon.py fails here (and in mypy)."""
    faults: list = []
    monkeypatch.setattr(daemon.engine, "fault", lambda now, component, error: faults.append(error))
    daemon._handle(example(kind), local("2026-11-24T07:00:00"))
    # Only a broken chain is a fault: the clinic must hear of it (chaincheck.py).
    assert faults == (["hash chain broken at seq 7: hash mismatch"] if kind is ChainCheckFailed else [])


def test_a_forgotten_kind_reaches_assert_never(daemon):
    @dataclasses.dataclass(frozen=True)
    class Knock:
        """A new input nobody wrote a case for."""
    with pytest.raises(AssertionError):
        daemon._handle(Knock(), local("2026-11-24T07:00:00"))  # type: ignore[arg-type]


@pytest.mark.parametrize("old, new", [
    ("press", Press()), ("hold", Hold()), (("hold", "hydroxyzine"), Hold("hydroxyzine")), ("stop", Stop()),
    (("schedule", b"{}"), ScheduleMessage(b"{}")), (("refill", "sertraline", 3), Refill("sertraline", 3)),
    ("connection", ConnectionChanged()), ("lid_open", LidOpened()), ("lid_closed", LidClosed()),
    ("pill_drop", PillSeen()), ("tick", Tick()), (Press(), Press()),
])
def test_the_older_forms_arrive_as_the_same_inputs(old, new):
    assert as_input(old) == new


@pytest.mark.parametrize("junk", ["presss", ("hold", 3), ("refill", "x"), 42, None, ()])
def test_anything_else_is_refused_by_name(junk):
    with pytest.raises(UnknownInput):
        as_input(junk)


def test_junk_on_the_queue_is_said_and_the_daemon_goes_on(daemon, caplog):
    with caplog.at_level(logging.WARNING, logger="dispenser"):
        daemon.put("dance")
        daemon.handle(("refill", "x"), local("2026-11-24T07:00:00"))
    assert daemon.inputs.empty()
    assert [r.getMessage() for r in caplog.records] == ["not an input: 'dance'", "not an input: \"('refill', 'x')\""]
    daemon.handle("press", local("2026-11-24T07:45:00"))  # an older caller's press still presses
    assert [e["type"] for e in daemon.engine.store.events() if e["type"] == "dose.released"] == ["dose.released"]


def test_put_turns_the_older_forms_into_inputs(daemon):
    daemon.put("hold")
    daemon.put(("hold", "hydroxyzine"))
    assert [daemon.inputs.get_nowait(), daemon.inputs.get_nowait()] == [Hold(), Hold("hydroxyzine")]


def test_the_input_module_is_light():
    """The daemon's vocabulary imports nothing but the standard library."""
    source = inputs.__file__
    imports = [line for line in open(source, encoding="utf-8") if line.startswith(("import ", "from "))]
    assert all(line.split()[1] in ("__future__", "dataclasses", "typing") for line in imports), imports
