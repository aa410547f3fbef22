"""The broker down for a day: events wait in the outbox, across a restart, then all arrive in order."""
from __future__ import annotations

from broker import Clinic
from dispenser.mqtt_settings import MqttSettings
from dispenser.store import Store
from dispenser.sync import Sync
from inprocess import dispenser
from support import DEMO
from waiting import HANG

DEVICE = "disp-0001"


def simulate(scenario, config, db):
    result = dispenser("simulate", "--scenario", scenario, "--config", config, "--db", db)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_a_day_offline_then_everything_arrives_once_and_in_order(tmp_path, broker):
    db = tmp_path / "d.db"
    config = tmp_path / "c.toml"
    config.write_text(f'[device]\nid = "{DEVICE}"\n[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\ntls = false\n')
    (tmp_path / "schedule.json").write_text((DEMO / "schedule.json").read_text())
    day1 = DEMO / "first-day.toml"
    day2 = tmp_path / "second-day.toml"  # the device restarted: the next day, same log
    day2.write_text(day1.read_text().replace("2026-11-25", "2026-11-26").replace("2026-11-24", "2026-11-25"))
    broker.stop()

    printed = simulate(day1, config, db) + simulate(day2, config, db)
    with Store.open(db, DEVICE) as store:
        waiting = store.backlog()
        total = store.event_count()
    assert waiting == total == len(printed) > 30  # nothing was sent, nothing lost

    broker.start()
    clinic = Clinic(broker).connect(f"pilldispenser/{DEVICE}/events")
    sync = Sync(MqttSettings(broker.host, broker.port), DEVICE, lambda: Store.open(db, DEVICE), client_suffix="sync")
    assert sync.drain_once(timeout=HANG)
    assert clinic.wait_for(lambda: len(clinic.on(f"pilldispenser/{DEVICE}/events")) >= total, HANG)
    received = clinic.json_on(f"pilldispenser/{DEVICE}/events")
    unique = list({e["event_id"]: e for e in received}.values())
    assert [e["seq"] for e in unique] == list(range(1, total + 1))
    with Store.open(db, DEVICE) as store:
        assert store.backlog() == 0
    clinic.close()


def test_a_scenario_with_mqtt_publishes_as_the_daemon_does(tmp_path, broker):
    config = tmp_path / "c.toml"
    config.write_text(f'[device]\nid = "{DEVICE}"\n[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\ntls = false\n')
    clinic = Clinic(broker).connect(f"pilldispenser/{DEVICE}/#")
    printed = simulate(DEMO / "first-day.toml", config, tmp_path / "d.db")
    received = clinic.json_on(f"pilldispenser/{DEVICE}/events")  # drained before simulate exited
    assert [e["seq"] for e in received] == list(range(1, len(printed) + 1))
    alerts = clinic.json_on(f"pilldispenser/{DEVICE}/alerts")
    assert alerts and all(a["type"] == "alert.raised" for a in alerts)
    statuses = clinic.on(f"pilldispenser/{DEVICE}/status")
    assert statuses == []  # a one-shot command never touches the daemon's status
    clinic.close()
