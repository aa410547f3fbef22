"""`care serve`'s workers as processes of their own: a worker killed in the middle of a
batch (its transaction open, events written but not committed, nothing acknowledged)
loses nothing and doubles nothing. The service starts it again with its client id; its
persistent session brings back what it had not acknowledged; what the dead transaction
wrote was never committed.

PostgreSQL only: a trigger holds the worker's insert on an advisory lock the test owns,
so the kill lands inside an open transaction, deterministically. (SQLite's journal rolls
back a dead process's transaction the same way; it has no lock a test could hold a
writer on in the middle of a batch.)"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import uuid
from typing import TYPE_CHECKING

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from care_support import care_toml, chained, postgres_cluster, taken  # noqa: F401 - fixtures
from dispenser.care.config import load_care_config
from dispenser.care.database import Database
from dispenser.care.serve import CareService
from dispenser.events import Draft
from waiting import HANG, wait_until

if TYPE_CHECKING:
    import psycopg  # imported by the tests that use it, not by each xdist worker that collects this

DEVICE = "disp-0001"
STALL_LOCK = 4242


def stall_on(conn: psycopg.Connection, event_id: str) -> None:
    """Inserting `event_id` waits for advisory lock STALL_LOCK (the test holds it)."""
    conn.execute("CREATE FUNCTION stall() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                 f" IF NEW.event_id = '{event_id}' THEN PERFORM pg_advisory_xact_lock({STALL_LOCK}); END IF;"
                 " RETURN NEW; END $$")
    conn.execute("CREATE TRIGGER stall BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION stall()")


def stalled_inserting(conn: psycopg.Connection) -> list[int]:
    """Backends inside an open transaction, waiting on the advisory lock in an insert into events."""
    return [pid for (pid,) in conn.execute(
        "SELECT a.pid FROM pg_stat_activity a WHERE a.wait_event_type = 'Lock' AND a.wait_event = 'advisory'"
        " AND a.xact_start IS NOT NULL AND EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid"
        " AND l.relation = 'events'::regclass AND l.mode = 'RowExclusiveLock' AND l.granted)").fetchall()]


def publish(port: int, events: list[dict]) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}",
                         protocol=MQTTProtocolVersion.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for event in events:
            client.publish(f"pilldispenser/{DEVICE}/events", json.dumps(event), qos=1).wait_for_publish(HANG)
    finally:
        client.disconnect()
        client.loop_stop()


def test_a_worker_process_killed_mid_batch_loses_nothing_and_doubles_nothing(tmp_path, broker, postgres_cluster):
    import psycopg
    url = postgres_cluster.create_database(f"t_{uuid.uuid4().hex[:12]}")
    config = load_care_config(str(care_toml(tmp_path / "care.toml", database_url=url, port=broker.port)))
    drafts = taken(30)
    drafts[12] = Draft(drafts[12].type, drafts[12].data, "stall-here")
    events = chained(DEVICE, drafts)
    service = CareService(config, workers=1, timer=False, processes=True)   # makes the schema
    with psycopg.connect(url, autocommit=True) as test:
        stall_on(test, "stall-here")
        test.execute("BEGIN")
        test.execute(f"SELECT pg_advisory_xact_lock({STALL_LOCK})")
        service.start()
        try:
            assert service.wait_ready(HANG)
            [worker] = service.workers
            first_pid = worker.process.pid
            with psycopg.connect(url, autocommit=True) as watch:
                publish(broker.port, events)
                assert wait_until(lambda: stalled_inserting(watch) != [])      # in an insert, transaction open
                assert watch.execute("SELECT count(*) FROM events").fetchone()[0] < len(events)
                os.kill(first_pid, signal.SIGKILL)
                assert wait_until(lambda: worker.restarts == 1 and worker.subscribed.is_set())
                test.execute("ROLLBACK")                                       # the stall ends
                assert wait_until(lambda: watch.execute("SELECT count(*) FROM events").fetchone()[0] >= len(events))
                assert worker.process.pid != first_pid
        finally:
            service.stop()
    with Database(url).connect() as conn:
        rows = conn.execute("SELECT seq, event_id, hash FROM events ORDER BY seq")
        assert rows == [(e["seq"], e["event_id"], e["hash"]) for e in events]   # each once, none lost
        assert conn.execute("SELECT first_seq, top_seq, stored, gap_since FROM devices") == [(1, 30, 30, None)]
        assert conn.execute("SELECT count(*) FROM alerts") == [(0,)]
    assert service.outcomes()["stored"] >= 1


def test_a_worker_whose_database_connection_drops_connects_again_and_loses_nothing(tmp_path, broker,
                                                                                   postgres_cluster):
    import psycopg
    url = postgres_cluster.create_database(f"t_{uuid.uuid4().hex[:12]}")
    config = load_care_config(str(care_toml(tmp_path / "care.toml", database_url=url, port=broker.port)))
    events = chained(DEVICE, taken(10))
    service = CareService(config, workers=1, timer=False)
    service.start()
    try:
        assert service.wait_ready(HANG)
        with psycopg.connect(url, autocommit=True) as watch:
            publish(broker.port, events[:5])
            assert wait_until(lambda: watch.execute("SELECT count(*) FROM events").fetchone()[0] == 5)
            [(ended,)] = watch.execute(   # the worker's backend ends, as in a server restart
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid()").fetchall()
            assert ended >= 1
            publish(broker.port, events[5:])
            assert wait_until(lambda: watch.execute("SELECT count(*) FROM events").fetchone()[0] == 10)
            assert watch.execute("SELECT count(DISTINCT seq), max(seq) FROM events").fetchone() == (10, 10)
    finally:
        service.stop()
    assert service.workers[0].handled == 10


def test_a_message_received_before_a_reconnection_is_stored_but_acknowledged_only_as_sent_again(
        tmp_path, broker_factory):
    """After the broker's restart it sends the unacknowledged again, and a packet id may by
    then name another message: the old copy is stored, never acknowledged; the new one is."""
    broker = broker_factory(persistence=True)
    db = tmp_path / "care.db"
    config = load_care_config(str(care_toml(tmp_path / "care.toml", database_url=f"sqlite:///{db}",
                                            port=broker.port)))
    events = chained(DEVICE, taken(4))
    service = CareService(config, workers=1, timer=False)
    service.start()
    [worker] = service.workers
    try:
        assert service.wait_ready(HANG)
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")                    # the worker cannot commit: nothing acknowledged
        publish(broker.port, events[:3])
        assert wait_until(lambda: worker.received == 3)
        broker.stop()
        broker.start()
        assert wait_until(lambda: worker.connection == 2 and worker.received == 6)   # the 3 sent again
        holder.execute("ROLLBACK")
        holder.close()
        assert wait_until(lambda: worker.handled == 6)
        assert (worker.outcomes["stored"], worker.outcomes["duplicate"], worker.outcomes["not_acked_stale"]) == \
            (3, 3, 3)
    finally:
        service.stop()
    again = CareService(config, workers=1, timer=False)      # the broker holds nothing unacknowledged
    again.start()
    try:
        assert again.wait_ready(HANG)
        publish(broker.port, events[3:])
        assert wait_until(lambda: again.workers[0].handled >= 1)
        assert dict(again.workers[0].outcomes) | {"stored_us": 0, "batches": 0} == \
            {"stored": 1, "stored_us": 0, "batches": 0}
    finally:
        again.stop()
    with Database(f"sqlite:///{db}").connect() as conn:
        assert conn.execute("SELECT seq FROM events ORDER BY seq") == [(1,), (2,), (3,), (4,)]
