"""The one TOML configuration file, read and checked before anything starts.

A misspelt key in a medical device is a silent misconfiguration, so unknown tables and
keys are errors, each reported as one line naming the key.
"""
from __future__ import annotations

import base64
import binascii
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .vocabulary import ClockTrustMode

DEFAULT_PATH = Path("/etc/dispenser/config.toml")

KNOWN = {
    "device": {"id", "timezone"},
    "hardware": None,  # checked by dispenser.hardware, which owns its keys
    "mqtt": {"host", "port", "username", "password", "tls", "tls_ca", "tls_cert", "tls_key",
             "topic_prefix", "protocol", "keepalive"},
    "clinic": {"public_key", "keys"},
    "storage": {"db"},
    "checkin": {"enabled"},
    "clock": {"trust", "marker"},
    "logging": {"level"},
    "homeassistant": {"enabled", "discovery_prefix", "names"},  # (v2) docs/MQTT.md, "Home Assistant"
}


class ConfigError(Exception):
    """A configuration problem; its text is one line naming the file and key."""


@dataclass(frozen=True)
class Config:
    device_id: str = "disp-sim"
    timezone: str = "UTC"
    backend: str = "sim"
    compartments: int = 8
    hardware: dict = field(default_factory=dict)
    mqtt: dict | None = None
    clinic_public_key: str | None = None
    clinic_keys: dict = field(default_factory=dict)  # {key_id: base64 public key}, for key rotation
    db_path: str = ""
    checkin: bool = False
    clock_trust: ClockTrustMode = ClockTrustMode.ALWAYS  # the simulator believes its host's clock; see clocktrust.py
    clock_marker: str = "/run/systemd/timesync/synchronized"  # touched at each NTP synchronisation
    log_level: str = "info"  # the daemon's system log (journal.py): debug, info, warning or error
    homeassistant: dict | None = None  # the [homeassistant] table, checked by homeassistant.py
    source: str = "built-in defaults"


def default_db_path() -> str:
    """systemd's StateDirectory when run as a service, else the user's state folder."""
    state_dir = os.environ.get("STATE_DIRECTORY")
    if state_dir:
        return str(Path(state_dir.split(":")[0]) / "dispenser.db")
    base = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state"))
    return str(base / "dispenser" / "dispenser.db")


def locate(path: str | None) -> Path | None:
    """--config, else $DISPENSER_CONFIG, else /etc/dispenser/config.toml where present."""
    if path:
        return Path(path)
    env = os.environ.get("DISPENSER_CONFIG")
    if env:
        return Path(env)
    return DEFAULT_PATH if DEFAULT_PATH.exists() else None


