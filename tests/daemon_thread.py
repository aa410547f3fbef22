"""A daemon on a thread of its own over a log file, for the tests that watch what it does
after READY (the background checks): the loop's thread owns the log, as in the daemon,
so the SQLite objects stay on it."""
from __future__ import annotations

import threading
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Iterator

from dispenser.daemon import Daemon
from dispenser.engine import Engine
from dispenser.hardware import build_sim_hardware
from dispenser.store import Store
from dispenser.timeutil import parse_utc


class HeldClock:
    """A clock that stays at `now`: the loop wakes every 50 ms and nothing becomes due."""

    def __init__(self, now: datetime):
        self._now = now

    def now(self) -> datetime:
        return self._now

    def seconds_until(self, moment: datetime) -> float:
        return 0.05


class RecordingNotifier:
    """systemd's notifier, keeping what the daemon said (`ready`)."""

    def __init__(self) -> None:
        self.notes: list[str] = []

    def ready(self) -> None:
        self.notes.append("ready")

    def watchdog(self) -> None:
        pass

    def watchdog_interval(self) -> None:
        return None


def log_end(store: Store) -> datetime:
    """The time of the log's last event."""
    return parse_utc(store.last_event()["at"])


class Running:
    """What the thread built: filled once the daemon starts, read after it stopped."""

    def __init__(self) -> None:
        self.engine: Engine | None = None
        self.daemon: Daemon | None = None
        self.notifier = RecordingNotifier()


@contextmanager
def daemon_on_thread(path: Path, device: str, *, check_later: bool = False,
                     after: timedelta = timedelta(0)) -> Iterator[Running]:
    """The daemon over `path` (opened as the daemon opens it when `check_later`), its clock
    held `after` the log's last event; stopped and joined when the block ends."""
    running, stopped = Running(), threading.Event()

    def owner() -> None:
        store = Store.open(path, device, check_later=check_later)
        running.engine = Engine(store, 8, "UTC")
        hardware = build_sim_hardware(lambda item: None, compartments=8, sleep=lambda s: None)
        running.daemon = Daemon(running.engine, hardware, timezone_name="UTC", sleep=lambda s: None,
                                notifier=running.notifier)
        try:
            running.daemon.run(HeldClock(log_end(store) + after), stopped.is_set)
        finally:
            hardware.close()
            store.close()

    loop = threading.Thread(target=owner, daemon=True)
    loop.start()
    try:
        yield running
    finally:
        stopped.set()
        if running.daemon is not None:
            running.daemon.put("stop")
        loop.join()
