"""Home Assistant MQTT discovery for the device (contract section 4, v2): pure.

Home Assistant builds entities from retained `config` messages under its discovery
prefix; this module says which messages, from the `[homeassistant]` table and the
retained `state` document the daemon already publishes. Nothing here touches MQTT: the
sync publishes what `discovery_messages` returns (docs/MQTT.md, "Home Assistant").

Entity names carry compartment numbers, or the schedule's `display` names where the
config says `names = "display"`, never anything more: the value templates read the
state document by compartment, so no medication id reaches a discovery config.

    >>> settings = HomeAssistantSettings.from_config({"names": "compartments"})
    >>> sorted(discovery_messages(settings, "disp-0001", "p/disp-0001", {"compartments": {}}, 1))[0]
    'homeassistant/binary_sensor/disp-0001/problem/config'
"""
from __future__ import annotations

import json
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any, Callable

from .timeutil import parse_utc

# The device never hears of an acknowledgement (they live in the care service, and no
# topic brings them back: contract section 4), so "open" is what the log alone can say:
# an alert counts for a day after it was raised.
ALERT_OPEN_FOR = timedelta(hours=24)
NAMES = ("compartments", "display")
DEFAULT_PREFIX = "homeassistant"
AVAILABILITY_TEMPLATE = "{{ 'online' if value_json.online else 'offline' }}"


@dataclass(frozen=True)
class HomeAssistantSettings:
    """The `[homeassistant]` table: discovery on or off, where, and how entities are named."""

    enabled: bool = True
    discovery_prefix: str = DEFAULT_PREFIX
    names: str = "compartments"

    @classmethod
    def from_config(cls, table: Any) -> "HomeAssistantSettings":
        """ValueError with one line naming the key for anything but the documented keys."""
        if not isinstance(table, dict):
            raise ValueError("homeassistant: must be a table")
        known = {field.name for field in fields(cls)}
        for key in table:
            if key not in known:
                raise ValueError(f"unknown key homeassistant.{key}")
        enabled = table.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ValueError("homeassistant.enabled must be true or false")
        prefix = table.get("discovery_prefix", DEFAULT_PREFIX)
        if (not isinstance(prefix, str) or not prefix or prefix.startswith("/") or prefix.endswith("/")
                or any(char in prefix for char in "+#\0")):
            raise ValueError("homeassistant.discovery_prefix must be a topic such as \"homeassistant\" "
                             "(no wildcards, no leading or trailing /)")
        names = table.get("names", "compartments")
        if names not in NAMES:
            raise ValueError(f"homeassistant.names must be \"compartments\" or \"display\", not {names!r}")
        return cls(enabled=enabled, discovery_prefix=prefix, names=names)


def alerts_open(events: list[dict], now: datetime) -> tuple[int, datetime | None]:
    """(how many alerts count as open at `now`, when the first of them stops counting).

    Open, as the device can know it: an `alert.raised` whose `at` is in (now - 24 h, now].
    Acknowledgements never reach the device, so an alert acknowledged an hour ago still
    counts, and one nobody acknowledged stops after its day. The second value is when the
    count next falls (the oldest counted alert's `at` + 24 h, the second after): the daemon publishes the
    state again then, so the retained count is never one a day out of date.

        >>> from datetime import timezone
        >>> alerts_open([{"type": "alert.raised", "at": "2026-11-24T10:00:00.000Z"}],
        ...             datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc))
        (1, datetime.datetime(2026, 11, 25, 10, 0, tzinfo=datetime.timezone.utc))
    """
    ats = [parse_utc(event["at"]) for event in events if event["type"] == "alert.raised"]
    counted = [at for at in ats if now - ALERT_OPEN_FOR < at <= now]
    if not counted:
        return 0, None
    falls = min(counted) + ALERT_OPEN_FOR
    return len(counted), falls.replace(microsecond=0) + timedelta(seconds=1) if falls.microsecond else falls


