"""The screens as the real daemon puts them on the glass, through a day at 16x2 and 20x4:
the schedule's long names and `display` names, every line whole on the emulated HD44780."""
from __future__ import annotations

import copy

import pytest

from dispenser.daemon import Daemon
from dispenser.engine import Engine
from dispenser.hardware import build_sim_hardware
from dispenser.lcd_fit import fit_name
from dispenser.store import Store
from support import contract_schedule, local

SIZES = [(16, 2), (20, 4)]
LONG = "Quetiapine fumarate extended-release 300 mg"


def document() -> dict:
    """The contract's example: sertraline with a `display`, naltrexone with a long name, and
    two as-needed medications (so a hold opens the menu), one with a `display`."""
    doc = contract_schedule()
    meds = {m["id"]: m for m in doc["medications"]}
    meds["sertraline"]["display"] = "Sertraline 50"
    meds["naltrexone"]["name"] = LONG
    second = copy.deepcopy(meds["hydroxyzine"])
    second.update(id="propranolol", name="Propranolol hydrochloride 10 mg", compartment=4, display="Propranolol 10")
    doc["medications"].append(second)
    return doc


class Glass:
    """A simulated device whose daemon the test drives; every redraw is checked for a cut line."""

    def __init__(self, size: tuple[int, int], stock: dict[str, int]) -> None:
        self.cols, self.rows = size
        self.hw = build_sim_hardware(lambda item: None, compartments=8, lcd_size=size, sleep=lambda s: None)
        self.now = local("2026-11-24T06:00:00")
        self.engine = Engine(Store.open(":memory:", "disp-glass"), 8, "America/New_York")
        self.engine.apply_schedule(self.now, document(), "local", stock=stock)
        self.daemon = Daemon(self.engine, self.hw, timezone_name="America/New_York", checkin=True,
                             sleep=lambda s: None)
        self.seen: list[list[str]] = []
        render = self.daemon.render

        def checked(now) -> None:  # every screen the daemon draws, as it draws it
            render(now)
            lines = self.daemon._shown
            assert all(len(line) <= self.cols for line in lines), f"cut by the glass: {lines}"
            assert self.glass()[:len(lines)] == [line.ljust(self.cols) for line in lines][:self.rows]
            self.seen.append([row.rstrip() for row in self.glass()])

        self.daemon.render = checked
        self.daemon.start(self.now)

    def glass(self) -> list[str]:
        return self.hw.lcd.emulator.lines()

    def at(self, text: str) -> list[str]:
        self.now = local(text)
        self.daemon.advance(self.now)
        return self.seen[-1][:2]

    def do(self, item: str, text: str) -> list[str]:
        self.at(text)
        self.daemon.handle(item, self.now)
        return self.seen[-1][:2]


@pytest.fixture(params=SIZES, ids=lambda size: f"{size[0]}x{size[1]}")
def device(request):
    made = Glass(request.param, {"sertraline": 3, "naltrexone": 10, "hydroxyzine": 10, "propranolol": 10})
    yield made
    made.hw.close()


def test_a_day_on_the_glass(device):
    cols = device.cols
    assert device.seen[-1][:2] == ["06:00 Next 08:00", "Sertraline 50"]  # the display name, whole
    assert device.do("press", "2026-11-24T07:10:00") == ["Too early", "Opens at 07:30"]
    due = device.at("2026-11-24T07:30:00")
    assert due == (["Due: Sertraline 50", "Press to release"] if cols == 20 else ["Sertraline 50", "Press to release"])
    assert device.do("press", "2026-11-24T07:45:00") == ["Take your pill", "Press when taken"]
    assert device.do("press", "2026-11-24T07:46:00") == ["How do you feel?", "< 3 okay >"]  # confirmed: the check-in
    assert device.do("press", "2026-11-24T07:46:10") == ["How do you feel?", "< 4 good >"]
    assert device.do("hold", "2026-11-24T07:46:20") == ["Side effects?", "< none >"]
    assert device.do("hold", "2026-11-24T07:46:30") == ["Thank you!", "Answer saved"]
    # Stock ran low (3 -> 2): the refill line, and the next dose's time kept on the top line.
    assert device.at("2026-11-24T08:20:00") == ["08:20 Next 09:00", "Refill box 1"]
    assert device.at("2026-11-24T09:00:00") == [fit_name(LONG, cols), "Press to release"]
    # The as-needed menu: two choices, named by display; hold picks, the screen tells the truth.
    assert device.do("hold", "2026-11-24T13:00:00")[0] in ("> Hydroxyzine 25 mg", "Hydroxyzine 25mg")
    assert device.do("press", "2026-11-24T13:00:05")[0] == "> Propranolol 10"
    assert device.do("hold", "2026-11-24T13:00:10") == ["Take your pill", "No need to press"]
    assert device.do("hold", "2026-11-24T14:00:00")[0] in ("> Hydroxyzine 25 mg", "Hydroxyzine 25mg")
    assert device.do("press", "2026-11-24T14:00:05")[0] == "> Propranolol 10"
    assert device.do("hold", "2026-11-24T14:00:10") == ["As-needed locked", "until 19:00"]
    if device.rows == 4:
        assert device.seen[-1][2:] == ["Tue 24 Nov 14:00", "Refill box 1"]
    # Naltrexone was never taken: missed (at 11:00, under the menu), said with its time.
    assert any(lines[:2] == ["Missed: 09:00", "Clinic informed"] for lines in device.seen)
    assert all(all(len(row) <= cols for row in lines) for lines in device.seen)
