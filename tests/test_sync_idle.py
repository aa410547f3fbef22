"""The MQTT sync asleep: paho's network thread sleeps a quarter of the keepalive, not 1 s,
and rows nobody took (0x10) go again in rounds; nothing it must do waits for either."""
from __future__ import annotations

import queue
import threading
from datetime import datetime, timezone

import pytest

from broker import Clinic
from waiting import HANG, finishes, wait_until
from dispenser.events import Draft
from dispenser.store import Store
from dispenser.sync import (NETWORK_WAIT_MAX_S, MqttSettings, Sync, Topics, network_wait_for,
                            retry_round)

DEVICE = "disp-0001"
TOPICS = Topics("pilldispenser", DEVICE)


@pytest.mark.parametrize("keepalive, wait", [(30, 7.5), (60, 15.0), (2, 1.0), (4, 1.0), (8, 2.0),
                                             (65535, NETWORK_WAIT_MAX_S)])
def test_the_network_thread_sleeps_a_quarter_of_the_keepalive(keepalive, wait):
    assert network_wait_for(keepalive) == wait


@pytest.mark.parametrize("waiting, now, room, expected", [
    ({5: 10.0, 6: 10.2, 7: 14.9, 8: 15.1}, 10.0, 20, [5, 6, 7]),  # due, and due within the 5 s slack
    ({5: 10.0, 6: 30.0}, 10.0, 20, [5]),                          # a row far off waits its turn
    ({5: 10.1, 6: 12.0}, 4.0, 20, []),                            # none due: none goes early alone
    ({9: 1.0, 3: 2.0, 4: 3.0}, 5.0, 2, [3, 4]),                   # lowest first, at most `room`
    ({1: 1.0, 500: 1.0}, 5.0, 20, [1]),                           # within the span read back
])
def test_rows_due_again_go_in_one_round(waiting, now, room, expected):
    assert retry_round(waiting, now, slack=5.0, room=room, span=200) == expected


def test_a_round_never_sends_a_row_later_than_its_time():
    waiting = {seq: 100.0 + seq * 0.5 for seq in range(1, 40)}
    for tick in range(0, 80):
        now = 100.0 + tick * 0.25
        chosen = retry_round(waiting, now, slack=5.0, room=100, span=1000)
        assert all(seq in chosen for seq, when in waiting.items() if when <= now)


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path / "d.db", DEVICE) as opened:
        yield opened


def test_nothing_waits_for_the_network_threads_sleep(broker, store):
    """With a select() timeout far beyond HANG, an event still leaves at once, a schedule/set
    still arrives, and stop() still returns: only the keepalive is paced by the sleep."""
    received: queue.Queue = queue.Queue()

    def take(item) -> None:
        received.put(item.payload)
        item.done()

    sync = Sync(MqttSettings(host=broker.host, port=broker.port), DEVICE,
                lambda: Store.open(store.name, DEVICE), on_schedule=take)
    sync._client.network_wait = 10 * HANG
    clinic = Clinic(broker, client_id="clinic").connect(TOPICS.events)
    try:
        sync.start()
        assert sync.wait_connected(HANG), sync.last_error
        [event] = store.append([Draft("device.started", {})], _now())
        sync.notify()
        assert clinic.wait_for(lambda: any(t == TOPICS.events for t, _, _ in clinic.messages), HANG)
        assert sync.wait_idle(HANG) and store.backlog() == 0
        clinic.publish(TOPICS.schedule_set, b'{"signed": "x"}')
        assert received.get(timeout=HANG) == b'{"signed": "x"}'
        finishes(sync.stop)
    finally:
        sync.stop()
        clinic.close()


def test_a_short_keepalive_keeps_the_connection_with_its_pings(broker, store):
    """keepalive 2 s: the broker drops a client silent for 3 s; the pings keep it."""
    lines: list[str] = []
    lock = threading.Lock()
    sync = Sync(MqttSettings(host=broker.host, port=broker.port, keepalive=2), DEVICE,
                lambda: Store.open(store.name, DEVICE))

    def keep(client, userdata, level, line) -> None:
        with lock:
            lines.append(line)

    sync._client.on_log = keep
    try:
        sync.start()
        assert sync.wait_connected(HANG), sync.last_error
        # The second answer comes 4 s or more after the connect: past the 3 s a silent client is given.
        assert wait_until(lambda: sum("Received PINGRESP" in line for line in list(lines)) >= 2)
        assert sync.connected
        assert not any("disconnect" in line.lower() for line in lines), lines
    finally:
        sync.stop()


def _now() -> datetime:
    return datetime.now(timezone.utc)
