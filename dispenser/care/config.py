"""care.toml, the care service's configuration (contract section 7), read and checked whole.

As with the device's config, an unknown table or key is an error naming it: a misspelt
`clinic_notify` would silently leave a clinic untold. Pure apart from reading the file.

    config = load_care_config("care.toml")
    config.patient("disp-0001").name    # 'Sam'
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..config import read_toml
from ..mqtt_settings import MqttSettings

DEFAULT_PATH = Path("/etc/dispenser/care.toml")
DEFAULT_DB = "sqlite:////var/lib/dispenser-care/care.db"
DEFAULT_LISTEN = "127.0.0.1:8080"

KNOWN: dict[str, set[str]] = {
    "mqtt": {"host", "port", "username", "password", "tls", "tls_ca", "tls_cert", "tls_key",
             "topic_prefix", "protocol", "keepalive"},
    "database": {"url"},
    "web": {"listen", "public_url", "login_max_failures", "login_window_s", "login_lockout_s"},
    "alerts": {"batch_s", "gap_after_s", "tick_s", "retry_after_s"},
    "patterns": {"missed_run", "side_effects_repeat", "side_effects_days", "mood_days", "mood_drop"},
    "patient": {"device", "name", "notify", "clinic_notify", "escalate_after_min", "offline_after_min",
                "quiet_hours", "timezone"},
}


class CareConfigError(ValueError):
    """One line naming the file and the key that is wrong."""


@dataclass(frozen=True)
class QuietHours:
    """A daily span of local time in which only critical alerts go out; may pass midnight."""

    start: time
    end: time

    def covers(self, local: time) -> bool:
        """Whether a local time of day falls inside: [start, end), across midnight when end <= start."""
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


@dataclass(frozen=True)
class Patient:
    """One person and their dispenser: who hears of it first, and who next."""

    device: str
    name: str
    notify: tuple[str, ...] = ()
    clinic_notify: tuple[str, ...] = ()
    escalate_after_min: int = 15
    offline_after_min: int = 30
    quiet_hours: QuietHours | None = None
    timezone: str = "UTC"

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True)
class AlertSettings:
    """The service's timings: how long a new alert waits for others of its device to join it
    (`batch_s`), how long a gap in a log may stay open before it is an alert (`gap_after_s`:
    a shared subscription hands one device's events to several workers, so seq 6 may be
    stored a moment before seq 5), how often the ladder looks (`tick_s`), and when a
    message that could not be delivered is tried again (`retry_after_s`)."""

    batch_s: int = 10
    gap_after_s: int = 60
    tick_s: int = 5
    retry_after_s: int = 60


@dataclass(frozen=True)
class PatternSettings:
    """Thresholds of the patterns a clinician should hear of (docs/CARE.md, "Patterns")."""

    missed_run: int = 3             # missed or declined doses of one medication in a row
    side_effects_repeat: int = 3    # check-ins reporting side effects ...
    side_effects_days: int = 7      # ... within this many days
    mood_days: int = 14             # mood compared over this many days ...
    mood_drop: float = 1.0          # ... falling by at least this much (1-5 scale)


@dataclass(frozen=True)
class LoginLimits:
    """Failed staff logins (web/throttle.py): after `max_failures` for one name, or from one
    client address, within `window_s`, that name or address is refused for `lockout_s`."""

    max_failures: int = 5
    window_s: int = 900
    lockout_s: int = 900


@dataclass(frozen=True)
class CareConfig:
    mqtt: MqttSettings | None = None
    database_url: str = DEFAULT_DB
    listen: str = DEFAULT_LISTEN
    public_url: str = f"http://{DEFAULT_LISTEN}"
    alerts: AlertSettings = field(default_factory=AlertSettings)
    patterns: PatternSettings = field(default_factory=PatternSettings)
    patients: tuple[Patient, ...] = ()
    source: str = "built-in defaults"
    login: LoginLimits = field(default_factory=LoginLimits)

    def patient(self, device: str) -> Patient | None:
        return next((p for p in self.patients if p.device == device), None)


def locate(path: str | None) -> Path:
    """--config, else $DISPENSER_CARE_CONFIG, else /etc/dispenser/care.toml."""
    if path:
        return Path(path)
    return Path(os.environ.get("DISPENSER_CARE_CONFIG") or DEFAULT_PATH)


def load_care_config(path: str | None = None) -> CareConfig:
    """Read and check the file; CareConfigError (one line) for anything wrong."""
    found = locate(path)
    raw = read_toml(found, CareConfigError)
    try:
        return parse_care_config(raw, str(found))
    except CareConfigError as error:
        raise CareConfigError(f"{found}: {error}") from None


def parse_care_config(raw: dict[str, Any], source: str = "care.toml") -> CareConfig:
    """The checked config from a parsed TOML document."""
    unknown = sorted(set(raw) - set(KNOWN))
    if unknown:
        raise CareConfigError(f"[{unknown[0]}]: unknown table (known: {', '.join(sorted(KNOWN))})")
    tables = {name: _table(raw, name) for name in ("mqtt", "database", "web", "alerts", "patterns")}
    for name, table in tables.items():
        _no_unknown_keys(name, table)
    mqtt = None
    if "mqtt" in raw:
        try:
            mqtt = MqttSettings.from_config(tables["mqtt"])
        except ValueError as error:
            raise CareConfigError(str(error)) from None
    url = _text(tables["database"], "database", "url", DEFAULT_DB)
    if not (url.startswith("sqlite:///") or url.startswith(("postgresql://", "postgres://"))):
        raise CareConfigError(f'database.url: must start with "sqlite:///" or "postgresql://", got {url!r}')
    listen = _text(tables["web"], "web", "listen", DEFAULT_LISTEN)
    if not re.fullmatch(r"[^\s:]+:\d{1,5}", listen):
        raise CareConfigError(f'web.listen: must be "HOST:PORT", got {listen!r}')
    public_url = _text(tables["web"], "web", "public_url", f"http://{listen}").rstrip("/")
    alerts = AlertSettings(**{key: _integer(tables["alerts"], "alerts", key, default, 0, 86_400)
                              for key, default in vars(AlertSettings()).items()})
    if alerts.tick_s < 1:
        raise CareConfigError("alerts.tick_s: must be at least 1")
    patterns = _patterns(tables["patterns"])
    patients = _patients(raw.get("patient", []))
    login = LoginLimits(
        max_failures=_integer(tables["web"], "web", "login_max_failures", LoginLimits.max_failures, 1, 1000),
        window_s=_integer(tables["web"], "web", "login_window_s", LoginLimits.window_s, 1, 86_400),
        lockout_s=_integer(tables["web"], "web", "login_lockout_s", LoginLimits.lockout_s, 1, 86_400))
    return CareConfig(mqtt, url, listen, public_url, alerts, patterns, patients, source, login)


def _table(raw: dict[str, Any], name: str) -> dict[str, Any]:
    table = raw.get(name, {})
    if not isinstance(table, dict):
        raise CareConfigError(f"[{name}]: must be a table")
    return table


def _no_unknown_keys(name: str, table: dict[str, Any], where: str | None = None) -> None:
    unknown = sorted(set(table) - KNOWN[name])
    if unknown:
        raise CareConfigError(f"{where or name}.{unknown[0]}: unknown key (known: {', '.join(sorted(KNOWN[name]))})")


def _text(table: dict[str, Any], where: str, key: str, default: str | None = None) -> str:
    value = table.get(key, default)
    if not isinstance(value, str) or not value.strip():
        raise CareConfigError(f"{where}.{key}: must be a non-empty string, got {value!r}")
    return value


def _integer(table: dict[str, Any], where: str, key: str, default: int, low: int, high: int) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise CareConfigError(f"{where}.{key}: must be a whole number from {low} to {high}, got {value!r}")
    return value


def _patterns(table: dict[str, Any]) -> PatternSettings:
    defaults = PatternSettings()
    drop = table.get("mood_drop", defaults.mood_drop)
    if isinstance(drop, bool) or not isinstance(drop, (int, float)) or not 0 < drop <= 4:
        raise CareConfigError(f"patterns.mood_drop: must be a number above 0 and at most 4, got {drop!r}")
    return PatternSettings(
        missed_run=_integer(table, "patterns", "missed_run", defaults.missed_run, 2, 100),
        side_effects_repeat=_integer(table, "patterns", "side_effects_repeat", defaults.side_effects_repeat, 2, 100),
        side_effects_days=_integer(table, "patterns", "side_effects_days", defaults.side_effects_days, 1, 90),
        mood_days=_integer(table, "patterns", "mood_days", defaults.mood_days, 2, 90),
        mood_drop=float(drop))


def _patients(entries: object) -> tuple[Patient, ...]:
    if not isinstance(entries, list):
        raise CareConfigError("[[patient]]: must be an array of tables ([[patient]])")
    patients: list[Patient] = []
    for index, entry in enumerate(entries):
        where = f"patient[{index}]"
        if not isinstance(entry, dict):
            raise CareConfigError(f"{where}: must be a table")
        _no_unknown_keys("patient", entry, where)
        if "device" not in entry or "name" not in entry:
            raise CareConfigError(f"{where}: needs device and name")
        device = _text(entry, where, "device")
        if any(char in device for char in "/+#\0"):
            raise CareConfigError(f"{where}.device: {device!r} cannot be part of an MQTT topic")
        if any(p.device == device for p in patients):
            raise CareConfigError(f"{where}.device: {device!r} is named twice")
        patients.append(Patient(
            device=device,
            name=_text(entry, where, "name"),
            notify=_urls(entry, where, "notify"),
            clinic_notify=_urls(entry, where, "clinic_notify"),
            escalate_after_min=_integer(entry, where, "escalate_after_min", 15, 1, 10_080),
            offline_after_min=_integer(entry, where, "offline_after_min", 30, 1, 10_080),
            quiet_hours=_quiet_hours(entry, where),
            timezone=_timezone(entry, where)))
    return tuple(patients)


def _urls(entry: dict[str, Any], where: str, key: str) -> tuple[str, ...]:
    value = entry.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(url, str) and "://" in url for url in value):
        raise CareConfigError(f"{where}.{key}: must be a list of apprise URLs (scheme://...)")
    return tuple(value)


def _quiet_hours(entry: dict[str, Any], where: str) -> QuietHours | None:
    value = entry.get("quiet_hours")
    if value is None:
        return None
    match = re.fullmatch(r"(\d{2}):(\d{2})-(\d{2}):(\d{2})", value) if isinstance(value, str) else None
    try:
        if match is None:
            raise ValueError
        h1, m1, h2, m2 = (int(part) for part in match.groups())
        hours = QuietHours(time(h1, m1), time(h2, m2))
    except ValueError:
        raise CareConfigError(f'{where}.quiet_hours: must be "HH:MM-HH:MM", got {value!r}') from None
    if hours.start == hours.end:
        raise CareConfigError(f"{where}.quiet_hours: start and end are the same time")
    return hours


def _timezone(entry: dict[str, Any], where: str) -> str:
    name = entry.get("timezone", "UTC")
    try:
        if not isinstance(name, str):
            raise ValueError
        ZoneInfo(name)
    except (ValueError, ZoneInfoNotFoundError):
        raise CareConfigError(f"{where}.timezone: not an IANA time zone: {name!r}") from None
    return name
