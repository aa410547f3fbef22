"""`dispenser simulate --scenario`: the full daemon on simulated hardware and a virtual clock,
headless and repeatable.

The clock jumps straight to the next thing that matters (a step, a window opening or
closing, a reminder, a confirmation deadline), so a day runs in milliseconds. A power cut
throws away every object in memory and starts again from the database file, as a
reboot would.
"""
from __future__ import annotations

import hashlib
import json
import random
import tempfile
import tomllib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from . import docjson
from .config import Config
from .daemon import Daemon
from .engine import Engine, Mover
from .hardware import Hardware, build_sim_hardware
from .inputs import Hold, Input, Press, Refill
from .opening import open_engine, open_store
from .schedule import ScheduleError, load_schedule_file
from .store import Store
from .virtual import VirtualDevice
from .vocabulary import ScheduleSource

if TYPE_CHECKING:
    from .sync import Sync

ACTIONS = {"press", "hold", "refill", "power_cut", "apply_schedule", "lid_open", "lid_close", "jam"}
STEP_KEYS = {"at", "do", "medication", "count", "file", "for_min", "compartment"}


class ScenarioError(Exception):
    """A scenario file problem, one line."""


@dataclass(frozen=True)
class Step:
    at: datetime  # aware UTC
    do: str
    medication: str | None = None
    count: int | None = None
    file: Path | None = None
    for_min: int = 0
    compartment: int | None = None  # `jam`: whose next release drops nothing


@dataclass
class Scenario:
    start: datetime
    until: datetime
    schedule_file: Path
    stock: dict[str, int]
    steps: list[Step] = field(default_factory=list)
    text: str = ""


def load_scenario(path: str | Path, default_timezone: str = "UTC") -> Scenario:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        raw = tomllib.loads(text)
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ScenarioError(f"{path}: cannot be read ({error})") from None
    except tomllib.TOMLDecodeError as error:
        raise ScenarioError(f"{path}: not valid TOML ({error})") from None
    unknown = set(raw) - {"start", "until", "schedule", "stock", "step"}
    if unknown:
        raise ScenarioError(f"{path}: unknown key {sorted(unknown)[0]!r}")
    if not isinstance(raw.get("schedule"), str):
        raise ScenarioError(f"{path}: schedule: the schedule file is required")
    schedule_file = path.parent / raw["schedule"]
    try:
        tz = load_schedule_file(schedule_file, default_timezone).tz
    except ScheduleError as error:
        raise ScenarioError(f"{path}: schedule: {error.problems[0]}") from None
    start = _local(raw.get("start"), tz, f"{path}: start")
    until = _local(raw.get("until"), tz, f"{path}: until")
    if until <= start:
        raise ScenarioError(f"{path}: until must be after start")
    stock = raw.get("stock", {})
    if not isinstance(stock, dict):
        raise ScenarioError(f"{path}: stock must be a table of medication = count")
    for medication, count in stock.items():
        if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= 1000:
            raise ScenarioError(f"{path}: stock.{medication}: must be a whole number from 0 to 1000")
    steps = [_step(item, i, tz, path, start, until) for i, item in enumerate(raw.get("step", []))]
    steps.sort(key=lambda step: step.at)  # stable: steps at one moment keep their order
    return Scenario(start, until, schedule_file, stock, steps, text)


