"""The one way to open a device's log and build its engine: the daemon and every command.

The daemon, `schedule apply`, `refill`, `status` and the scenario runner all need the
same three things in the same order: the log (refused in one line when it is foreign,
damaged or missing), the clock's trust (from the config and the log's last word on it),
and the engine given both. Doing it in one place keeps them from drifting apart.
"""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

from .clocktrust import ClockTrust, TrustedClock, trust_for
from .config import Config
from .engine import Engine
from .store import Store, StoreError
from .timeutil import UTC



class StartError(Exception):
    """The log or the parts cannot be opened; one line saying why (exit 2 on the command line)."""


def open_store(config: Config, db: str | None = None, *, create: bool = True, daemon: bool = False) -> Store:
    """The log at `db` (default: the config's), created with its folder when `create`.

    Without `create`, a missing file is refused: a query on a path mistyped must not
    leave an empty log behind. The daemon (`daemon=True`) reads the whole file
    (quick_check) after READY, on its background check's thread, once a boot (chaincheck.py);
    a command reads it before it reads the log, unless it passed in this boot.
    """
    path = db or config.db_path
    if path != ":memory:":
        if not create and not Path(path).exists():
            raise StartError(f"{path}: no log yet (the dispenser has not run with this database)")
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StartError(f"{path}: cannot create its folder ({error.strerror})") from None
    try:
        return Store.open(path, config.device_id, check_later=daemon)
    except StoreError as error:
        raise StartError(str(error)) from None


def open_engine(config: Config, store: Store, *, simulated: bool = False,
                read_only: bool = False) -> tuple[Engine, ClockTrust]:
    """The engine over `store`, and the clock trust it was given.

    A one-shot command cannot see a clock step the daemon saw: the log's word on the
    clock counts too, and the daemon's anchor of this boot (kept in the log), so a wall
    clock pushed ahead is not believed by a command either. `read_only`: a command that
    only looks (`status`) gets an engine that keeps no copy of the fold and cannot decide.
    """
    trust = trust_for(config, log_trusted=store.clock_logged_trusted(), simulated=simulated, store=store)
    engine = Engine(store, config.compartments, config.timezone, clinic_public_key=config.clinic_public_key,
                    clinic_keys=config.clinic_keys, clock_trusted=trust.check, read_only=read_only)
    return engine, trust


def trusted_now(trust: ClockTrust) -> datetime:
    """The time to give the rules: counted from the clock's synchronisation where the config asks."""
    if trust.mode == "synchronized":
        return TrustedClock(trust).now()
    return datetime.now(UTC)
