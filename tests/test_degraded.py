"""Degraded disk and hardware: what the device does when a part of it fails.

A full disk must never let a dose out that the log could not record (the log is the
only proof of what was given, and what stops a second release). A failing LCD, buzzer
or servo must not stop the device: it logs `device.fault` / `dose.release_failed` with
an alert and goes on with what still works. (tests/test_daemon.py covers an LCD that
always fails and a servo that always fails; these cover the rest.)
"""
from __future__ import annotations

import itertools
from collections import Counter

import pytest

from dispenser.daemon import Daemon
from dispenser.engine import Engine
from dispenser.hardware import build_sim_hardware
from dispenser.store import Store, StoreError
from support import Rig, as_needed, contract_schedule, daily, local, schedule

DOCUMENT = schedule(daily("a", 1, ["08:00"]), daily("b", 2, ["08:00"]), as_needed("p", 3, every_h=1, max_units=10))
STOCK = {"a": 10, "b": 10, "p": 10}


# --- a full disk ----------------------------------------------------------------------------


class FullDisk:
    """SQLITE_FULL on demand: `PRAGMA max_page_count` at the file's current size, on the store's own connection."""

    def __init__(self, store: Store):
        self.conn = store.db.conn

    def fill(self, spare_pages: int = 0) -> None:
        pages = self.conn.execute("PRAGMA page_count").fetchone()[0]
        self.conn.execute(f"PRAGMA max_page_count = {pages + spare_pages}")

    def free(self) -> None:
        self.conn.execute("PRAGMA max_page_count = 1073741823")


def fill_the_last_page(rig: Rig, disk: FullDisk) -> None:
    """Fill the free space inside the file's pages too, so that the very next append needs a new page."""
    disk.fill()
    with pytest.raises(StoreError, match="full"):
        for _ in range(1000):
            rig.engine.fault(rig.now, "filler", "x" * 300)


def moves_match_the_log(rig: Rig) -> None:
    """Every servo move has its own release in the log: nothing went out unrecorded."""
    released = Counter((e["data"]["compartment"], e["data"]["quantity"])
                       for e in rig.events("dose.released", "prn.released"))
    assert not Counter(rig.moves) - released, (rig.moves, released)


def test_a_full_disk_releases_nothing_and_the_next_press_after_space_returns_works(tmp_path):
    rig = Rig(DOCUMENT, "2026-11-24T06:00:00", STOCK, db=str(tmp_path / "d.db"))
    disk = FullDisk(rig.store)
    rig.at("2026-11-24T07:59:00")
    fill_the_last_page(rig, disk)
    seq = rig.store.last_event()["seq"]

    with pytest.raises(StoreError, match="full"):
        rig.press("2026-11-24T08:00:00")
    with pytest.raises(StoreError, match="full"):
        rig.engine.hold(rig.now)
    assert rig.moves == []  # the intent could not be logged, so nothing moved
    assert rig.store.last_event()["seq"] == seq  # and nothing half-written
    assert rig.engine.rules.releasable(rig.now)  # the refused press did not count the doses as given

    disk.free()
    rig.engine.press(rig.now)
    assert sorted(rig.moves) == [(1, 1), (2, 1)]
    rig.engine.hold(rig.now)
    assert sorted(rig.moves) == [(1, 1), (2, 1), (3, 1)]
    rig.press("2026-11-24T08:01:00")
    assert len(rig.events("dose.taken")) == 2
    assert len(rig.moves) == 3
    assert rig.store.verify()[0]
    rig.restart("2026-11-24T08:05:00")  # the log alone still tells the whole story
    assert rig.events("dose.release_uncertain") == []
    rig.press("2026-11-24T08:06:00")
    assert len(rig.moves) == 3


