"""Builders shared by the tests: schedule documents and an engine on a clock the test moves."""
from __future__ import annotations

import copy
import itertools
import json
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from dispenser.engine import Engine
from dispenser.store import Store
from dispenser.virtual import EngineTicks, VirtualDevice

EXAMPLES = Path(__file__).resolve().parent / "data" / "examples"  # the contract's, in v2 meaning
DEMO = Path(__file__).resolve().parents[1] / "dispenser" / "demo"
NY = ZoneInfo("America/New_York")
UTC = ZoneInfo("UTC")

# `python -m dispenser`, but with Ctrl-C's handler put back first. A child inherits an ignored
# SIGINT, and pytest started as a background job of a non-interactive shell has SIGINT
# ignored: a test that stops its child with SIGINT would then wait for it in vain.
_WITH_CTRL_C = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
                "runpy.run_module('dispenser', run_name='__main__', alter_sys=True)")


def interruptible(*args: object) -> list[str]:
    """The command line of `python -m dispenser *args` for a child the test stops with SIGINT."""
    return [sys.executable, "-c", _WITH_CTRL_C, *(str(arg) for arg in args)]


def contract_schedule() -> dict:
    """The contract's example schedule (sertraline 08:00, naltrexone 09:00, hydroxyzine as needed)."""
    return json.loads((DEMO / "schedule.json").read_text())


def daily(med_id: str, compartment: int, times: list[str], quantity: int = 1,
          before: int = 30, after: int = 120) -> dict:
    """A medication given every day at local `times` ("HH:MM")."""
    return {
        "id": med_id, "name": med_id.title(), "compartment": compartment,
        "window": {"before_min": before, "after_min": after},
        "dosage": [{"timing": {"repeat": {"frequency": len(times), "period": 1, "periodUnit": "d",
                                          "timeOfDay": [f"{t}:00" for t in times]}},
                    "doseAndRate": [{"doseQuantity": {"value": quantity}}]}],
    }


def as_needed(med_id: str, compartment: int, every_h: float = 6, max_units: int = 3,
              per_unit: str = "d", per_value: int = 1, quantity: int = 1) -> dict:
    return {
        "id": med_id, "name": med_id.title(), "compartment": compartment,
        "dosage": [{"asNeededBoolean": True,
                    "timing": {"repeat": {"frequency": 1, "period": every_h, "periodUnit": "h"}},
                    "maxDosePerPeriod": {"numerator": {"value": max_units},
                                         "denominator": {"value": per_value, "unit": per_unit}},
                    "doseAndRate": [{"doseQuantity": {"value": quantity}}]}],
    }


def schedule(*medications: dict, version: int = 1, timezone: str = "America/New_York") -> dict:
    return {"schema": "dispenser.schedule/1", "version": version, "issued_at": "2026-11-20T09:00:00Z",
            "timezone": timezone, "medications": [copy.deepcopy(m) for m in medications]}


def local(text: str, tz: ZoneInfo = NY) -> datetime:
    """A local wall-clock time in `tz`, as aware UTC."""
    return datetime.fromisoformat(text).replace(tzinfo=tz).astimezone(UTC)


class Rig:
    """An engine on a real SQLite store and a clock that only the test moves."""

    def __init__(self, document: dict, start: str, stock: dict[str, int] | None = None,
                 db: str = ":memory:", compartments: int = 8, mover=None, tz: ZoneInfo = NY):
        self.tz = tz
        self.now = local(start, tz)
        self.db = db
        self.compartments = compartments
        self.moves: list[tuple[int, int]] = []
        self.mover = mover or (lambda compartment, quantity: self.moves.append((compartment, quantity)))
        counter = itertools.count(1)
        self.new_id = lambda: f"00000000-0000-4000-8000-{next(counter):012d}"
        self.store = Store.open(db, "disp-test")
        self.clock_trusted = lambda: True  # a test may swap in a ClockTrust's check
        self.engine = self._engine()
        self.device = VirtualDevice(self.now, boot=lambda: None)
        self.device.running = EngineTicks(self.engine)
        self.engine.start(self.now)
        outcome = self.engine.apply_schedule(self.now, document, "local")
        assert outcome.feedback == "applied", outcome.detail
        for medication, count in (stock or {}).items():
            self.engine.refill(self.now, medication, count)

    def _engine(self) -> Engine:
        return Engine(self.store, self.compartments, "America/New_York", mover=self.mover, new_id=self.new_id,
                      clock_trusted=lambda: self.clock_trusted())

    def at(self, text: str) -> datetime:
        """Move the clock to a local time, ticking through every moment that matters on the way."""
        target = local(text, self.tz)
        assert target >= self.now, "tests move the clock forward with at(); restart() may go back"
        self.device.true = self.now
        self.device.advance(target)
        self.now = self.device.true
        return self.now

    def press(self, text: str):
        self.at(text)
        return self.engine.press(self.now)

    def hold(self, text: str, medication: str | None = None):
        self.at(text)
        return self.engine.hold(self.now, medication)

    def restart(self, text: str | None = None):
        """A power cut: everything in memory goes; the engine starts again from the store."""
        if text is not None:
            self.now = local(text, self.tz)
        self.engine = self._engine()
        self.device.running = EngineTicks(self.engine)
        return self.engine.start(self.now)

    def events(self, *types: str) -> list[dict]:
        return [e for e in self.store.events() if not types or e["type"] in types]

    def released(self) -> list[tuple[str, str]]:
        return [(e["data"]["medication_id"], e["data"].get("scheduled_at", "prn"))
                for e in self.events("dose.released", "prn.released")]


class Memory:
    """The log's meta for one boot, as clocktrust.StoreMemory keeps it, without SQLite."""

    def __init__(self):
        self.saved = None

    def recall(self):
        return self.saved

    def remember(self, anchor):
        self.saved = anchor
