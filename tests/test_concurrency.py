"""Two writers on one log, and readers beside the engine's thread.

The daemon and a `dispenser refill` / `dispenser schedule apply` run beside it are two
engines on two connections to one file. Each decision must be made on the log as it is
when the decision is written (refresh, decide and append under one write lock), or one
dose ends twice (two caregiver alerts), or is released and then skipped.
"""
from __future__ import annotations

import dataclasses
import io
import random
import sys
import threading
from collections import Counter, defaultdict
from datetime import timedelta

import pytest

from dispenser.daemon import Daemon, device_state
from dispenser.engine import Engine
from dispenser.hardware import build_sim_hardware
from dispenser.live import Terminal
from dispenser.logcheck import check_store
from dispenser.store import Store
from depth import deep, size
from tests.support import as_needed, daily, local, schedule

DEVICE = "disp-test"
FINAL = ("dose.released", "dose.missed", "dose.skipped")
EVERY_2H = [f"{hour:02d}:00" for hour in range(0, 24, 2)]
SHIFTED = [f"{hour:02d}:40" for hour in range(0, 24, 2)]


def document(version: int) -> dict:
    """Doses every two hours with short windows, moved by 40 minutes in every other version."""
    times = EVERY_2H if version % 2 else SHIFTED
    return schedule(daily("sertraline", 1, times, before=10, after=20),
                    daily("naltrexone", 2, times, before=5, after=15), as_needed("hydroxyzine", 3, every_h=1),
                    version=version)


class SharedClock:
    """One wall clock for both processes, moving forward a little at every step."""

    def __init__(self, start, seed: int):
        self.now, self.rng, self.lock = start, random.Random(seed), threading.Lock()

    def step(self):
        with self.lock:
            self.now += timedelta(seconds=self.rng.choice([0, 10, 60, 120, 300, 600]))
            return self.now


def daemon_steps(engine: Engine, now, rng: random.Random) -> None:
    roll = rng.random()
    if roll < 0.5:
        engine.tick(now)
    elif roll < 0.85:
        engine.press(now)
    else:
        engine.hold(now)


class Cli:
    """What a person runs beside the daemon: refills and schedule applies, each a new engine."""

    def __init__(self, rng: random.Random):
        self.rng, self.version = rng, 1

    def step(self, store: Store, now) -> None:
        engine = Engine(store, 8, "America/New_York")
        if self.rng.random() < 0.5:
            engine.refill(now, self.rng.choice(["sertraline", "naltrexone", "hydroxyzine"]), 50)
        else:
            self.version += 1
            engine.apply_schedule(now, document(self.version), "local")