def read_toml(found: Path, error: type[Exception]) -> dict[str, Any]:
    """A TOML file as a table; `error` with one line naming the file for anything wrong.

    The device's config and the care service's read their files the same way.
    """
    try:
        return tomllib.loads(found.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{found}: no such file") from None
    except (OSError, UnicodeDecodeError) as failure:
        raise error(f"{found}: cannot be read ({failure})") from None
    except tomllib.TOMLDecodeError as failure:
        raise error(f"{found}: not valid TOML ({failure})") from None


def load_config(path: str | None = None) -> Config:
    found = locate(path)
    if found is None:
        return Config(db_path=default_db_path())
    raw = read_toml(found, ConfigError)
    config = parse_config(raw, str(found))
    if isinstance(raw.get("mqtt"), dict) and raw["mqtt"].get("password") is not None:
        _check_secret_file(found)
    return config


# The group the installed service reads its config through (docs/INSTALL.md: root:dispenser 0640).
SERVICE_GROUP = "dispenser"


def _check_secret_file(path: Path) -> None:
    """A file holding the broker password must not be readable by others, nor by a group
    that is not the reader's own or the service's: one line telling the chmod."""
    import grp
    import stat
    try:
        info = path.stat()
    except OSError:
        return
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o007:
        raise ConfigError(f"{path}: holds mqtt.password and other users can read it (mode {mode:04o}): "
                          f"chmod 600 {path} (or chmod 640 with group {SERVICE_GROUP})")
    if mode & 0o070:
        trusted = {os.getegid()}
        try:
            trusted.add(grp.getgrnam(SERVICE_GROUP).gr_gid)
        except KeyError:
            pass
        if info.st_gid not in trusted:
            try:
                group = grp.getgrgid(info.st_gid).gr_name
            except KeyError:
                group = str(info.st_gid)
            raise ConfigError(f"{path}: holds mqtt.password and group {group} can read it (mode {mode:04o}): "
                              f"chmod 600 {path} (or chgrp {SERVICE_GROUP} and chmod 640)")


def parse_config(raw: dict, source: str = "config") -> Config:
    for table, value in raw.items():
        if table not in KNOWN:
            raise ConfigError(f"{source}: unknown table [{table}]")
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {table} must be a table")
        keys = KNOWN[table]
        for key in value:
            if keys is not None and key not in keys:
                raise ConfigError(f"{source}: unknown key {table}.{key}")
    device = raw.get("device", {})
    hardware = raw.get("hardware", {})
    device_id = _text(device, "device.id", "disp-sim", source)
    if not device_id.replace("-", "").replace("_", "").isalnum() or len(device_id) > 64:
        raise ConfigError(f"{source}: device.id {device_id!r} may hold only letters, digits, - and _")
    timezone = _text(device, "device.timezone", "UTC", source)
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{source}: device.timezone {timezone!r} is not a known time zone") from None
    backend = hardware.get("backend", "sim")
    if backend not in ("sim", "pi"):
        raise ConfigError(f"{source}: hardware.backend must be \"sim\" or \"pi\", not {backend!r}")
    compartments = hardware.get("compartments", 8)
    if not isinstance(compartments, int) or isinstance(compartments, bool) or not 1 <= compartments <= 32:
        raise ConfigError(f"{source}: hardware.compartments must be a whole number from 1 to 32")
    _check_parts(raw, source)
    clinic = raw.get("clinic", {})
    storage = raw.get("storage", {})
    checkin = raw.get("checkin", {}).get("enabled", False)
    if not isinstance(checkin, bool):
        raise ConfigError(f"{source}: checkin.enabled must be true or false")
    # A Pi has no battery clock: by default it waits for NTP. The simulator uses its host's clock.
    clock_trust = raw.get("clock", {}).get("trust", "synchronized" if backend == "pi" else "always")
    if clock_trust not in tuple(ClockTrustMode):
        raise ConfigError(f"{source}: clock.trust must be \"synchronized\" or \"always\", not {clock_trust!r}")
    log_level = raw.get("logging", {}).get("level", "info")
    if log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"{source}: logging.level must be \"debug\", \"info\", \"warning\" or \"error\", "
                          f"not {log_level!r}")
    return Config(
        device_id=device_id, timezone=timezone, backend=backend, compartments=compartments,
        hardware=hardware, mqtt=raw.get("mqtt"),
        clinic_public_key=_text(clinic, "clinic.public_key", None, source),
        clinic_keys=dict(clinic.get("keys", {})),
        db_path=_db_path(storage, source),
        checkin=checkin, clock_trust=ClockTrustMode(clock_trust),
        clock_marker=_text(raw.get("clock", {}), "clock.marker", Config.clock_marker, source), source=source,
        log_level=log_level, homeassistant=raw.get("homeassistant"),
    )


def _db_path(storage: dict, source: str) -> str:
    """An absolute path: a relative one would resolve in the working directory, which for
    the service is its RuntimeDirectory (/run/dispenser), emptied at every restart."""
    path = _text(storage, "storage.db", None, source)
    if path is None:
        return default_db_path()
    if not os.path.isabs(path):
        raise ConfigError(f"{source}: storage.db must be an absolute path, not {path!r} "
                          "(a relative one is lost at every restart of the service)")
    return path


def _check_parts(raw: dict, source: str) -> None:
    """The hardware, MQTT and clinic tables are checked by their owners, before anything starts."""
    from .hardware.errors import HardwareConfigError
    from .hardware.settings import parse_hardware_config
    from .mqtt_settings import MqttSettings
    try:
        parse_hardware_config(raw.get("hardware", {}))
    except HardwareConfigError as error:
        raise ConfigError(f"{source}: {error}") from None
    if "mqtt" in raw:
        try:
            MqttSettings.from_config(raw["mqtt"])
        except ValueError as error:
            raise ConfigError(f"{source}: {error}") from None
    if "homeassistant" in raw:
        from .homeassistant import HomeAssistantSettings
        try:
            HomeAssistantSettings.from_config(raw["homeassistant"])
        except ValueError as error:
            raise ConfigError(f"{source}: {error}") from None
    clinic = raw.get("clinic", {})
    keys = clinic.get("keys", {})
    if not isinstance(keys, dict):
        raise ConfigError(f"{source}: clinic.keys must be a table of key_id = \"base64 public key\"")
    named = {"clinic.public_key": clinic["public_key"]} if "public_key" in clinic else {}
    named.update({f"clinic.keys.{key_id}": key for key_id, key in keys.items()})
    for dotted, key in named.items():
        try:
            raw_key = base64.b64decode(key, validate=True) if isinstance(key, str) else b""
        except (binascii.Error, ValueError):
            raw_key = b""
        if len(raw_key) != 32:
            raise ConfigError(f"{source}: {dotted} must be the base64 of a raw 32-byte Ed25519 key")


@overload
def _text(table: dict, dotted: str, default: str, source: str) -> str: ...


@overload
def _text(table: dict, dotted: str, default: None, source: str) -> str | None: ...


def _text(table: dict, dotted: str, default: str | None, source: str) -> str | None:
    value = table.get(dotted.split(".")[-1], default)
    if value is not default and (not isinstance(value, str) or not value):
        raise ConfigError(f"{source}: {dotted} must be a non-empty string")
    return value
