"""Home Assistant discovery (contract section 4, v2): the real daemon on a real Mosquitto
publishes retained configs that Home Assistant would take, whose templates read the real
state document, and whose availability follows the status topic and its Last Will.

Every config is held to the keys Home Assistant's MQTT discovery documents for its
component (https://www.home-assistant.io/integrations/sensor.mqtt/ and
/binary_sensor.mqtt/, "Configuration Variables"; abbreviations are not used here, so
only full names are allowed). The value templates are rendered with jinja2 (Home
Assistant's template engine) against the state document the daemon retained.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from inprocess import dispenser as run_in_process

from broker import Clinic
from dispenser.config import ConfigError, parse_config
from dispenser.daemon import device_state
from dispenser.engine import Engine
from dispenser.homeassistant import HomeAssistantSettings, discovery_messages
from dispenser.store import Store
from support import contract_schedule
from waiting import HANG

DEVICE = "disp-0001"
BASE = f"pilldispenser/{DEVICE}"
DRUG_WORDS = ("sertraline", "naltrexone", "hydroxyzine", "mg")

# From Home Assistant's MQTT docs: the configuration variables of each component, full names.
COMMON_KEYS = {
    "availability", "availability_mode", "availability_template", "availability_topic", "device",
    "device_class", "enabled_by_default", "encoding", "entity_category", "entity_picture", "expire_after",
    "force_update", "icon", "json_attributes_template", "json_attributes_topic", "name", "object_id",
    "default_entity_id", "origin", "payload_available", "payload_not_available", "platform", "qos",
    "state_topic", "unique_id", "value_template",
}
ALLOWED = {
    "sensor": COMMON_KEYS | {"last_reset_value_template", "options", "state_class",
                             "suggested_display_precision", "unit_of_measurement"},
    "binary_sensor": COMMON_KEYS | {"off_delay", "payload_off", "payload_on"},
}
REQUIRED = {"sensor": {"state_topic"}, "binary_sensor": {"state_topic"}}
DEVICE_CLASSES = {  # the ones a dispenser could use, of Home Assistant's lists
    "sensor": {"timestamp", "duration", "enum"},
    "binary_sensor": {"problem", "running", "connectivity"},
}
STATE_CLASSES = {"measurement", "total", "total_increasing"}
DURATION_UNITS = {"d", "h", "min", "s", "ms"}
DEVICE_KEYS = {"configuration_url", "connections", "hw_version", "identifiers", "manufacturer", "model",
               "model_id", "name", "serial_number", "suggested_area", "sw_version", "via_device"}
AVAILABILITY_KEYS = {"topic", "payload_available", "payload_not_available", "value_template"}


def check_config(topic: str, payload: bytes) -> dict:
    """One discovery message as Home Assistant's docs describe it; returns the parsed config."""
    prefix, component, device, object_id, leaf = topic.split("/")
    assert (prefix, device, leaf) == ("homeassistant", DEVICE, "config"), topic
    config = json.loads(payload)
    assert isinstance(config, dict)
    assert set(config) <= ALLOWED[component], (topic, set(config) - ALLOWED[component])
    assert REQUIRED[component] <= set(config), topic
    assert config["state_topic"] == f"{BASE}/state"
    assert config["unique_id"] and config["unique_id"].endswith(object_id)
    assert set(config["device"]) <= DEVICE_KEYS and config["device"]["identifiers"]
    assert config.get("device_class", "enum") in DEVICE_CLASSES[component]
    if "state_class" in config:
        assert config["state_class"] in STATE_CLASSES
        assert config.get("device_class") != "timestamp"  # Home Assistant refuses a timestamp with a state class
    if config.get("device_class") == "duration":
        assert config["unit_of_measurement"] in DURATION_UNITS
    for item in config["availability"]:
        assert set(item) <= AVAILABILITY_KEYS and item["topic"] == f"{BASE}/status"
    templates().parse(config["value_template"])  # a template Home Assistant can compile
    return config


def templates():
    """A Jinja2 environment as Home Assistant's; jinja2 is imported by the tests that render,
    not by each xdist worker that collects this module."""
    import jinja2
    return jinja2.Environment()


def render(template: str, payload: bytes | str) -> str:
    """What Home Assistant shows for a message: its template over `value` and `value_json`."""
    text = payload.decode() if isinstance(payload, bytes) else payload
    return templates().from_string(template).render(value=text, value_json=json.loads(text)).strip()


def configs(client: Clinic) -> dict[str, bytes]:
    """The newest message on every discovery topic the client saw."""
    return {topic: payload for topic, payload, _ in client.messages if topic.startswith("homeassistant/")}


# --- pure: the builder over a real engine's state document -------------------------------------

def schedule_with_display() -> dict:
    document = contract_schedule()
    for medication, display in zip(document["medications"], ("Morning", "Evening", "If needed")):
        medication["display"] = display
    return document


