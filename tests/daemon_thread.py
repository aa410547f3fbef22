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
from waiting import HANG


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


class RunThread:
    """`dispenser run` on a thread of this process: the config's daemon as `build_daemon`
    and `run_daemon` make it (log, engine, simulated hardware, MQTT sync), without a new
    interpreter's imports (~0.15 s of CPU). For tests of what the daemon does, not of its
    process: signals, exit codes, memory and crashes keep `python -m dispenser run`."""

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        self.daemon: Daemon | None = None
        self.error: BaseException | None = None
        self._built = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:  # the log's SQLite objects belong to this thread: built here
        from dispenser.config import load_config
        from dispenser.runner import build_daemon, run_daemon
        try:
            self.daemon = build_daemon(load_config(str(self.config_path)), None, simulated=False)
            self._built.set()
            run_daemon(self.daemon)
        except BaseException as error:  # noqa: BLE001 - what the process would die of
            self.error = error
        finally:
            self._built.set()

    def start(self) -> "RunThread":
        self._thread.start()
        assert self._built.wait(HANG), "the daemon was never built"
        return self

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> BaseException | None:
        """Stop it as SIGTERM does (the handler only queues "stop"); the error it ended on, if any."""
        if self.daemon is not None and self._thread.is_alive():
            self.daemon.put("stop")
        self._thread.join(HANG)
        assert not self._thread.is_alive(), "the daemon did not stop"
        return self.error
