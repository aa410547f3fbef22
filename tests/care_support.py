"""Shared by the care tests: a database of either kind, chained events, a webhook that keeps
what apprise posts to it, and care.toml files."""
from __future__ import annotations

import json
import threading
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

from dispenser.events import GENESIS, Draft, build_event
from ports import free_port
from postgres import Postgres

AT0 = datetime(2026, 11, 24, 14, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="session")
def postgres_cluster(postgres_worker: Postgres) -> Postgres:
    """The worker's one PostgreSQL (tests/conftest.py); a database per test.

    Each test module imports this fixture, and a session fixture imported into a module is
    that module's own: started here, it was a cluster per module. conftest's is shared."""
    return postgres_worker


@contextmanager
def quick_hashing() -> Iterator[None]:
    """Staff passwords hashed with argon2id at its smallest cost while inside: ~0.25 s of CPU
    each at argon2-cffi's defaults, which only test_care_web_parts.py's production-cost test keeps."""
    from argon2 import PasswordHasher
    from dispenser.care.web import accounts
    quick = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(accounts, "_hasher", quick)
        patch.setattr(accounts, "_DUMMY_HASH", quick.hash("no such user, no such password"))
        yield


@pytest.fixture(scope="module")
def quick_password_hashes():
    """quick_hashing for a whole module, for the tests that only log in (the browser, the login
    throttle, the local times), so a module's shared site is made with it too."""
    with quick_hashing():
        yield


@pytest.fixture
def quick_password_hashes_in_test():
    """quick_hashing for one test, in a module that also has a test at the production cost."""
    with quick_hashing():
        yield


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """The same tests on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'care.db'}"
    cluster = request.getfixturevalue("postgres_cluster")
    return cluster.create_database(f"t_{uuid.uuid4().hex[:12]}")


def chained(device: str, drafts: list[Draft], start: int = 1, prev: str = GENESIS,
            at: datetime = AT0) -> list[dict]:
    """Events as the device chains them, from seq `start`."""
    events = []
    for seq, draft in enumerate(drafts, start):
        draft = draft if draft.event_id else Draft(draft.type, draft.data, f"{device}-{seq}")
        events.append(build_event(draft, device, seq, at + timedelta(minutes=seq), prev))
        prev = events[-1]["hash"]
    return events


def taken(count: int) -> list[Draft]:
    return [Draft("dose.taken", {"medication_id": "sertraline", "scheduled_at": "2026-11-24T13:00:00Z",
                                 "quantity": 1})] * count


def payload(event: dict) -> bytes:
    return json.dumps(event).encode()


def ingest_events(conn, config, events: list[dict], heard: datetime) -> list[str]:
    """Each event as the care service hears it on its device's events topic; the verdicts."""
    from dispenser.care.ingest import Ingest
    ingest = Ingest(conn, config)
    return [ingest.handle(f"pilldispenser/{event['device_id']}/events", payload(event), heard) for event in events]


class Hook:
    """A local HTTP endpoint for apprise's json:// : every POST body kept, in order."""

    def __init__(self, port: int | None = None) -> None:
        self.received: list[dict] = []
        self.port = port or free_port()
        self._lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with hook._lock:
                    hook.received.append({"path": self.path, **json.loads(body or b"{}")})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"json://127.0.0.1:{self.port}/{path}"

    def on(self, path: str) -> list[dict]:
        with self._lock:
            return [item for item in self.received if item["path"] == f"/{path}"]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook():
    server = Hook()
    try:
        yield server
    finally:
        server.close()


def care_toml(path: Path, *, database_url: str, port: int | None = None, notify: list[str] = (),
              clinic_notify: list[str] = (), extra_patient: str = "", extra: str = "",
              account: tuple[str, str] | None = None) -> Path:
    """`account`: the broker account (name, password) the care service logs in with."""
    text = ""
    if port is not None:
        text += f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\ntls = false\n'
        if account is not None:
            text += f'username = "{account[0]}"\npassword = "{account[1]}"\n'
    text += f'[database]\nurl = "{database_url}"\n[web]\npublic_url = "https://care.example.org"\n'
    text += f'listen = "127.0.0.1:{free_port()}"\n'   # care serve starts the web view there
    text += extra
    text += ('[[patient]]\ndevice = "disp-0001"\nname = "Sam"\ntimezone = "America/New_York"\n'
             f"notify = {json.dumps(list(notify))}\nclinic_notify = {json.dumps(list(clinic_notify))}\n"
             "escalate_after_min = 15\noffline_after_min = 30\n" + extra_patient)
    path.write_text(text)
    return path
