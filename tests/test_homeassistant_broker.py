"""The shipped broker (broker/) lets a device retain its own Home Assistant discovery
configs, `homeassistant/<component>/<device_id>/<object>/config`, and nobody else's."""
from __future__ import annotations

import pytest

from dispenser.homeassistant import discovery_for
from dispenser.sync import Sync
from test_broker_security import (A, B, PREFIX, _close, _raw, accounts, settings_for, shipped,  # noqa: F401
                                  syncs)
from waiting import HANG


@pytest.mark.parametrize("topic, allowed", [
    (f"homeassistant/sensor/{A}/next_dose/config", True),
    (f"homeassistant/binary_sensor/{A}/problem/config", True),
    (f"homeassistant/sensor/{B}/next_dose/config", False),
    (f"homeassistant/{A}/next_dose/config", False),
    ("homeassistant/status", False),
])
def test_a_device_writes_only_its_own_discovery_topics(shipped, tls_files, topic, allowed):
    client, events = _raw(shipped, tls_files, A)
    try:
        client.publish(topic, b'{"unique_id": "x"}', qos=1, retain=True)
        kind, reason = events.get(timeout=HANG)
        assert kind == "puback" and reason.is_failure is not allowed, (topic, reason)  # refused: 0x87
    finally:
        _close(client)


def test_the_daemons_sync_publishes_discovery_through_the_shipped_roles(shipped, tls_files, tmp_path, syncs):
    sync = Sync(settings_for(shipped, tls_files, A), A, None,
                discovery=discovery_for({}, A, PREFIX, compartments=4))
    syncs.append(sync)
    sync.start()
    assert sync.wait_connected(HANG)
    sync.publish_state({"compartments": {"1": {"count": 3, "display": None, "days_of_stock": 3.0}}})
    assert sync.wait_for(lambda s: not s._other_mids, HANG)  # every PUBACK in (state and 8 configs)
    assert sync.last_refusal is None
