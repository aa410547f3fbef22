"""What the problem sensor's `alerts_open` means, precisely: the device never hears of an
acknowledgement (contract section 4 carries none back to it), so an alert counts from its
`at` for 24 hours; and the daemon publishes the state document again when that count
falls, with no event needed, so the retained count is never a day out of date."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from broker import Clinic
from dispenser.daemon import Daemon
from dispenser.engine import Engine
from dispenser.hardware import build_sim_hardware
from dispenser.homeassistant import alerts_open
from dispenser.mqtt_settings import MqttSettings
from dispenser.store import Store
from dispenser.sync import Sync
from dispenser.timeutil import format_at
from waiting import HANG

T0 = datetime(2026, 11, 24, 10, 0, 0, 250_000, tzinfo=timezone.utc)
DEVICE = "disp-ha"


def alert(at: datetime) -> dict:
    return {"type": "alert.raised", "at": format_at(at), "data": {}}


@pytest.mark.parametrize("age, counted", [(timedelta(0), True), (timedelta(hours=23, minutes=59, seconds=59), True),
                                          (timedelta(hours=24), False), (timedelta(days=3), False),
                                          (-timedelta(seconds=1), False)])
def test_an_alert_counts_for_the_24_hours_after_its_at(age, counted):
    now = T0 + age
    events = [alert(T0), {"type": "dose.missed", "at": format_at(T0), "data": {}}]
    count, falls_at = alerts_open(events, now)
    assert count == int(counted)
    assert falls_at == (datetime(2026, 11, 25, 10, 0, 1, tzinfo=timezone.utc) if counted else None)


def test_the_count_falls_first_when_the_oldest_alert_ends_its_day():
    events = [alert(T0), alert(T0 + timedelta(hours=5)), alert(T0 - timedelta(hours=30))]
    assert alerts_open(events, T0 + timedelta(hours=6)) == (2, datetime(2026, 11, 25, 10, 0, 1, tzinfo=timezone.utc))
    assert alerts_open(events, T0 + timedelta(hours=25)) == (1, datetime(2026, 11, 25, 15, 0, 1, tzinfo=timezone.utc))


def test_the_daemon_publishes_the_state_again_when_an_alerts_day_ends(tmp_path, broker):
    db = tmp_path / "device.db"
    store = Store.open(db, DEVICE)
    engine = Engine(store, 8, "UTC")
    hardware = build_sim_hardware(lambda item: None, compartments=8, lcd_size=(16, 2), sleep=lambda s: None)
    sync = Sync(MqttSettings(broker.host, broker.port), DEVICE, lambda: Store.open(db, DEVICE))
    clinic = Clinic(broker).connect(f"pilldispenser/{DEVICE}/state")
    daemon = Daemon(engine, hardware, timezone_name="UTC", sleep=lambda s: None, sync=sync, clock_display=False)
    states = lambda: clinic.json_on(f"pilldispenser/{DEVICE}/state")  # noqa: E731
    try:
        sync.start()
        assert sync.wait_connected(HANG)
        daemon.start(T0)
        engine.fault(T0 + timedelta(minutes=1), "test", "a fault the clinic hears of")   # an alert.raised
        daemon.advance(T0 + timedelta(minutes=2))
        assert clinic.wait_for(lambda: any(state["alerts_open"] == 1 for state in states()), HANG)
        raised = next(state for state in states() if state["alerts_open"] == 1)
        assert raised["alerts_open_until"] == "2026-11-25T10:01:01Z"
        seq = engine.last_seq
        daemon.advance(T0 + timedelta(hours=30))
        until = raised["alerts_open_until"]
        assert clinic.wait_for(lambda: any(state["at"] == until for state in states()), HANG), \
            "woken and published the moment the count fell (not at the next wake-up, a day later)"
        cleared = next(state for state in states() if state["at"] == until)
        assert cleared["alerts_open"] == 0 and cleared["alerts_open_until"] is None
        assert engine.last_seq == seq, "no event was needed to publish it"
    finally:
        sync.stop()
        clinic.close()
        hardware.close()
        store.close()
