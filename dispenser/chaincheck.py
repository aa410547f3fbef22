"""The whole file and the whole hash chain, checked on a thread of its own once the daemon is READY.

A start folds only the events after the snapshot (snapshot.py) and reads only the pages
it needs, so it no longer reads years of log before the first dose can go out. The rest
is still checked, here, behind the daemon's back: its own read-only connection, the
lowest CPU priority for its thread, a pause every few thousand rows so the daemon's
thread gets the interpreter. First the whole file (`PRAGMA quick_check`, once a boot:
a pass is recorded in the log's meta, docs/PERFORMANCE.md), then the whole chain (at
every start). A damaged file or a broken chain is reported through the daemon's queue
(`ChainCheckFailed(seq, reason)`, `seq` None for the file), which logs it as a
`device.fault` (component `log`) with an alert, where the start-up check refused such a
log before.

    >>> import tempfile
    >>> from datetime import datetime, timezone
    >>> from queue import Queue
    >>> from dispenser.events import Draft
    >>> from dispenser.store import Store
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = f"{folder.name}/dispenser.db"          # on a Pi: /var/lib/dispenser/dispenser.db
    >>> with Store.open(path, "disp-0001") as store:
    ...     _ = store.append([Draft("device.started", {})], datetime(2026, 11, 24, 6, 0, tzinfo=timezone.utc))
    >>> daemon_queue = Queue()
    >>> check = ChainCheck(path, "disp-0001", daemon_queue.put, whole_file=True)
    >>> check.start().join()                          # a thread of its own, at nice 19
    >>> check.result, daemon_queue.empty()            # intact: nothing for the daemon
    ((True, None, '1 event, chain intact'), True)
    >>> folder.cleanup()
"""
from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from .inputs import ChainCheckFailed
from .store import checked_this_boot, record_whole_file_checked, verify_rows, whole_file_problem

log = logging.getLogger("dispenser")

PAUSE_S = 0.002  # every few thousand rows: the daemon's thread may need the interpreter
Report = Callable[[ChainCheckFailed], None]


class ChainCheck:
    """One background check of a log file's whole chain (and whole file); `result` once it has run.

    `whole_file=True` (the daemon, whose start left it out): the whole file is read first
    (`quick_check`) unless it passed in this boot.
    """

    def __init__(self, path: str, device_id: str, put: Report, pause_s: float = PAUSE_S, *,
                 whole_file: bool = False):
        self.path, self.device_id, self.put, self.pause_s = path, device_id, put, pause_s
        self.whole_file = whole_file
        self.result: tuple[bool, int | None, str] | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> threading.Thread:
        self.thread = threading.Thread(target=self._background, name="chain-check", daemon=True)
        self.thread.start()
        return self.thread

    def _background(self) -> None:
        _lowest_priority()
        try:
            self.run()
        except Exception:  # noqa: BLE001 - a failed check must never stop the daemon
            log.exception("the background check of the log's chain failed")

    def run(self) -> tuple[bool, int | None, str]:
        """Check the chain now (on the calling thread); report it to the daemon when broken."""
        try:
            conn = sqlite3.connect(f"file:{quote(str(Path(self.path).resolve()))}?mode=ro", uri=True,
                                   check_same_thread=False)
        except sqlite3.Error as error:
            self.result = (True, None, f"not checked: cannot open ({type(error).__name__})")
            log.warning("the log's chain was not checked: %s", self.result[2])
            return self.result
        try:
            conn.execute("PRAGMA busy_timeout=5000")
            conn.execute("PRAGMA cache_size=-256")  # one pass in order: a page cache would only take memory
            damage = self._file_damage(conn)
            result = (False, None, damage) if damage else \
                verify_rows(conn, self.device_id, lambda seq: time.sleep(self.pause_s))
        except sqlite3.OperationalError as error:  # busy or gone during the file's check
            result = (False, None, f"cannot be read ({type(error).__name__})")
        finally:
            conn.close()
        ok, seq, reason = result
        if not ok and "OperationalError" in reason:  # busy or gone, not damage: say so, alarm no one
            self.result = (True, None, f"not checked to the end: {reason}")
            log.warning("the log's chain was not checked to the end (seq %s: %s)", seq, reason)
            return self.result
        self.result = result
        if ok:
            log.info("log chain: %s", reason)
        elif seq is None:
            log.error("the log's file is damaged: %s", reason)
            self.put(ChainCheckFailed(None, reason))
        else:
            log.error("the log's hash chain is broken at seq %s: %s", seq, reason)
            self.put(ChainCheckFailed(seq, reason))
        return result

    def _file_damage(self, conn: sqlite3.Connection) -> str | None:
        """The whole file read once a boot (quick_check): what is wrong with it, or None.

        A pass is recorded for this boot; a failure is not, so every command of this boot
        reads the file again and refuses it in one line, as before the daemon started.
        """
        if not self.whole_file or checked_this_boot(conn):
            return None
        problem = whole_file_problem(conn)
        if problem is not None:
            return f"database is damaged ({problem})"
        record_whole_file_checked(self.path)
        return None


def _lowest_priority() -> None:
    """Nice 19 for this thread alone (Linux gives each thread its own priority)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):
        pass
