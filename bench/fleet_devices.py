"""One process's share of the fleet: simulated dispensers with the real Store, Engine and Sync.

Each device is a real SQLite log (Store), the real engine deciding on a virtual clock
(dispenser/virtual.py, as `simulate --scenario` and harness/ drive one), and the real
Sync publishing its outbox to the broker on its own paho client and worker thread, as
the daemon does. A person presses for most doses, confirms, answers the check-in, now
and then asks for the as-needed dose or misses one: about 31 events a device a day.

paho's network loop uses select(), which silently never wakes for a socket whose number
is 1024 or above. A device here holds about 8 file descriptors (two SQLite connections
with their -wal and -shm files, the MQTT socket, paho's wake-up socket pair), so a
process keeps well under 1024 with at most DEVICES_PER_PROCESS devices; `fds_per_device`
is measured and reported, and the bench refuses a split that would pass LIMIT_FDS.
"""
from __future__ import annotations

import os
import random
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from dispenser.engine import Engine
from dispenser.mqtt_settings import MqttSettings
from dispenser.store import Store
from dispenser.sync import Sync
from dispenser.virtual import EngineTicks, VirtualDevice

UTC = timezone.utc
DEVICES_PER_PROCESS = 100   # about 800 file descriptors: well under select()'s 1024
LIMIT_FDS = 900             # a process's descriptors must stay below this (select() breaks at 1024)
START = datetime(2026, 11, 1, tzinfo=UTC)
SLOTS = ("08:00:00", "13:00:00", "18:00:00", "22:00:00")


def schedule_document() -> dict[str, Any]:
    """Four scheduled medications over four times a day and one as-needed: 6 doses a day."""
    def daily(*times: str) -> list[dict[str, Any]]:
        return [{"timing": {"repeat": {"frequency": len(times), "period": 1, "periodUnit": "d",
                                       "timeOfDay": list(times)}},
                 "doseAndRate": [{"doseQuantity": {"value": 1}}]}]

    return {"schema": "dispenser.schedule/1", "version": 1, "issued_at": "2026-10-01T00:00:00Z",
            "timezone": "UTC", "medications": [
                {"id": "morning-evening", "name": "Fleet A", "compartment": 1, "dosage": daily(SLOTS[0], SLOTS[3])},
                {"id": "three-a-day", "name": "Fleet B", "compartment": 2,
                 "dosage": daily(SLOTS[0], SLOTS[1], SLOTS[2])},
                {"id": "midday", "name": "Fleet C", "compartment": 3, "dosage": daily(SLOTS[1])},
                {"id": "as-needed", "name": "Fleet D", "compartment": 4, "dosage": [
                    {"asNeededBoolean": True, "timing": {"repeat": {"frequency": 1, "period": 6, "periodUnit": "h"}},
                     "maxDosePerPeriod": {"numerator": {"value": 3}, "denominator": {"value": 1, "unit": "d"}},
                     "doseAndRate": [{"doseQuantity": {"value": 1}}]}]}]}


STOCK = {"morning-evening": 5000, "three-a-day": 5000, "midday": 5000, "as-needed": 5000}


def device_id(index: int) -> str:
    return f"fleet-{index:04d}"


def day_plan(rng: random.Random, day: datetime) -> list[tuple[datetime, str]]:
    """What the person does on one day: (moment, action), sorted. Mostly on time, some late,
    a dose missed now and then (about one in 25), a check-in after the morning dose."""
    plan: list[tuple[datetime, str]] = []
    for index, slot in enumerate(SLOTS):
        hour, minute = int(slot[:2]), int(slot[3:5])
        at = day + timedelta(hours=hour, minutes=minute)
        if rng.random() < 0.04:
            continue   # missed: dose.missed and an alert at the window's end
        pressed = at + timedelta(minutes=rng.choice([-10, 0, 2, 5, 15, 40, 90]))
        plan.append((pressed, "press"))
        plan.append((pressed + timedelta(minutes=rng.choice([1, 2, 3, 20])), "press"))   # confirms; late: unconfirmed
        if index == 0:
            plan.append((pressed + timedelta(minutes=25), "checkin"))
    if rng.random() < 0.5:
        plan.append((day + timedelta(hours=15, minutes=rng.randrange(60)), "hold"))
    return sorted(plan)


