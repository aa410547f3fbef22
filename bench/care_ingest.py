"""The care service's ingest alone, without a broker: how many events a second one worker stores.

    .venv/bin/python bench/care_ingest.py [--devices 200] [--days 3] [--batch 100] [--sqlite] [--profile]

Builds the events of `--devices` devices over `--days` days as a device chains them
(about 33 a day: doses taken, some missed, check-ins, their alerts), interleaved across
devices as a broker hands them out, and feeds them to `Ingest.handle_batch` in batches of
`--batch` messages (1: a transaction per message) on one connection, into a throwaway
PostgreSQL cluster (tests/postgres.py; fsync off, as in the tests and bench/fleet.py) or,
with `--sqlite`, a SQLite file. Prints events per second and ms an event; `--profile`
adds cProfile's top functions by their own time, to see where an event's time goes.
"""
from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import random
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from dispenser.care.config import parse_care_config  # noqa: E402
from dispenser.care.database import Database  # noqa: E402
from dispenser.care.ingest import Ingest  # noqa: E402
from dispenser.events import GENESIS, Draft, build_event  # noqa: E402

START = datetime(2026, 11, 1, tzinfo=timezone.utc)
MEDICATIONS = ("morning-evening", "three-a-day", "midday")


def device_events(device: str, days: int, rng: random.Random) -> list[dict]:
    """One device's log: 30 to 35 events a day, shaped as bench/fleet_devices.py's people make them."""
    drafts: list[tuple[datetime, Draft]] = []
    for day in range(days):
        base = START + timedelta(days=day)
        for slot in range(10):
            at = base + timedelta(hours=7 + slot)
            medication = MEDICATIONS[slot % 3]
            data = {"medication_id": medication, "scheduled_at": at.strftime("%Y-%m-%dT%H:%M:%SZ"), "quantity": 1}
            if rng.random() < 0.04:
                drafts.append((at, Draft("dose.missed", data)))
                drafts.append((at, Draft("alert.raised", {"alert_id": f"{device}-a-{day}-{slot}", "kind": "dose_missed",
                                                          "severity": "warning", "message": "missed", "events": []})))
                continue
            drafts.append((at, Draft("dose.released", dict(data, compartment=1 + slot % 3))))
            drafts.append((at, Draft("dose.taken", data)))
            drafts.append((at, Draft("stock.changed", {"medication_id": medication, "count": 100})))
        drafts.append((base + timedelta(hours=8), Draft("checkin.recorded", {
            "mood": rng.choice([2, 3, 4, 5]), "side_effects": rng.choice(["none", "mild"]), "medications": []})))
    events, prev = [], GENESIS
    for seq, (at, draft) in enumerate(drafts, 1):
        draft = Draft(draft.type, draft.data, f"{device}-{seq}")
        events.append(build_event(draft, device, seq, at, prev))
        prev = events[-1]["hash"]
    return events


def interleaved(devices: int, days: int, seed: int) -> list[tuple[str, bytes]]:
    """Every device's events, each device's in order, the devices mixed as a broker mixes them."""
    rng = random.Random(seed)
    logs = [[(f"pilldispenser/fleet-{n:04d}/events", json.dumps(e).encode()) for e in
             device_events(f"fleet-{n:04d}", days, rng)] for n in range(devices)]
    out: list[tuple[str, bytes]] = []
    cursors = [0] * devices
    while True:
        live = [n for n in range(devices) if cursors[n] < len(logs[n])]
        if not live:
            return out
        for n in rng.sample(live, len(live)):
            take = rng.randint(1, 4)
            out.extend(logs[n][cursors[n]:cursors[n] + take])
            cursors[n] += take


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--batch", type=int, default=100, help="messages a transaction (1: one each)")
    parser.add_argument("--sqlite", action="store_true", help="a SQLite file instead of PostgreSQL")
    parser.add_argument("--profile", action="store_true", help="print cProfile's top 25 by own time")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.devices < 1 or args.days < 1 or args.batch < 1:
        print("care_ingest: --devices, --days and --batch must be at least 1", file=sys.stderr)
        return 2
    messages = interleaved(args.devices, args.days, args.seed)
    config = parse_care_config({"mqtt": {"host": "127.0.0.1", "tls": False}})
    cluster = None
    folder = tempfile.TemporaryDirectory(prefix="care-ingest-")
    try:
        if args.sqlite:
            url = f"sqlite:///{folder.name}/care.db"
        else:
            from postgres import Postgres
            cluster = Postgres().start()
            url = cluster.create_database("care")
        with Database(url).connect() as conn:
            ingest = Ingest(conn, config)
            profile = cProfile.Profile() if args.profile else None
            now = datetime.now(timezone.utc)
            began = time.perf_counter()
            if profile:
                profile.enable()
            outcomes: dict[str, int] = {}
            for start in range(0, len(messages), args.batch):
                for outcome in ingest.handle_batch(messages[start:start + args.batch], now):
                    outcomes[outcome] = outcomes.get(outcome, 0) + 1
            if profile:
                profile.disable()
            took = time.perf_counter() - began
            alerts = conn.execute("SELECT count(*) FROM alerts")[0][0]
        print(f"care ingest: {len(messages)} events of {args.devices} devices x {args.days} days, "
              f"{'SQLite' if args.sqlite else 'PostgreSQL'}, {args.batch} a transaction: "
              f"{len(messages) / took:.0f} events/s, {took / len(messages) * 1000:.2f} ms an event; "
              f"{', '.join(f'{k} {v}' for k, v in sorted(outcomes.items()))}; {alerts} alerts")
        if profile:
            pstats.Stats(profile).sort_stats("tottime").print_stats(25)
    finally:
        if cluster is not None:
            cluster.stop()
        folder.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