@pytest.mark.parametrize("spare", [0, 1, 2, 3])
def test_whatever_fits_on_a_nearly_full_disk_moves_only_what_was_logged(tmp_path, spare):
    """A few pages left: some appends fit, some do not; every move still has its logged intent."""
    rig = Rig(DOCUMENT, "2026-11-24T06:00:00", STOCK, db=str(tmp_path / "d.db"))
    disk = FullDisk(rig.store)
    rig.at("2026-11-24T07:59:00")
    fill_the_last_page(rig, disk)
    disk.free()
    disk.fill(spare)
    failures = 0
    for minute, action in itertools.product(range(0, 40, 4), ("press", "hold")):
        rig.now = local(f"2026-11-24T08:{minute:02d}:00")
        try:
            rig.engine.tick(rig.now)
            getattr(rig.engine, action)(rig.now)
        except StoreError:
            failures += 1
        moves_match_the_log(rig)
    assert failures > 0 or spare == 3  # with no or little room, some appends must have been refused
    disk.free()
    rig.restart("2026-11-24T09:00:00")
    rig.engine.press(rig.now)
    rig.engine.hold(rig.now)
    moves_match_the_log(rig)
    scheduled = [(e["data"]["medication_id"], e["data"]["scheduled_at"]) for e in rig.events("dose.released")]
    assert len(scheduled) == len(set(scheduled)) == 2  # each dose once, in the end
    assert rig.store.verify()[0]


def test_a_full_disk_at_the_end_of_a_release_never_repeats_it(tmp_path):
    """The intent is logged and the servo moved, but closing the intent fails: reported uncertain, not repeated."""
    rig = Rig(DOCUMENT, "2026-11-24T06:00:00", STOCK, db=str(tmp_path / "d.db"))
    failing = {"on": True}
    complete = rig.store.complete_release

    def cannot_complete(event_id, outcome, now):
        if failing["on"]:
            raise StoreError("d.db: cannot complete release: database or disk is full")
        complete(event_id, outcome, now)

    rig.store.complete_release = cannot_complete
    with pytest.raises(StoreError):
        rig.press("2026-11-24T08:00:00")
    assert rig.moves == [(1, 1)]  # the first dose went out, the second was never attempted
    failing["on"] = False
    rig.restart("2026-11-24T08:02:00")
    uncertain = rig.events("dose.release_uncertain")
    assert len(uncertain) == 2  # both intents were open: neither will be given again
    rig.press("2026-11-24T08:03:00")
    rig.press("2026-11-24T08:04:00")
    assert rig.moves == [(1, 1)]
    assert len(rig.events("dose.released")) == 2
    assert rig.store.verify()[0]


# --- the daemon with failing parts -------------------------------------------------------------


class Device:
    """The daemon on simulated hardware with the contract's schedule, driven on a moved clock."""

    def __init__(self):
        self.hw = build_sim_hardware(lambda item: None, compartments=8, sleep=lambda s: None)
        self.store = Store.open(":memory:", "disp-test")
        counter = itertools.count(1)
        self.engine = Engine(self.store, 8, "America/New_York",
                             new_id=lambda: f"00000000-0000-4000-8000-{next(counter):012d}")
        self.now = local("2026-11-24T06:00:00")
        self.engine.apply_schedule(self.now, contract_schedule(), "local")
        for medication, count in {"sertraline": 28, "naltrexone": 10, "hydroxyzine": 10}.items():
            self.engine.refill(self.now, medication, count)
        self.daemon = Daemon(self.engine, self.hw, timezone_name="America/New_York", sleep=lambda s: None)
        self.daemon.start(self.now)

    def at(self, text: str) -> list[str]:
        self.now = local(text)
        self.daemon.advance(self.now)
        return self.lcd()

    def do(self, text: str, item) -> list[str]:
        self.at(text)
        self.daemon.handle(item, self.now)
        return self.lcd()

    def lcd(self) -> list[str]:
        return [line.rstrip() for line in self.hw.lcd.emulator.lines()]

    def events(self, kind: str) -> list[dict]:
        return [e for e in self.store.events() if e["type"] == kind]

    def alerts(self) -> list[str]:
        return [e["data"]["kind"] for e in self.events("alert.raised")]

    def close(self) -> None:
        self.hw.close()


@pytest.fixture
def device():
    made = Device()
    yield made
    made.close()


