"""The `[mqtt]` config table and the device's topic names (contract sections 1 and 4).

Apart from sync.py so that the config loader can check `[mqtt]` without importing paho.

    >>> settings = MqttSettings.from_config({"host": "broker.clinic", "port": 8883})
    >>> Topics(settings.topic_prefix, "disp-0001").schedule_set
    'pilldispenser/disp-0001/schedule/set'
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

PROTOCOLS = ("5", "3.1.1")


@dataclass(frozen=True)
class MqttSettings:
    """How to reach the clinic's broker.

    From a config file TLS is on unless the table says `tls = false` (plain MQTT must
    be asked for); `tls_ca` absent then means the system's CA store. Built in code,
    `tls=None` means: TLS when `tls_ca` or a client certificate is set.
    """

    host: str
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    topic_prefix: str = "pilldispenser"
    protocol: str = "5"
    keepalive: int = 30
    tls: bool | None = None

    def __post_init__(self) -> None:
        if self.tls is None:
            object.__setattr__(self, "tls", bool(self.tls_ca or self.tls_cert))

    def for_command(self, command: str) -> "MqttSettings":
        """The account of a one-shot command (`sync`, `simulate`): `{username}-{command}`.

        The clinic's broker binds every account to one client id (docs/MQTT.md), so a
        one-shot, which connects as `{device_id}-{command}`, logs in with an account of
        its own (same password) and can never knock the daemon off.
        """
        return replace(self, username=f"{self.username}-{command}") if self.username else self

    @classmethod
    def from_config(cls, table: dict[str, Any]) -> "MqttSettings":
        """Build from the TOML `[mqtt]` table; ValueError with one line naming the key.

        Unknown keys are refused too: a misspelt `tls_ca` would otherwise silently
        send the device's data in clear text.
        """
        if not isinstance(table, dict):
            raise ValueError("mqtt: must be a table")
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(table) - known)
        if unknown:
            raise ValueError(f"mqtt.{unknown[0]}: unknown key (known: {', '.join(sorted(known))})")
        if "host" not in table:
            raise ValueError("mqtt.host: required")
        values = {
            "host": _text(table, "host"),
            "port": _integer(table, "port", 1883, 1, 65535),
            "username": _optional_text(table, "username"),
            "password": _optional_text(table, "password"),
            "tls_ca": _optional_file(table, "tls_ca"),
            "tls_cert": _optional_file(table, "tls_cert"),
            "tls_key": _optional_file(table, "tls_key"),
            "topic_prefix": _topic_prefix(table),
            "protocol": _protocol(table),
            "keepalive": _integer(table, "keepalive", 30, 1, 65535),
            "tls": table.get("tls", True),
        }
        if not isinstance(values["tls"], bool):
            raise ValueError(f"mqtt.tls: must be true or false, got {values['tls']!r}")
        if not values["tls"] and (values["tls_ca"] or values["tls_cert"]):
            raise ValueError("mqtt.tls: false (plain MQTT) contradicts mqtt.tls_ca / mqtt.tls_cert")
        if values["password"] is not None and values["username"] is None:
            raise ValueError("mqtt.password: needs mqtt.username")
        if values["tls_key"] is not None and values["tls_cert"] is None:
            raise ValueError("mqtt.tls_key: needs mqtt.tls_cert")
        return cls(**values)


@dataclass(frozen=True)
class Topics:
    """The topics of one device under `{prefix}/{device_id}`."""

    prefix: str
    device_id: str

    def __post_init__(self) -> None:
        if not self.device_id or any(char in self.device_id for char in "/+#\0"):
            raise ValueError(f"device id {self.device_id!r} cannot be part of an MQTT topic")

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.device_id}"

    @property
    def events(self) -> str:
        return f"{self.base}/events"

    @property
    def alerts(self) -> str:
        return f"{self.base}/alerts"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def state(self) -> str:
        return f"{self.base}/state"

    @property
    def schedule_set(self) -> str:
        return f"{self.base}/schedule/set"


def _text(table: dict, key: str) -> str:
    value = table[key]
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"mqtt.{key}: must be a non-empty string, got {value!r}")
    return value


def _optional_text(table: dict, key: str) -> str | None:
    return None if table.get(key) is None else _text(table, key)


def _optional_file(table: dict, key: str) -> str | None:
    """A path; whether the file is there and usable is the link's business when it connects:
    a missing CA must leave the device dispensing offline, not stop it (sync.Sync.unusable)."""
    return _optional_text(table, key)


def _integer(table: dict, key: str, default: int, low: int, high: int) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"mqtt.{key}: must be an integer from {low} to {high}, got {value!r}")
    return value


def _topic_prefix(table: dict) -> str:
    prefix = table.get("topic_prefix", "pilldispenser")
    if (not isinstance(prefix, str) or not prefix or prefix.startswith("/") or prefix.endswith("/")
            or any(char in prefix for char in "+#\0")):
        raise ValueError(f"mqtt.topic_prefix: must be a topic without wildcards or outer '/', got {prefix!r}")
    return prefix


def _protocol(table: dict) -> str:
    value = table.get("protocol", "5")
    text = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    if text not in PROTOCOLS:
        raise ValueError(f'mqtt.protocol: must be "5" or "3.1.1", got {value!r}')
    return text