def _local(value: object, tz: ZoneInfo, where: str) -> datetime:
    """A scenario time: local in the schedule's timezone (an offset, if given, is honoured)."""
    if not isinstance(value, (str, datetime)):
        raise ScenarioError(f"{where}: a local date and time like \"2026-11-24T06:00:00\" is required")
    try:
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    except ValueError:
        raise ScenarioError(f"{where}: {value!r} is not a date and time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return moment.astimezone(ZoneInfo("UTC"))


def _step(item: object, index: int, tz: ZoneInfo, path: Path, start: datetime, until: datetime) -> Step:
    where = f"{path}: step[{index}]"
    if not isinstance(item, dict):
        raise ScenarioError(f"{where}: must be a table")
    unknown = set(item) - STEP_KEYS
    if unknown:
        raise ScenarioError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    do = item.get("do")
    if do not in ACTIONS:
        raise ScenarioError(f"{where}.do: {do!r} is not one of {', '.join(sorted(ACTIONS))}")
    at = _local(item.get("at"), tz, f"{where}.at")
    if not start <= at < until:
        raise ScenarioError(f"{where}.at: outside the scenario's [start, until)")
    medication = item.get("medication")
    if medication is not None and not isinstance(medication, str):
        raise ScenarioError(f"{where}.medication: must be a medication id")
    count = item.get("count")
    if do == "refill":
        if medication is None:
            raise ScenarioError(f"{where}.medication: a refill names its medication")
        if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= 1000:
            raise ScenarioError(f"{where}.count: a refill needs a whole count from 0 to 1000")
    file = None
    if do == "apply_schedule":
        if not isinstance(item.get("file"), str):
            raise ScenarioError(f"{where}.file: apply_schedule needs the schedule file")
        file = path.parent / item["file"]
    for_min = item.get("for_min", 0)
    if not isinstance(for_min, int) or isinstance(for_min, bool) or for_min < 0:
        raise ScenarioError(f"{where}.for_min: must be a whole number of minutes")
    compartment = item.get("compartment")
    if do == "jam" and (not isinstance(compartment, int) or isinstance(compartment, bool) or compartment < 1):
        raise ScenarioError(f"{where}.compartment: a jam names its compartment (a whole number from 1)")
    if do != "jam" and compartment is not None:
        raise ScenarioError(f"{where}.compartment: only a jam names a compartment")
    return Step(at, do, medication, count, file, for_min, compartment)


def seeded_ids(seed_text: str) -> Callable[[], str]:
    """Event ids that are the same on every run of the same scenario: output is repeatable."""
    rng = random.Random(hashlib.sha256(seed_text.encode()).digest())
    return lambda: str(uuid.UUID(int=rng.getrandbits(128), version=4))


class ScenarioRun:
    """Runs one scenario against one database file, printing (or collecting) every event."""

    def __init__(self, scenario: Scenario, config: Config, db_path: str | None,
                 emit: Callable[[dict], None], mover: Mover | None = None):
        self.scenario = scenario
        self.config = config
        self.emit = emit
        self.mover = mover
        self._tmp = None
        if db_path is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="dispenser-scenario-")
            db_path = str(Path(self._tmp.name) / "scenario.db")
        self.db_path = db_path
        self.store: Store | None = None
        self.engine: Engine | None = None
        self.daemon: Daemon | None = None
        self.hardware: Hardware | None = None
        self.sync: Sync | None = None
        self._new_id: Callable[[], str] | None = None
        self.device: VirtualDevice | None = None

    def _boot(self, now: datetime) -> None:
        """Open the database and start the daemon from what is on disk, as after a reboot."""
        self.store = open_store(self.config, self.db_path, id_factory=self._new_id)
        if self._new_id is None:
            self._new_id = seeded_ids(self.scenario.text + str(self.store.event_count()))
        # The simulated clock is always believed, as the daemon under `simulate` believes it.
        self.engine, _ = open_engine(self.config, self.store, simulated=True, new_id=self._new_id)
        self.engine.listeners.append(self._emit_events)
        sync = self.sync
        if sync is not None:
            self.engine.listeners.append(lambda events: sync.notify())
        # The simulated lid and drop sensor put their inputs on the daemon's queue (`_drain`).
        self.hardware = build_sim_hardware(self._put, self.config.compartments, sleep=lambda s: None)
        # The scenario's button is the contract's: a press confirms or releases, so no check-in.
        self.daemon = Daemon(self.engine, self.hardware, timezone_name=self.config.timezone,
                             sleep=lambda s: None, clock_display=False)
        self.daemon.drop_waits = False  # the simulated chute drops at once, on the virtual clock
        if self.mover is not None:
            self.engine.mover = self.mover
        self.daemon.start(now)
        if self.device is not None:
            self.device.running = self.daemon

    def _emit_events(self, events: list[dict]) -> None:
        for event in events:
            self.emit(event)

    def _power_off(self) -> None:
        if self.hardware is not None:
            self.hardware.close()
        if self.store is not None:
            self.store.close()
        self.store = self.engine = self.daemon = self.hardware = None

    def run(self) -> None:
        """The scenario, publishing as the daemon does when the config has [mqtt]."""
        from .runner import build_sync
        self.sync = build_sync(self.config, lambda item: None, self.db_path, suffix="simulate",
                               subscribe=False)
        try:
            self._run()
        finally:
            if self.sync is not None:
                # Up to 10 s for the outbox to drain; a broker that is down: the events wait.
                if self.sync.connected or self.sync.wait_connected(2):
                    self.sync.wait_idle(10)
                self.sync.stop()

    def _run(self) -> None:
        scenario = self.scenario
        device = VirtualDevice(scenario.start, boot=lambda: self._boot(device.true))
        self.device = device
        self._boot(scenario.start)
        if self.sync is not None:
            self.sync.start()  # after the first boot: the log file exists before its second reader
        self._apply_file(scenario.start, scenario.schedule_file, stock=scenario.stock)  # filled as it applies
        for step in scenario.steps:
            device.advance(step.at)
            if self.daemon is not None:  # the device is off: nobody can press it
                self._do(step, device.true)
        device.advance(scenario.until, tick_at_target=False)  # the run covers [start, until)
        if self.store is not None:
            self._power_off()

    def _put(self, item: Input) -> None:
        if self.daemon is not None:
            self.daemon.put(item)

    def _drain(self, now: datetime) -> None:
        """Handle what the simulated sensors put on the queue during a step, at the step's time."""
        while self.daemon is not None and not self.daemon.inputs.empty():
            self.daemon.handle(self.daemon.inputs.get_nowait(), now)

    def _do(self, step: Step, now: datetime) -> None:
        self._act(step, now)
        self._drain(now)

    def _act(self, step: Step, now: datetime) -> None:
        daemon = self.daemon
        if daemon is None:
            return None  # the device is off: nobody can press it
        if step.do == "press":
            daemon.handle(Press(), now)
        elif step.do == "hold":
            daemon.handle(Hold(step.medication), now)
        elif step.do == "refill" and step.medication is not None and step.count is not None:
            daemon.handle(Refill(step.medication, step.count), now)
        elif step.do in ("lid_open", "lid_close") and self.hardware is not None and self.hardware.lid is not None:
            pin = self.hardware.lid.device.pin  # the lid switch pulls low while the lid is shut
            pin.drive_high() if step.do == "lid_open" else pin.drive_low()
        elif step.do == "jam" and self.hardware is not None and self.hardware.chute is not None \
                and step.compartment is not None:
            self.hardware.chute.jam(step.compartment)
        elif step.do == "apply_schedule" and step.file is not None:
            self._apply_file(now, step.file)
        elif step.do == "power_cut" and self.device is not None:
            self._power_off()
            self.device.power_cut(timedelta(minutes=step.for_min))

    def _apply_file(self, now: datetime, path: Path, stock: dict[str, int] | None = None) -> None:
        try:
            document = docjson.loads(path.read_text(encoding="utf-8"))  # as `schedule apply` reads it
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ScenarioError(f"{path}: cannot be read as JSON ({error})") from None
        if self.engine is not None:  # the device is on: a person at it applies the file
            self.engine.apply_schedule(now, document, ScheduleSource.LOCAL, stock=stock)

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