@pytest.fixture
def engine_day():
    """A real engine through a morning: sertraline taken at 08:00, naltrexone missed at 09:00."""
    store = Store.open(":memory:", DEVICE)
    engine = Engine(store, compartments=8, default_timezone="America/New_York")
    start = datetime(2026, 11, 24, 11, 0, tzinfo=timezone.utc)  # 06:00 in New York
    engine.apply_schedule(start, schedule_with_display(), "local",
                          stock={"sertraline": 28, "naltrexone": 20, "hydroxyzine": 10})
    engine.start(start)
    now = start
    while now < datetime(2026, 11, 24, 17, 0, tzinfo=timezone.utc):
        now += timedelta(minutes=5)
        engine.tick(now)
        if now == datetime(2026, 11, 24, 13, 0, tzinfo=timezone.utc):  # 08:00: take sertraline
            engine.press(now)
            engine.press(now + timedelta(seconds=30))
    return engine, now


def test_the_state_document_feeds_every_template(engine_day):
    engine, now = engine_day
    state = device_state(engine, now)
    text = json.dumps(state)
    messages = discovery_messages(HomeAssistantSettings(), DEVICE, BASE, state, 8)
    shown = {topic.split("/")[3]: render(json.loads(p)["value_template"], text) for topic, p in messages.items() if p}
    assert datetime.fromisoformat(shown["next_dose"]) > now  # a timestamp Home Assistant parses
    assert shown["adherence_7d"] == "50.0"  # one taken of two due
    assert shown["compartment_1_stock_days"] == "27.0"  # 27 left, one a day
    assert shown["compartment_2_stock_days"] == "11.7"  # titration: 1 + 1 + 5 x 2 = 12 tablets the coming week
    assert shown["compartment_3_stock_days"] == "None"  # as needed: no pace (Home Assistant: unknown)
    assert shown["problem"] == "ON"  # the missed dose's alert
    assert shown["last_event"] == state["last_event"]["type"]
    assert state["alerts_open"] >= 1 and state["stock"]  # the old fields stay


def test_the_problem_clears_a_day_after_the_last_alert(engine_day):
    engine, now = engine_day
    later = now + timedelta(hours=25)
    state = device_state(engine, later)
    problem = json.loads(discovery_messages(HomeAssistantSettings(), DEVICE, BASE, state, 8)[
        f"homeassistant/binary_sensor/{DEVICE}/problem/config"])
    assert [e for e in engine.store.events() if e["type"] == "alert.raised"]  # there were alerts, a day ago
    assert state["alerts_open"] == 0
    assert render(problem["value_template"], json.dumps(state)) == "OFF"


@pytest.mark.parametrize("names", ["compartments", "display"])
def test_names_carry_compartments_or_display_names_never_drugs(engine_day, names):
    engine, now = engine_day
    state = device_state(engine, now)
    messages = discovery_messages(HomeAssistantSettings(names=names), DEVICE, BASE, state, 8)
    text = "\n".join(messages.values()).lower()
    assert not [word for word in DRUG_WORDS if word in text]
    stock_names = sorted(json.loads(p)["name"] for t, p in messages.items() if p and "stock_days" in t)
    if names == "compartments":
        assert stock_names == [f"Compartment {n} days of stock" for n in (1, 2, 3)]
        assert "morning" not in text
    else:
        assert stock_names == ["Evening days of stock", "If needed days of stock", "Morning days of stock"]


def test_empty_compartments_and_a_disabled_table_delete_their_entities(engine_day):
    engine, now = engine_day
    state = device_state(engine, now)
    messages = discovery_messages(HomeAssistantSettings(), DEVICE, BASE, state, 8)
    empty = sorted(t.split("/")[3] for t, p in messages.items() if p == "")
    assert empty == [f"compartment_{n}_stock_days" for n in range(4, 9)]
    off = discovery_messages(HomeAssistantSettings(enabled=False), DEVICE, BASE, state, 8)
    assert set(off) == set(messages) and set(off.values()) == {""}


@pytest.mark.parametrize("table, problem", [
    ({"names": "drugs"}, "homeassistant.names"),
    ({"enabled": "yes"}, "homeassistant.enabled"),
    ({"discovery_prefix": "ha/#"}, "homeassistant.discovery_prefix"),
    ({"prefix": "ha"}, "homeassistant.prefix"),
])
def test_a_bad_table_is_one_line_naming_the_key(table, problem):
    with pytest.raises(ConfigError) as error:
        parse_config({"homeassistant": table}, "c.toml")
    assert problem in str(error.value) and "\n" not in str(error.value)


def test_a_bad_table_stops_the_command_with_one_line(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[homeassistant]\nnames = "drugs"\n')
    result = dispenser("status", "--config", config, "--db", tmp_path / "d.db")
    assert result.returncode == 2 and "homeassistant.names" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "d.db").exists()


# --- the real daemon, a real broker ------------------------------------------------------------

def dispenser(*args: object) -> subprocess.CompletedProcess:
    return run_in_process(*args)


def start_daemon(config) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dispenser", "run", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def stop(daemon: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if daemon.poll() is None:
        daemon.send_signal(sig)
        daemon.wait(30)