def test_an_lcd_that_fails_then_recovers_shows_the_right_screen_again(device):
    show = device.hw.lcd.show
    broken = {"on": True}

    def flaky(lines):
        if broken["on"]:
            raise OSError(121, "Remote I/O error")  # what an I2C backpack that lost power raises
        show(lines)

    device.hw.lcd.show = flaky
    device.at("2026-11-24T07:00:00")
    device.do("2026-11-24T07:45:00", "press")  # dispensing goes on with the screen dark
    assert [f["data"]["component"] for f in device.events("device.fault")] == ["lcd"]
    assert "OSError" in device.events("device.fault")[0]["data"]["error"]
    assert len(device.events("dose.released")) == 1
    broken["on"] = False
    assert device.at("2026-11-24T07:46:00")[0].startswith("Take")  # the current screen, not a stale one
    assert len(device.events("device.fault")) == 1  # one fault per outage, not one per redraw
    device.do("2026-11-24T07:47:00", "press")
    assert [e["data"]["medication_id"] for e in device.events("dose.taken")] == ["sertraline"]
    broken["on"] = True
    device.at("2026-11-24T08:30:00")
    assert len(device.events("device.fault")) == 2  # a new outage after a recovery is reported again
    assert device.alerts().count("device_fault") == 2


def test_a_failing_buzzer_is_a_fault_and_reminders_and_dispensing_go_on(device):
    def broken(*args, **kwargs):
        raise OSError("buzzer pin stuck")

    device.hw.buzzer.pattern = broken
    device.hw.buzzer.off = broken
    device.at("2026-11-24T08:31:00")  # a reminder is due: the buzzer would sound
    faults = device.events("device.fault")
    assert [f["data"]["component"] for f in faults] == ["buzzer"]
    assert device.alerts().count("device_fault") == 1
    assert device.events("dose.reminder")
    device.do("2026-11-24T08:32:00", "press")
    device.do("2026-11-24T08:33:00", "press")
    assert [e["data"]["medication_id"] for e in device.events("dose.taken")] == ["sertraline", "naltrexone"]
    assert len(device.events("device.fault")) == 1


def test_a_failing_led_is_a_fault_and_dispensing_goes_on(device):
    def broken(*args, **kwargs):
        raise RuntimeError("LED driver gone")

    device.hw.led.on = broken
    device.hw.led.pattern = broken
    device.do("2026-11-24T07:45:00", "press")
    assert [f["data"]["component"] for f in device.events("device.fault")] == ["led"]
    assert len(device.events("dose.released")) == 1


def test_a_servo_failing_on_one_compartment_leaves_the_others_working(device):
    release = device.hw.compartments.release

    def jammed_one(compartment, quantity, sleep=None):
        if compartment == 1:
            raise OSError("servo 1 jammed")
        release(compartment, quantity, sleep=lambda s: None)

    device.hw.compartments.release = jammed_one
    device.do("2026-11-24T09:00:00", "press")  # sertraline (compartment 1) and naltrexone (2) are both due
    [failed] = device.events("dose.release_failed")
    assert failed["data"]["medication_id"] == "sertraline" and "jammed" in failed["data"]["error"]
    assert "release_failed" in device.alerts()
    assert [e for e in device.alerts() if e == "release_failed"] == ["release_failed"]
    device.do("2026-11-24T09:01:00", "press")  # confirms naltrexone; sertraline is not tried again
    assert [e["data"]["medication_id"] for e in device.events("dose.taken")] == ["naltrexone"]
    assert len(device.events("dose.released")) == 2
    assert device.store.verify()[0]


def test_a_servo_failing_on_an_as_needed_release_is_a_failed_release_and_the_device_goes_on(device):
    """An as-needed release names no scheduled dose: its failure must still be logged, not crash the loop."""
    def jammed(compartment, quantity, sleep=None):
        raise OSError("servo 3 jammed")

    device.hw.compartments.release = jammed
    device.do("2026-11-24T13:00:00", "hold")  # hydroxyzine, compartment 3
    [failed] = device.events("dose.release_failed")
    assert failed["data"]["medication_id"] == "hydroxyzine"
    assert "release_failed" in device.alerts()
    assert device.lcd() == ["Dispenser fault", "Help is informed"]
    device.do("2026-11-24T20:00:00", "hold")  # the next request is judged on the failed one's time
    assert len(device.events("prn.released")) + len(device.events("prn.denied")) == 2
