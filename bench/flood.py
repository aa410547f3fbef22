"""A flood on `schedule/set`: does the button still answer, and how much memory does it take?

    .venv/bin/python bench/flood.py [--messages 10000] [--size 4400] [--protocol 5] [--dir DIR]

What runs: a private Mosquitto (tests/broker.py, unbounded queues) on a free port; in
this process the real Daemon class with its real Sync (`runner.build_daemon`, the
demo schedule on simulated hardware, a real SQLite log, the daemon loop on its own
thread, as `dispenser run` assembles it); in a separate process, a publisher sending
N unsigned `schedule/set` of the given size at QoS 1 as fast as the broker takes them.
While the flood is being delivered the bench holds the button (an as-needed request)
every 0.1 s and times each until its `prn.released` / `prn.denied` is logged.

Prints: press-to-answer (max and median; goal under 1 s), the peak resident memory of
this process (VmHWM: the daemon, its sync and paho; goal under 120 MB, the unit's
MemoryMax), how many messages reached the device, how many the daemon handled, and
the events logged (rejections are rate-limited, so this stays small).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from broker import Broker  # noqa: E402
from dispenser.config import load_config  # noqa: E402
from dispenser.runner import build_daemon, run_daemon  # noqa: E402
from dispenser.signing import generate_keypair  # noqa: E402
from dispenser.store import Store  # noqa: E402

DEVICE = "bench-0001"

PUBLISHER = r"""
import json, sys, time
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
host, port, topic, count, size = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="flood", protocol=MQTTProtocolVersion.MQTTv5)
client.max_inflight_messages_set(1000)
client.max_queued_messages_set(0)
client.connect(host, port)
client.loop_start()
began = time.monotonic()
infos = []
for n in range(count):
    body = json.dumps({"schema": "dispenser.schedule/1", "version": n, "pad": ""})
    infos.append(client.publish(topic, body[:-2] + "x" * max(0, size - len(body)) + '"}', qos=1))
for info in infos:
    info.wait_for_publish(600)
print(f"{time.monotonic() - began:.2f}", flush=True)
client.loop_stop()
client.disconnect()
"""


def peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=4400, help="bytes per message")
    parser.add_argument("--protocol", default="5", choices=["5", "3.1.1"])
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="flood-"))
    workdir.mkdir(parents=True, exist_ok=True)
    broker = Broker(workdir / "broker").start()
    try:
        run(args, workdir, broker)
    finally:
        broker.stop()


def run(args, workdir: Path, broker: Broker) -> None:
    _, public = generate_keypair()
    config_path = workdir / "config.toml"
    config_path.write_text(
        f'[device]\nid = "{DEVICE}"\n[hardware]\nbackend = "sim"\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\ntls = false\nprotocol = "{args.protocol}"\n'
        f'[clinic]\npublic_key = "{public}"\n[storage]\ndb = "{workdir / "d.db"}"\n')
    config = load_config(str(config_path))
    built, holder = threading.Event(), []
    answers: list[float] = []
    answered = threading.Event()

    def on_events(events: list[dict]) -> None:
        if any(e["type"] in ("prn.released", "prn.denied") for e in events):
            answers.append(time.monotonic())
            answered.set()

    def live() -> None:  # SQLite objects belong to their thread: build and run on the daemon's
        daemon = build_daemon(config, None, simulated=True, demo=True)
        daemon.engine.listeners.append(on_events)
        holder.append(daemon)
        built.set()
        run_daemon(daemon)

    runner = threading.Thread(target=live, daemon=True)
    runner.start()
    if not built.wait(30):
        raise SystemExit("the daemon did not start")
    daemon = holder[0]
    if not daemon.sync.wait_connected(10):
        raise SystemExit(f"no connection: {daemon.sync.last_error}")
    with Store.open(config.db_path, DEVICE) as store:
        before = store.last_event()["seq"]
    base_mb = peak_mb()
    topic = f"pilldispenser/{DEVICE}/schedule/set"
    began = time.monotonic()
    publisher = subprocess.Popen([sys.executable, "-c", PUBLISHER, broker.host, str(broker.port), topic,
                                  str(args.messages), str(args.size)], stdout=subprocess.PIPE, text=True)
    inbox = daemon.sync.inbox
    latencies: list[float] = []
    while inbox.received < args.messages and time.monotonic() - began < 600:
        if inbox.received == 0:
            time.sleep(0.01)
            continue
        answered.clear()
        pressed = time.monotonic()
        daemon.put("hold")
        if not answered.wait(30):
            raise SystemExit("a hold was not answered within 30 s")
        latencies.append(answers[-1] - pressed)
        time.sleep(0.1)
    delivered_after = time.monotonic() - began
    published_in = publisher.stdout.read().strip()
    publisher.wait(60)
    while inbox._busy and time.monotonic() - began < 600:  # the last one handled
        time.sleep(0.05)
    daemon.put("stop")
    runner.join(60)
    with Store.open(config.db_path, DEVICE) as store:
        logged = [e for e in store.events() if e["seq"] > before]
    kinds: dict[str, int] = {}
    for event in logged:
        kind = event["type"] + (f"({event['data']['kind']})" if event["type"] == "alert.raised" else "")
        kinds[kind] = kinds.get(kind, 0) + 1
    handled = inbox.received - inbox.replaced
    print(f"flood: {args.messages} unsigned schedule/set of {args.size} bytes, MQTT {args.protocol}; "
          f"published in {published_in} s, all delivered to the device after {delivered_after:.1f} s")
    print(f"device: received {inbox.received}, handled {handled}, replaced by a newer one {inbox.replaced}, "
          f"dropped past the ack bound {inbox.dropped}")
    if latencies:
        print(f"press-to-answer during the flood: {len(latencies)} holds, max {max(latencies) * 1000:.0f} ms, "
              f"median {statistics.median(latencies) * 1000:.0f} ms (goal < 1000 ms)")
    print(f"peak memory (VmHWM) of the daemon process: {peak_mb():.1f} MB "
          f"(before the flood {base_mb:.1f} MB; goal < 120 MB)")
    print(f"events logged during the flood: {len(logged)} {json.dumps(kinds, sort_keys=True)}")


if __name__ == "__main__":
    main()