def test_the_daemon_retains_discovery_that_home_assistant_takes(tmp_path, broker):
    config = tmp_path / "config.toml"
    config.write_text(
        f'[device]\nid = "{DEVICE}"\ntimezone = "America/New_York"\n[hardware]\nbackend = "sim"\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nkeepalive = 5\ntls = false\n'
        f'[storage]\ndb = "{tmp_path / "d.db"}"\n[homeassistant]\nnames = "display"\n')
    schedule = tmp_path / "schedule.json"
    schedule.write_text(json.dumps(schedule_with_display()))
    for command in (("schedule", "apply", schedule), ("refill", "sertraline", 28), ("refill", "naltrexone", 14)):
        result = dispenser(*command, "--config", config)
        assert result.returncode == 0, result.stderr
    ha = Clinic(broker, client_id="home-assistant").connect("homeassistant/#", f"{BASE}/status", f"{BASE}/state")
    daemon = start_daemon(config)
    try:
        assert ha.wait_for(lambda: len(configs(ha)) == 4 + 8 and ha.on(f"{BASE}/state")), \
            daemon.stderr.read() if daemon.poll() is not None else configs(ha)
        first = configs(ha)
        live = {topic: check_config(topic, payload) for topic, payload in first.items() if payload}
        assert sorted(topic.split("/")[3] for topic in live) == sorted(
            ["next_dose", "adherence_7d", "last_event", "problem",
             "compartment_1_stock_days", "compartment_2_stock_days", "compartment_3_stock_days"])
        assert sorted(t for t, p in first.items() if not p) == [
            f"homeassistant/sensor/{DEVICE}/compartment_{n}_stock_days/config" for n in range(4, 9)]
        unique_ids = [config["unique_id"] for config in live.values()]
        assert len(set(unique_ids)) == len(unique_ids)
        assert "sertraline" not in "".join(map(bytes.decode, first.values())).lower()

        # Retained: Home Assistant starting later gets every live config, and none of the deleted.
        late = Clinic(broker, client_id="home-assistant-later").connect("homeassistant/#")
        try:
            assert late.wait_for(lambda: len(configs(late)) == len(live))
            assert {t: json.loads(p) for t, p in configs(late).items()} == live
            assert all(retained for _, _, retained in late.messages)
        finally:
            late.close()

        # The templates over the retained state and status.
        state = ha.on(f"{BASE}/state")[-1]
        shown = {topic.split("/")[3]: render(c["value_template"], state) for topic, c in live.items()}
        assert datetime.fromisoformat(shown["next_dose"]).tzinfo is not None
        assert shown["compartment_1_stock_days"] == "28.0" and shown["compartment_2_stock_days"] == "7.0"  # 2 a day now
        assert shown["compartment_3_stock_days"] == "None"
        assert shown["last_event"] == json.loads(state)["last_event"]["type"]
        assert shown["problem"] in ("ON", "OFF") and shown["adherence_7d"] == "None"  # nothing due yet this week
        availability = next(iter(live.values()))["availability"][0]
        assert render(availability["value_template"], ha.on(f"{BASE}/status")[-1]) == availability["payload_available"]

        # The Last Will: a daemon that dies makes every entity unavailable.
        stop(daemon, signal.SIGKILL)
        assert ha.wait_for(lambda: not json.loads(ha.on(f"{BASE}/status")[-1])["online"])
        assert render(availability["value_template"], ha.on(f"{BASE}/status")[-1]) == \
            availability["payload_not_available"]

        # A compartment emptied by a new schedule: its entity deleted; the others keep their ids.
        smaller = schedule_with_display()
        smaller["version"] = 13
        smaller["issued_at"] = "2026-11-21T09:00:00Z"
        smaller["medications"] = [m for m in smaller["medications"] if m["compartment"] != 2]
        schedule.write_text(json.dumps(smaller))
        result = dispenser("schedule", "apply", schedule, "--config", config)
        assert result.returncode == 0, result.stderr
        seen = len(ha.messages)
        daemon = start_daemon(config)
        removed = f"homeassistant/sensor/{DEVICE}/compartment_2_stock_days/config"
        assert ha.wait_for(lambda: any(t == removed and p == b"" for t, p, _ in ha.messages[seen:]))
        assert ha.wait_for(lambda: json.loads(ha.on(f"{BASE}/status")[-1])["online"])
        # Every discovery topic sent again (after "online", in one batch): a subscriber that came
        # in the middle of it would hear the rest live, deletions included, not only what is retained.
        assert ha.wait_for(lambda: {t for t, _, _ in ha.messages[seen:]} >= set(first))
        again = Clinic(broker, client_id="home-assistant-again").connect("homeassistant/#")
        try:
            assert again.wait_for(lambda: len(configs(again)) == len(live) - 1)
            now_live = {t: check_config(t, p) for t, p in configs(again).items()}
        finally:
            again.close()
        assert removed not in now_live
        assert {t: c["unique_id"] for t, c in now_live.items()} == {
            t: c["unique_id"] for t, c in live.items() if t != removed}
    finally:
        stop(daemon)
        ha.close()
