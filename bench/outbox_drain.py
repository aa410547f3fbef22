"""How fast the outbox drains to a broker, against raw paho doing the same publishes.

    .venv/bin/python bench/outbox_drain.py [--events 10000] [--dir DIR]

A private Mosquitto (tests/broker.py) on a free port; a fresh Store with N events;
then, in the same run, (1) `Sync.drain_once`: every row published at QoS 1, PUBACKed
and marked sent in SQLite (WAL, synchronous=FULL), and (2) raw paho publishing the same
N payloads at QoS 1 with the same in-flight window, waiting for every PUBACK. The
ratio raw/ours says what the durability costs; the goal is 0.5 or better.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion  # noqa: E402

from broker import Broker  # noqa: E402
from dispenser.events import Draft  # noqa: E402
from dispenser.store import Store  # noqa: E402
from dispenser.sync import INFLIGHT_WINDOW, MqttSettings, Sync  # noqa: E402

DEVICE = "bench-0001"
START = datetime(2026, 11, 21, 13, 0, tzinfo=timezone.utc)
DATA = {"medication_id": "sertraline", "scheduled_at": "2026-11-21T13:00:00Z", "quantity": 1}
BATCH = 500


def fill(path: Path, events: int) -> list[str]:
    """A fresh Store with `events` events (appended in batches); returns their payloads."""
    with Store.open(path, DEVICE) as store:
        for first in range(0, events, BATCH):
            count = min(BATCH, events - first)
            store.append([Draft("dose.taken", DATA) for _ in range(count)], START + timedelta(seconds=first))
        return [payload for _, payload in store.unsent(events)]


def time_ours(broker: Broker, path: Path, events: int) -> float:
    settings = MqttSettings(host=broker.host, port=broker.port)
    sync = Sync(settings, DEVICE, lambda: Store.open_outbox(path, DEVICE), client_suffix="bench")
    began = time.perf_counter()
    ok = sync.drain_once(timeout=600)
    elapsed = time.perf_counter() - began
    with Store.open(path, DEVICE) as store:
        left = store.backlog()
    if not ok or left:
        raise SystemExit(f"drain_once failed: ok={ok}, {left} rows left, last_error={sync.last_error}")
    return elapsed


def time_raw(broker: Broker, payloads: list[str], window: int) -> float:
    """Raw paho, the same QoS 1 window: publish when a slot is free, until every PUBACK is in.

    Connect time is included, as it is in drain_once.
    """
    cond = threading.Condition()
    state = {"acked": 0, "connected": False}

    def on_connect(client, userdata, flags, reason_code, properties):
        with cond:
            state["connected"] = True
            cond.notify_all()

    def on_publish(client, userdata, mid, reason_code, properties):
        with cond:
            state["acked"] += 1
            cond.notify_all()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-raw", protocol=MQTTProtocolVersion.MQTTv5)
    client.max_inflight_messages_set(window)
    client.on_connect, client.on_publish = on_connect, on_publish
    topic = f"pilldispenser/{DEVICE}/events"
    began = time.perf_counter()
    client.connect_async(broker.host, broker.port, 30, clean_start=True)
    client.loop_start()
    try:
        with cond:
            cond.wait_for(lambda: state["connected"], 10)
        for sent, payload in enumerate(payloads):
            with cond:
                cond.wait_for(lambda: sent - state["acked"] < window)
            client.publish(topic, payload, qos=1)
        with cond:
            cond.wait_for(lambda: state["acked"] == len(payloads), 600)
        return time.perf_counter() - began
    finally:
        client.disconnect()
        client.loop_stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--dir", help="where to put the scratch database (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        with Broker(Path(scratch) / "broker") as broker:
            path = Path(scratch) / "bench.db"
            began = time.perf_counter()
            payloads = fill(path, args.events)
            print(f"filled {args.events} events in {time.perf_counter() - began:.2f} s")
            raw = time_raw(broker, payloads, INFLIGHT_WINDOW)
            ours = time_ours(broker, path, args.events)
    print(f"raw paho (window {INFLIGHT_WINDOW}): {raw:7.2f} s  {args.events / raw:8.0f} events/s")
    print(f"Sync.drain_once:         {ours:7.2f} s  {args.events / ours:8.0f} events/s")
    ratio = raw / ours
    print(f"ratio raw/ours: {ratio:.2f} (goal 0.5 or better: {'met' if ratio >= 0.5 else 'MISSED'})")


if __name__ == "__main__":
    main()
