"""`dispenser care serve`: N ingest workers on one MQTT 5 shared subscription, and the timer.

Each worker is one paho client `care-{n}` with a persistent session subscribed to
`$share/care/{prefix}/+/events`: the broker hands each event to one of them and keeps
what arrives while all are away. paho's network thread only queues a message; the
worker's own thread takes what has arrived (up to BATCH_MAX), stores it in one
transaction (ingest.py, `handle_batch`) and acknowledges each message (PUBACK, paho's
manual ack) only after that commit: a crash before it and the broker sends them again,
and storing is idempotent by event_id. A message that cannot be stored is tried again
STORE_TRIES times, then left unacknowledged (the broker sends it at the next connection).
Worker 1 also reads `{prefix}/+/status` without sharing: MQTT 5 sends no retained
message to a shared subscription, and the retained status is how a Last Will is seen.
The timer runs a round (rounds.py) every `tick_s` on its own connection, in this process only.

Workers are threads of this process (tests inject the clock) or, with `processes=True`
(`care serve`), processes of their own, so that N workers use N cores rather than share
one interpreter lock; a worker process that dies is started again with its client id,
and its session brings back what it had not acknowledged.

    service = CareService(config, workers=2)          # or processes=True
    service.start(); service.wait_ready(30); ...; service.stop(); service.outcomes()
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from typing import Any, Callable, Protocol

import paho.mqtt.client as mqtt

from .config import CareConfig
from .database import Connection, Database, DatabaseError
from .ingest import FAILED, Ingest
from ..mqtt_client import StoppableClient, build_client, connect_async
from .notify import deliver as apprise_deliver
from .ladder import Send
from .rounds import Deliver, care_round

log = logging.getLogger(__name__)

SHARE_GROUP = "care"
STORE_TRIES = 5
MAX_PACKET_BYTES = 256 * 1024      # no event comes near it; a bigger message never reaches a worker
RECEIVE_MAXIMUM = 200              # messages the broker may have unacknowledged with one worker
BATCH_MAX = 100                    # messages stored in one transaction (then acknowledged)
INBOX_MAX = 2 * BATCH_MAX          # messages received and waiting for the worker's thread, at most
SUPERVISE_S = 1.0                  # how often a dead worker process is looked for


class Flag(Protocol):
    """threading.Event or multiprocessing's Event."""

    def set(self) -> None: ...
    def clear(self) -> None: ...
    def is_set(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> bool: ...


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class Worker:
    """One ingest client, its own database connection and the thread that stores its batches."""

    def __init__(self, index: int, config: CareConfig, database: Database, now: Callable[[], datetime],
                 subscribed: Flag | None = None):
        assert config.mqtt is not None
        self.index = index
        self.config = config
        self.settings = config.mqtt
        self.now = now
        self.database = database
        self.conn: Connection = database.connect()
        self.ingest = Ingest(self.conn, config)
        self.client_id = f"{SHARE_GROUP}-{index}"
        prefix = self.settings.topic_prefix
        self.topics = [f"$share/{SHARE_GROUP}/{prefix}/+/events"]
        if index == 1:
            self.topics.append(f"{prefix}/+/status")
        self.handled = 0
        self.outcomes: Counter[str] = Counter()    # stored, duplicate, status...; batches; stored_us: time storing
        self.subscribed: Flag = subscribed if subscribed is not None else threading.Event()
        self.inbox: queue.Queue[tuple[int, mqtt.MQTTMessage]] = queue.Queue(maxsize=INBOX_MAX)
        self.connection = 0   # counts connections: a message is acknowledged only on the one it came on
        self.received = 0     # messages paho has handed over
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{self.client_id}-store", daemon=True)
        self.client = build_client(self.settings, self.client_id, persistent=True, client_class=StoppableClient,
                                   manual_ack=True)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect

    def start(self) -> None:
        self._thread.start()
        connect_async(self.client, self.settings, persistent=True, MaximumPacketSize=MAX_PACKET_BYTES,
                      ReceiveMaximum=RECEIVE_MAXIMUM)
        self.client.loop_start()

    def stop(self) -> None:
        """The batch being stored is finished and acknowledged; what waits in the inbox is
        left to the broker, which sends it again at the next connection."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(60)
        self.client.disconnect()
        self.client.loop_stop()
        self.conn.close()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            log.error("%s: the broker refused the connection: %s", self.client_id, reason_code)
            return
        self.connection += 1
        log.info("%s connected (session present: %s)", self.client_id, flags.session_present)
        client.subscribe([(topic, 1) for topic in self.topics])

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: list[Any], properties: Any) -> None:
        refused = [code for code in reason_codes if code.is_failure]
        if refused:
            log.error("%s: the broker refused the subscription: %s", self.client_id, refused[0])
            return
        self.subscribed.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self.subscribed.clear()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        """paho's thread only queues: storing is the worker thread's. A full inbox holds paho
        back (and with it the socket and the broker), so a backlog waits at the broker, not here."""
        self.received += 1
        while not self._stop.is_set():
            try:
                self.inbox.put((self.connection, message), timeout=0.5)
                return
            except queue.Full:
                continue
        # stopping: left unacknowledged, the broker sends it again at the next connection

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                batch = [self.inbox.get(timeout=0.2)]
            except queue.Empty:
                continue
            while len(batch) < BATCH_MAX:
                try:
                    batch.append(self.inbox.get_nowait())
                except queue.Empty:
                    break
            self._store(batch)

    def _store(self, batch: list[tuple[int, mqtt.MQTTMessage]]) -> None:
        """One transaction for the batch, then a PUBACK for each message stored (or ignored).

        Only on the connection the message came on: after a reconnection the broker sends
        what was unacknowledged again, and its packet id may by then name another message;
        a PUBACK for the old copy would acknowledge that one, unstored."""
        pending = batch
        for attempt in range(1, STORE_TRIES + 1):
            began = time.perf_counter()
            problem = self._reconnect_if_broken()
            outcomes = [f"{FAILED}: {problem}"] * len(pending) if problem else self.ingest.handle_batch(
                [(m.topic, bytes(m.payload)) for _, m in pending], self.now())
            self.outcomes["stored_us"] += int((time.perf_counter() - began) * 1_000_000)
            self.outcomes["batches"] += 1
            failed = []
            for (connection, message), outcome in zip(pending, outcomes):
                if outcome.startswith(FAILED):
                    failed.append((connection, message))
                    log.error("%s: could not store a message from %s (try %d): %s", self.client_id,
                              message.topic[:200], attempt, outcome)
                    continue
                if outcome.startswith("ignored"):
                    log.warning("%s: %s (%s)", self.client_id, message.topic[:200], outcome)
                self.outcomes[outcome.split(":")[0]] += 1
                self.handled += 1
                if connection == self.connection:
                    self.client.ack(message.mid, message.qos)
                else:
                    self.outcomes["not_acked_stale"] += 1
            if not failed:
                return
            pending = failed
            if self._stop.wait(min(attempt, 3)):
                break
        log.error("%s: %d message(s) left unacknowledged: the broker sends them again at the next connection",
                  self.client_id, len(pending))


    def _reconnect_if_broken(self) -> str | None:
        """A new database connection when the old one broke; why not, when that fails too."""
        if not self.conn.broken:
            return None
        log.warning("%s: the database connection broke: connecting again", self.client_id)
        try:
            fresh = self.database.connect()
        except DatabaseError as error:
            return str(error)
        self.conn.close()
        self.conn, self.ingest = fresh, Ingest(fresh, self.config)
        return None


class WorkerProcess:
    """A Worker in a process of its own (spawned): started, watched and stopped from here.

    Every start gets new shared objects: a process killed while it waited on an Event or
    held a lock would leave that object stuck for whoever used it next."""

    def __init__(self, index: int, config: CareConfig):
        self.index = index
        self.config = config
        self.context = multiprocessing.get_context("spawn")
        self.process: Any = None
        self.restarts = 0
        self.outcomes: Counter[str] = Counter()
        self._new_shared()

    def _new_shared(self) -> None:
        self.subscribed: Any = self.context.Event()
        self._stop: Any = self.context.Event()
        self._handled: Any = self.context.Value("q", 0, lock=False)   # one writer; a read needs no lock
        self._results: Any = self.context.Queue()

    @property
    def handled(self) -> int:
        return int(self._handled.value)

    def start(self) -> None:
        if self.process is not None:
            self._new_shared()
        self.process = self.context.Process(
            target=_worker_main, name=f"{SHARE_GROUP}-{self.index}", daemon=True,
            args=(self.index, self.config, self.subscribed, self._stop, self._handled, self._results,
                  logging.getLogger().level))
        self.process.start()

    def dead(self) -> bool:
        """The process ended without being asked to."""
        return self.process is not None and not self._stop.is_set() and self.process.exitcode is not None

    def stop(self) -> None:
        self._stop.set()
        if self.process is not None:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                try:
                    self.outcomes.update(self._results.get(timeout=0.5))
                    break
                except queue.Empty:
                    if not self.process.is_alive():
                        log.error("%s-%d: the worker process ended without its tally", SHARE_GROUP, self.index)
                        break
            self.process.join(30)
            if self.process.exitcode is None:
                self.process.kill()
                self.process.join(10)


def _worker_main(index: int, config: CareConfig, subscribed: Flag, stop: Flag, handled: Any, results: Any,
                 level: int) -> None:
    """A worker process: until `stop`, then its outcomes on `results`. Ctrl-C reaches the whole
    process group; this process leaves stopping to its parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=level or logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    worker = Worker(index, config, Database(config.database_url, create=False), _utc_now, subscribed)
    worker.start()
    parent = os.getppid()
    while not stop.wait(0.5) and os.getppid() == parent:   # an orphan (its service killed) stops too
        handled.value = worker.handled
    worker.stop()
    handled.value = worker.handled
    results.put(dict(worker.outcomes))


class CareService:
    """The workers and the timer. `now` is the clock of every decision (tests replace it;
    workers in processes use the wall clock); `deliver` sends one message (apprise by
    default); `timer=False` leaves rounds to the caller; `processes=True` runs each worker
    in a process of its own, started again if it dies."""

    def __init__(self, config: CareConfig, workers: int = 1, *, now: Callable[[], datetime] = _utc_now,
                 deliver: Deliver = apprise_deliver, timer: bool = True, processes: bool = False):
        if config.mqtt is None:
            raise ValueError("no [mqtt] table: there is no broker to ingest from")
        self.config = config
        self.now = now
        self.deliver = deliver
        self.database = Database(config.database_url)
        if processes:   # a client that cannot be built (TLS files) fails here in one line, not in every process
            build_client(config.mqtt, f"{SHARE_GROUP}-check", persistent=True, client_class=mqtt.Client)
        self.workers: list[Worker] | list[WorkerProcess] = (
            [WorkerProcess(index, config) for index in range(1, workers + 1)] if processes else
            [Worker(index, config, self.database, now) for index in range(1, workers + 1)])
        self._stop = threading.Event()
        self._timer = threading.Thread(target=self._run_timer, name="care-timer", daemon=True) if timer else None
        self._supervisor = threading.Thread(target=self._supervise, name="care-supervisor", daemon=True) \
            if processes else None
        self.rounds = 0

    def start(self) -> None:
        for worker in self.workers:
            worker.start()
        for thread in (self._timer, self._supervisor):
            if thread is not None:
                thread.start()

    def wait_ready(self, timeout: float) -> bool:
        """True once every worker is connected and subscribed."""
        deadline = time.monotonic() + timeout
        return all(worker.subscribed.wait(max(0.0, deadline - time.monotonic())) for worker in self.workers)

    def round(self, now: datetime | None = None) -> list[Send]:
        """One timer round now (on a connection of its own); the messages that went out."""
        with self.database.connect() as conn:
            return care_round(conn, self.config, now or self.now(), self.deliver)

    def stop(self) -> None:
        self._stop.set()
        for thread in (self._timer, self._supervisor):
            if thread is not None and thread.is_alive():
                thread.join(10)
        for worker in self.workers:
            worker.stop()

    def outcomes(self) -> Counter[str]:
        """What the workers' messages became, summed (after `stop` for worker processes)."""
        total: Counter[str] = Counter()
        for worker in self.workers:
            total.update(worker.outcomes)
        return total

    def _supervise(self) -> None:
        while not self._stop.wait(SUPERVISE_S):
            for worker in self.workers:
                if isinstance(worker, WorkerProcess) and worker.dead():
                    log.error("%s-%d: the worker process ended (exit %s): starting it again", SHARE_GROUP,
                              worker.index, worker.process.exitcode)
                    worker.restarts += 1
                    worker.start()

    def _run_timer(self) -> None:
        with self.database.connect() as conn:
            while not self._stop.wait(self.config.alerts.tick_s):
                try:
                    care_round(conn, self.config, self.now(), self.deliver)
                    self.rounds += 1
                except Exception as error:  # noqa: BLE001 - the ladder outlives a bad round
                    log.error("care round failed: %s", str(error).splitlines()[0] if str(error) else type(error).__name__)