def run_writers(path, clock: SharedClock, steps: int) -> list[BaseException]:
    errors: list[BaseException] = []
    cli = Cli(random.Random(2))

    def daemon() -> None:
        rng = random.Random(1)
        with Store.open(path, DEVICE) as store:
            engine = Engine(store, 8, "America/New_York")
            engine.start(clock.step())
            for _ in range(steps):
                daemon_steps(engine, clock.step(), rng)
            engine.stop(clock.step())

    def person() -> None:
        with Store.open(path, DEVICE) as store:
            for _ in range(steps // 4):
                cli.step(store, clock.step())

    def guarded(target):
        def run():
            try:
                target()
            except BaseException as error:  # noqa: BLE001 - reported by the test
                errors.append(error)
        return run

    threads = [threading.Thread(target=guarded(t)) for t in (daemon, person)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


@pytest.fixture
def fast_switching():
    """Switch threads as often as possible, so that one writer falls between the other's steps."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


# One interleaving of 300 daemon steps by default; three of 400 with `./dev test --deep`
# (tests/depth.py): each takes seconds, the switch interval of a microsecond makes the two
# threads fight for the GIL. 300 steps still fail 6 runs in 6 with the fold taken out of the
# write lock (and the stale-append guard off), and reach some 28 dose ends (200: 18-20).
WRITER_STEPS = size(quick=300, deep_size=400)


@pytest.mark.parametrize("seed", [1, 2, 3] if deep() else [1])
def test_two_writers_never_decide_on_a_stale_log(tmp_path, fast_switching, seed):
    path = tmp_path / "dispenser.db"
    start = local("2026-11-21T06:00")
    with Store.open(path, DEVICE) as store:
        engine = Engine(store, 8, "America/New_York")
        engine.start(start)
        assert engine.apply_schedule(start, document(1), "local").feedback == "applied"
        for medication in ("sertraline", "naltrexone", "hydroxyzine"):
            engine.refill(start, medication, 50)
    clock = SharedClock(start, seed)
    assert run_writers(path, clock, steps=WRITER_STEPS) == []
    with Store.open(path, DEVICE) as store:
        events = list(store.events())
        assert check_store(store, until=None, default_timezone="America/New_York") == []
    assert_each_dose_ends_once(events)
    assert_one_alert_per_dose(events)


def dose_key(event: dict) -> tuple[str, str] | None:
    data = event["data"]
    return (data["medication_id"], data["scheduled_at"]) if "scheduled_at" in data else None


def assert_each_dose_ends_once(events: list[dict]) -> None:
    """Released, missed or skipped: one of them, once; nothing is released after it ended."""
    ends: dict[tuple, list[tuple[int, str]]] = defaultdict(list)
    for event in events:
        if event["type"] in FINAL:
            ends[dose_key(event)].append((event["seq"], event["type"]))
    twice = {key: found for key, found in ends.items() if len(found) > 1}
    assert twice == {}
    assert sum(len(found) for found in ends.values()) > 20  # the run did reach many windows


def assert_one_alert_per_dose(events: list[dict]) -> None:
    about = {event["event_id"]: event for event in events}
    alerts = Counter()
    for event in events:
        if event["type"] == "alert.raised":
            for event_id in event["data"]["events"]:
                subject = about[event_id]
                key = dose_key(subject)
                if key is not None:
                    alerts[(event["data"]["kind"], key)] += 1
    assert [item for item, count in alerts.items() if count > 1] == []


# -- readers on other threads ----------------------------------------------------------------


class Screen(io.StringIO):
    """A terminal for the live simulator's draw thread: it redraws the whole frame each time."""

    def isatty(self) -> bool:
        return True


class FixedClock:
    def __init__(self, now):
        self.now_at = now

    def now(self):
        return self.now_at


def test_the_draw_thread_reads_the_read_model_while_the_daemon_changes_state(fast_switching):
    """The live simulator's draw thread beside the daemon's: it once read the rules' state
    mid-change (`dictionary keys changed during iteration`); now only the read model."""
    hardware = build_sim_hardware(lambda item: None, compartments=8, sleep=lambda s: None)
    store = Store.open(":memory:", DEVICE)
    engine = Engine(store, 8, "America/New_York")
    daemon = Daemon(engine, hardware, timezone_name="America/New_York", sleep=lambda s: None, clock_display=False)
    now = local("2026-11-21T06:00")
    clock = FixedClock(now)
    terminal = Terminal(daemon, clock, 60.0, out=Screen(), inp=Screen())
    daemon.start(now)
    engine.apply_schedule(now, document(1), "local")
    for medication in ("sertraline", "naltrexone", "hydroxyzine"):
        engine.refill(now, medication, 1000)
    stop, errors, seen = threading.Event(), [], set()

    def read() -> None:
        try:
            while not stop.is_set():
                model = engine.view
                seen.add(model.seq)
                [(dose.name, dose.reminders) for dose in model.due + model.awaiting]
                [item.count for item in model.stock]
                terminal.draw()
        except BaseException as error:  # noqa: BLE001 - reported by the test
            errors.append(error)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        rng = random.Random(4)
        # 300 inputs at both sizes: with the draw thread planted to read the rules' doses,
        # 150 or 200 failed 7 runs in 8, 300 failed 8 in 8.
        for _ in range(300):
            now += timedelta(minutes=rng.choice([1, 5, 20]))
            clock.now_at = now
            daemon.advance(now)
            daemon.handle(rng.choice(["press", "press", "hold"]), now)
    finally:
        stop.set()
        reader.join()
    assert errors == []
    assert len(seen) > 50  # the reader saw the model replaced again and again
    assert device_state(engine, now)["stock"]["sertraline"]["count"] < 1000


def test_the_read_model_is_a_snapshot_that_later_inputs_replace_and_never_change():
    engine = Engine(Store.open(":memory:", DEVICE), 8, "America/New_York")
    start = local("2026-11-21T07:55")
    engine.start(start)
    engine.apply_schedule(start, document(1), "local", stock={"sertraline": 10, "naltrexone": 10})
    model = engine.view
    assert [dose.medication_id for dose in model.due] == ["naltrexone", "sertraline"]
    assert model.medication("sertraline").count == 10 and model.schedule_version == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.seq = 0
    assert engine.press(start + timedelta(minutes=1)).feedback == "released"
    assert [dose.medication_id for dose in engine.view.awaiting] == ["naltrexone", "sertraline"]
    assert engine.view.medication("sertraline").count == 9 and engine.view.seq > model.seq
    assert [dose.medication_id for dose in model.due] == ["naltrexone", "sertraline"]  # the old one stands
    assert model.medication("sertraline").count == 10 and model.awaiting == ()