class Device:
    """One simulated dispenser: its log, engine, virtual clock and sync; the appends' wall times."""

    def __init__(self, index: int, folder: Path, settings: MqttSettings, seed: int):
        self.id = device_id(index)
        self.path = folder / f"{self.id}.db"
        self.rng = random.Random(seed * 100_003 + index)
        self.appended: dict[str, float] = {}
        self.store = Store.open(self.path, self.id)
        self.engine = Engine(self.store, 8, "UTC", read_model=False)
        self.sync = Sync(settings, self.id, lambda: Store.open_outbox(self.path, self.id), now=self.now)
        self.engine.listeners.append(self._appended)
        self.clock = VirtualDevice(START, boot=lambda: None)
        self.clock.running = EngineTicks(self.engine)

    def now(self) -> datetime:
        return self.clock.true

    def _appended(self, events: list[dict[str, Any]]) -> None:
        wall = time.time()
        for event in events:
            self.appended[event["event_id"]] = wall
        self.sync.notify()

    def begin(self) -> None:
        self.sync.start()
        self.engine.apply_schedule(START, schedule_document(), "local", stock=dict(STOCK))
        self.engine.start(START)

    def live_day(self, day: datetime) -> None:
        """Every action of the day at its moment, the engine ticked between, up to the next day."""
        for moment, action in day_plan(self.rng, day):
            self.clock.advance(moment)
            if action == "press":
                self.engine.press(moment)
            elif action == "hold":
                self.engine.hold(moment)
            else:
                self.engine.checkin(moment, self.rng.choice([2, 3, 4, 4, 5]), self.rng.choice(["none", "none", "mild"]),
                                    ["morning-evening", "three-a-day"])
        self.clock.advance(day + timedelta(days=1), tick_at_target=False)

    def log(self) -> list[tuple[str, int, str, str, float | None]]:
        return [(self.id, event["seq"], event["event_id"], event["hash"], self.appended.get(event["event_id"]))
                for event in self.store.events()]

    def close(self) -> None:
        self.sync.stop()
        self.store.close()


def open_fds() -> int:
    """File descriptors this process holds now (Linux)."""
    return len(os.listdir("/proc/self/fd"))


def run_devices(indexes: list[int], folder: str, host: str, port: int, days: int, seed: int,
                progress: Any, report: Any) -> None:
    """A process's devices through `days` virtual days, then their outboxes drained.

    `progress`: a shared array slot for the virtual days done; `report` a queue that
    gets ("fds", n), ("generated", seconds), then ("log", rows) per device and ("done", fds).
    """
    # The simulation yields the CPU to what is measured (broker, care service, PostgreSQL):
    # a month lived in minutes would otherwise starve them on a small machine.
    os.nice(10)
    settings = MqttSettings(host=host, port=port, tls=False, keepalive=30)
    devices = [Device(index, Path(folder), settings, seed) for index in indexes]
    for device in devices:
        device.begin()
    report.put(("fds", open_fds()))
    began = time.monotonic()
    for day_index in range(days):
        day = START + timedelta(days=day_index)
        for device in devices:
            device.live_day(day)
        progress.value = day_index + 1
    report.put(("generated", time.monotonic() - began))
    for device in devices:   # every outbox acknowledged by the broker (a restart on the way is retried)
        while not device.sync.wait_idle(30):
            if device.store.backlog() == 0:
                break
    peak = open_fds()
    for device in devices:
        report.put(("log", device.log()))
        device.close()
    report.put(("done", peak))