def config_topic(settings: HomeAssistantSettings, component: str, device_id: str, object_id: str) -> str:
    return f"{settings.discovery_prefix}/{component}/{device_id}/{object_id}/config"


def discovery_messages(settings: HomeAssistantSettings, device_id: str, base: str, state: dict,
                       compartments: int, sw_version: str | None = None) -> dict[str, str]:
    """Every discovery topic of this device -> its retained payload (JSON text).

    `base` is `{topic_prefix}/{device_id}` (its `status` and `state` are read), `state`
    the state document, `compartments` the hardware's count. An empty payload deletes an
    entity (Home Assistant's way): a compartment without a medication in the schedule
    in force, or every entity when `enabled = false`.
    """
    device = {"identifiers": [f"dispenser-{device_id}"], "name": f"Pill dispenser {device_id}",
              "manufacturer": "dispenser (open source)", "model": "Supervised pill dispenser"}
    if sw_version:
        device["sw_version"] = sw_version
    common = {
        "device": device,
        "availability": [{"topic": f"{base}/status", "value_template": AVAILABILITY_TEMPLATE,
                          "payload_available": "online", "payload_not_available": "offline"}],
        "state_topic": f"{base}/state",
        "qos": 1,
    }
    held = state.get("compartments") or {}
    entities: dict[tuple[str, str], dict | None] = {
        ("sensor", "next_dose"): {
            "name": "Next dose", "device_class": "timestamp", "icon": "mdi:clock-outline",
            "value_template": "{{ value_json.next_dose.scheduled_at if value_json.next_dose else None }}"},
        ("sensor", "adherence_7d"): {
            "name": "Adherence 7 days", "unit_of_measurement": "%", "state_class": "measurement",
            "icon": "mdi:check-circle-outline", "value_template": "{{ value_json.adherence_7d_percent }}"},
        ("sensor", "last_event"): {
            "name": "Last event", "icon": "mdi:history",
            "value_template": "{{ value_json.last_event.type if value_json.last_event else None }}"},
        ("binary_sensor", "problem"): {
            "name": "Problem", "device_class": "problem", "payload_on": "ON", "payload_off": "OFF",
            "value_template": "{{ 'ON' if value_json.alerts_open else 'OFF' }}"},
    }
    for number in range(1, compartments + 1):
        key = str(number)
        entry = held.get(key)
        entities[("sensor", f"compartment_{number}_stock_days")] = None if entry is None else {
            "name": f"{_compartment_name(settings, number, entry)} days of stock",
            "unit_of_measurement": "d", "device_class": "duration", "state_class": "measurement",
            "icon": "mdi:pill",
            "value_template": (f"{{{{ value_json.compartments['{key}'].days_of_stock "
                               f"if '{key}' in value_json.compartments else None }}}}")}
    messages = {}
    for (component, object_id), entity in entities.items():
        topic = config_topic(settings, component, device_id, object_id)
        if entity is None or not settings.enabled:
            messages[topic] = ""
            continue
        config = {**entity, "unique_id": f"dispenser_{device_id}_{object_id}".replace("-", "_"), **common}
        messages[topic] = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return messages


def _compartment_name(settings: HomeAssistantSettings, number: int, entry: dict) -> str:
    """The compartment's number, or the schedule's `display` name where the config asks for it."""
    display = entry.get("display") if settings.names == "display" else None
    return display if isinstance(display, str) and display.strip() else f"Compartment {number}"


def discovery_for(table: dict, device_id: str, topic_prefix: str, compartments: int) -> Callable[[dict], dict[str, str]]:
    """The sync's hook: a state document -> this device's discovery messages."""
    from . import __version__
    settings = HomeAssistantSettings.from_config(table)
    base = f"{topic_prefix}/{device_id}"
    return lambda state: discovery_messages(settings, device_id, base, state, compartments, __version__)
