"""Shared by the web view's tests: a device log with three weeks of doses and check-ins,
the same events ingested by the care service, and the web view served by uvicorn on a free
port. The events are placed relative to the real clock, because `dispenser report` (whose
numbers the page must equal) reads the wall clock."""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from dispenser.care.config import CareConfig, load_care_config
from dispenser.care.database import Database
from dispenser.events import Draft
from dispenser.store import Store
from dispenser.timeutil import format_utc
from care_support import ingest_events
from ports import free_port
from inprocess import dispenser as run_in_process

if TYPE_CHECKING:
    from dispenser.care.web.server import WebServer

ROOT = Path(__file__).resolve().parents[1]
TZ = "America/New_York"
STAFF, PASSWORD = "ana", "correct horse battery"
PEOPLE_URL, CLINIC_URL = "json://127.0.0.1:9/people", "json://127.0.0.1:9/clinic"


def dispenser(*args: object) -> subprocess.CompletedProcess:
    return run_in_process(*args, cwd=ROOT)


def add_user(conn: object, name: str, password: str, now: datetime) -> bool:
    """accounts.add_user, imported when a test adds staff: importing accounts hashes a dummy
    password (argon2, ~0.13 s of CPU) in every xdist worker that collects the web tests."""
    from dispenser.care.web.accounts import add_user as add
    return add(conn, name, password, now)


def web_server(config: CareConfig, database: Database, port: int, **app_options: object) -> "WebServer":
    """The web view on 127.0.0.1:`port`, not yet started. Starlette, uvicorn and Jinja2 are
    imported here, when a test serves, not when each xdist worker collects the web tests."""
    from dispenser.care.web.app import create_app
    from dispenser.care.web.server import WebServer
    return WebServer(create_app(config, database, **app_options), "127.0.0.1", port)


def dose(kind: str, medication: str, scheduled: datetime, **extra: object) -> Draft:
    data = {"medication_id": medication, "scheduled_at": format_utc(scheduled), "quantity": 1, "compartment":
            1 if medication == "sertraline" else 2, "window_start": format_utc(scheduled - timedelta(minutes=30)),
            "window_end": format_utc(scheduled + timedelta(hours=1)), **extra}
    return Draft(kind, data, "")


def history(now: datetime) -> list[tuple[datetime, Draft]]:
    """Three weeks of one daily and one every-other-day medication, every outcome among them."""
    start = now - timedelta(days=24)
    timeline = [(start, Draft("stock.refilled", {"medication_id": "sertraline", "compartment": 1, "count": 30,
                                                 "previous": 0}, "")),
                (start, Draft("stock.refilled", {"medication_id": "lithium", "compartment": 2, "count": 20,
                                                 "previous": 0}, ""))]
    for back in range(22, 0, -1):
        scheduled = (now - timedelta(days=back, hours=3)).replace(second=0, microsecond=0)
        kind = back % 6
        if kind == 0:
            timeline.append((scheduled + timedelta(hours=1), dose("dose.missed", "sertraline", scheduled)))
        elif kind == 1:   # released 40 minutes after its time: late
            timeline.append((scheduled + timedelta(minutes=40), dose("dose.released", "sertraline", scheduled)))
            timeline.append((scheduled + timedelta(minutes=45), dose("dose.taken", "sertraline", scheduled)))
        elif kind == 2:
            timeline.append((scheduled + timedelta(minutes=2), dose("dose.released", "sertraline", scheduled)))
            timeline.append((scheduled + timedelta(hours=1), dose("dose.unconfirmed", "sertraline", scheduled)))
        elif kind == 3:
            timeline.append((scheduled, dose("dose.held", "sertraline", scheduled, reason="day_limit")))
        else:
            timeline.append((scheduled + timedelta(minutes=2), dose("dose.released", "sertraline", scheduled)))
            timeline.append((scheduled + timedelta(minutes=3), dose("dose.taken", "sertraline", scheduled)))
        if back % 2 == 0:
            later = scheduled + timedelta(hours=2)
            timeline.append((later, dose("dose.released", "lithium", later)))
            timeline.append((later + timedelta(minutes=1), dose("dose.taken", "lithium", later)))
        timeline.append((scheduled + timedelta(minutes=10), Draft("checkin.recorded", {
            "mood": 1 + back % 5, "side_effects": ("none", "mild", "strong")[back % 3],
            "medications": ["sertraline"]}, "")))
    return timeline


def alert(alert_id: str, kind: str, severity: str) -> Draft:
    return Draft("alert.raised", {"alert_id": alert_id, "kind": kind, "severity": severity,
                                  "message": "Sertraline was not taken", "events": []}, "")


@dataclass
class Site:
    url: str
    config_path: Path
    device_config: Path
    device_db: Path
    config: CareConfig
    database: Database
    server: WebServer

    def stop(self) -> None:
        self.server.stop()


def write_device_log(path: Path, device: str, timeline: list[tuple[datetime, Draft]]) -> list[dict]:
    store = Store.open(path, device)
    try:
        for at, draft in sorted(timeline, key=lambda item: item[0]):
            store.append([draft], at)
        return list(store.events())
    finally:
        store.close()


def build_site(tmp_path: Path, now: datetime) -> Site:
    """Sam (disp-0001) with three weeks and two open alerts, Alex (disp-0002) with one; served."""
    port = free_port()
    database_url = f"sqlite:///{tmp_path / 'care.db'}"
    config_path = tmp_path / "care.toml"
    config_path.write_text(
        f'[database]\nurl = "{database_url}"\n[web]\nlisten = "127.0.0.1:{port}"\n'
        f'public_url = "http://127.0.0.1:{port}"\n'
        f'[[patient]]\ndevice = "disp-0001"\nname = "Sam"\ntimezone = "{TZ}"\n'
        f'notify = ["{PEOPLE_URL}"]\nclinic_notify = ["{CLINIC_URL}"]\nescalate_after_min = 15\n'
        f'[[patient]]\ndevice = "disp-0002"\nname = "Alex"\ntimezone = "{TZ}"\n'
        f'notify = ["{PEOPLE_URL}"]\nclinic_notify = ["{CLINIC_URL}"]\nescalate_after_min = 15\n')
    device_config = tmp_path / "device.toml"
    device_config.write_text(f'[device]\nid = "disp-0001"\ntimezone = "{TZ}"\n')
    device_db = tmp_path / "device.db"
    recent = now - timedelta(minutes=5)
    sam = write_device_log(device_db, "disp-0001", history(now) + [
        (recent, alert("a-missed", "dose_missed", "warning")),
        (recent + timedelta(seconds=1), alert("a-stock", "stock_low", "info"))])
    alex = write_device_log(tmp_path / "alex.db", "disp-0002", [
        (recent, Draft("device.started", {}, "")), (recent + timedelta(seconds=1), alert("b-fault", "device_fault",
                                                                                       "critical"))])
    config = load_care_config(str(config_path))
    database = Database(database_url)
    with database.connect() as conn:
        assert set(ingest_events(conn, config, sam + alex, now)) == {"stored"}
        add_user(conn, STAFF, PASSWORD, now)
    server = web_server(config, database, port)
    server.start()
    assert server.wait_ready(60)
    return Site(f"http://127.0.0.1:{port}", config_path, device_config, device_db, config, database, server)
