"""Assembles a running dispenser from its config: log, engine, hardware, sync, daemon.

`dispenser run` and the live `dispenser simulate` are the same daemon; they differ
only in the hardware (real pins or simulated) and in who presses the button.
"""
from __future__ import annotations

import json
import logging
import signal
from datetime import datetime
from importlib import resources
from typing import TYPE_CHECKING, Callable

from .config import Config
from .daemon import Clock, Daemon
from .inputs import Input, ScheduleMessage
from .journal import EventLines
from .opening import StartError, open_engine, open_store
from .store import Store
from .timeutil import UTC
from .vocabulary import ClockTrustMode, ScheduleSource

if TYPE_CHECKING:
    from .hardware import Hardware
    from .service import Notifier
    from .sync import Sync

log = logging.getLogger("dispenser")

DEMO_STOCK = {"sertraline": 28, "multivitamin": 60, "hydroxyzine": 10}


def demo_schedule() -> dict:
    return json.loads(resources.files("dispenser").joinpath("demo", "live-schedule.json").read_text())


def build_hardware_for(config: Config, put: Callable[[Input], None], simulated: bool,
                       on_move: Callable[[int, str], None] | None = None) -> Hardware:
    from .hardware import HardwareError, build_hardware, build_sim_hardware
    try:
        if simulated or config.backend == "sim":
            from .hardware import parse_hardware_config
            cfg = parse_hardware_config(config.hardware)
            return build_sim_hardware(put, config.compartments, (cfg.lcd_cols, cfg.lcd_rows),
                                      dwell_ms=cfg.dwell_ms, hold_s=cfg.hold_s, on_move=on_move)
        return build_hardware(config.hardware, put, on_move=on_move)
    except HardwareError as error:
        raise StartError(str(error)) from None


def build_sync(config: Config, daemon_put: Callable[[Input], None], outbox_path: str, suffix: str | None = None,
               subscribe: bool = True) -> Sync | None:
    """The MQTT side, when the config has an [mqtt] table; None to run offline.

    The daemon (`suffix=None`) subscribes to schedule/set; one-shot commands do not.
    """
    if not config.mqtt:
        return None
    from .sync import MqttSettings, Sync
    try:
        settings = MqttSettings.from_config(config.mqtt)
    except ValueError as error:
        raise StartError(f"{config.source}: {error}") from None
    # The sync's own thread opens its own connection to the log: SQLite objects stay on their thread.
    # The daemon's background check reads the whole file once a boot (chaincheck.py): not this connection.
    outbox = (lambda: Store.open_outbox(outbox_path, config.device_id, check_later=suffix is None)) \
        if outbox_path != ":memory:" else None
    on_schedule = (lambda payload: daemon_put(ScheduleMessage(payload))) if subscribe else None
    if suffix is not None:
        settings = settings.for_command(suffix)
    discovery = None
    if config.homeassistant is not None and suffix is None:  # (v2) the daemon only
        from .homeassistant import discovery_for
        discovery = discovery_for(config.homeassistant, config.device_id, settings.topic_prefix, config.compartments)
    return Sync(settings, config.device_id, outbox, on_schedule=on_schedule, client_suffix=suffix,
                discovery=discovery)


def build_daemon(config: Config, db: str | None, *, simulated: bool, demo: bool = False,
                 notifier: Notifier | None = None, on_move: Callable[[int, str], None] | None = None,
                 with_sync: bool = True) -> Daemon:
    """Everything a running dispenser needs, wired together but not started."""
    store = open_store(config, db, daemon=True)
    # The one owner of clock trust: the engine asks it at every input, the daemon how long it waits.
    engine, trust = open_engine(config, store, simulated=simulated)
    engine.listeners.append(EventLines(engine))  # one system-log line per committed event
    if demo and engine.view.schedule_version is None:
        now = datetime.now(UTC)
        engine.apply_schedule(now, demo_schedule(), ScheduleSource.LOCAL, stock=DEMO_STOCK)  # filled as it applies
    holder: list[Daemon] = []
    hardware = build_hardware_for(config, lambda item: holder[0].put(item), simulated, on_move)
    sync = build_sync(config, lambda item: holder[0].put(item), store.name) if with_sync else None
    daemon = Daemon(engine, hardware, timezone_name=config.timezone, checkin=config.checkin,
                    notifier=notifier, sync=sync, clock_trust=trust)
    holder.append(daemon)
    return daemon


def stop_on_signals(daemon: Daemon) -> None:
    """SIGTERM (systemd) and SIGINT end the loop cleanly: the handler only queues "stop"."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: daemon.put("stop"))


def run_daemon(daemon: Daemon, clock: Clock | None = None) -> None:
    if daemon.sync is not None:
        daemon.sync.start()
    if clock is None and daemon.clock_trust is not None and daemon.clock_trust.mode == ClockTrustMode.SYNCHRONIZED:
        from .clocktrust import TrustedClock
        clock = TrustedClock(daemon.clock_trust)  # the time counted since NTP first set it (clocktrust.py)
    try:
        daemon.run(clock)
    finally:
        if daemon.sync is not None:
            daemon.sync.stop()
        daemon.hardware.close()
        daemon.engine.store.close()
