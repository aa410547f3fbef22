"""`dispenser care serve`: N ingest workers on one MQTT 5 shared subscription, and the timer.

Each worker is one paho client `care-{n}` with a persistent session subscribed to
`$share/care/{prefix}/+/events`: the broker hands each event to one of them and keeps
what arrives while all are away. A message is acknowledged only once it is stored (a
crash before that and the broker sends it again; storing is idempotent by event_id).
Worker 1 also reads `{prefix}/+/status` without sharing: MQTT 5 sends no retained
message to a shared subscription, and the retained status is how a Last Will is seen.
The timer runs a round (rounds.py) every `tick_s` on its own connection.

    service = CareService(config, workers=2)
    service.start(); service.wait_ready(30); ...; service.stop()
"""
from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable

import paho.mqtt.client as mqtt

from .config import CareConfig
from .database import Connection, Database
from .ingest import Ingest
from ..mqtt_client import build_client, connect_async
from .notify import deliver as apprise_deliver
from .ladder import Send
from .rounds import Deliver, care_round

log = logging.getLogger(__name__)

SHARE_GROUP = "care"
STORE_TRIES = 5
MAX_PACKET_BYTES = 256 * 1024      # no event comes near it; a bigger message never reaches a worker
RECEIVE_MAXIMUM = 50               # messages the broker may have unacknowledged with one worker


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class Worker:
    """One ingest client and its own database connection."""

    def __init__(self, index: int, config: CareConfig, database: Database, now: Callable[[], datetime]):
        assert config.mqtt is not None
        self.index = index
        self.config = config
        self.settings = config.mqtt
        self.now = now
        self.conn: Connection = database.connect()
        self.ingest = Ingest(self.conn, config)
        self.client_id = f"{SHARE_GROUP}-{index}"
        prefix = self.settings.topic_prefix
        self.topics = [f"$share/{SHARE_GROUP}/{prefix}/+/events"]
        if index == 1:
            self.topics.append(f"{prefix}/+/status")
        self.handled = 0
        self.subscribed = threading.Event()
        self.client = build_client(self.settings, self.client_id, persistent=True, client_class=mqtt.Client,
                                   manual_ack=True)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect

    def start(self) -> None:
        connect_async(self.client, self.settings, persistent=True, MaximumPacketSize=MAX_PACKET_BYTES,
                      ReceiveMaximum=RECEIVE_MAXIMUM)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.conn.close()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            log.error("%s: the broker refused the connection: %s", self.client_id, reason_code)
            return
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
        for attempt in range(1, STORE_TRIES + 1):
            try:
                outcome = self.ingest.handle(message.topic, bytes(message.payload), self.now())
            except Exception as error:  # noqa: BLE001 - no message, and no database hiccup, ends a worker
                log.error("%s: could not store a message from %s (try %d): %s", self.client_id,
                          message.topic[:200], attempt, str(error).splitlines()[0] if str(error) else type(error).__name__)
                time.sleep(min(attempt, 3))
                continue
            if outcome.startswith("ignored"):
                log.warning("%s: %s (%s)", self.client_id, message.topic[:200], outcome)
            self.handled += 1
            client.ack(message.mid, message.qos)
            return
        log.error("%s: left unacknowledged: the broker sends it again at the next connection", self.client_id)


class CareService:
    """The workers and the timer. `now` is the clock of every decision (tests replace it);
    `deliver` sends one message (apprise by default); `timer=False` leaves rounds to the caller."""

    def __init__(self, config: CareConfig, workers: int = 1, *, now: Callable[[], datetime] = _utc_now,
                 deliver: Deliver = apprise_deliver, timer: bool = True):
        if config.mqtt is None:
            raise ValueError("no [mqtt] table: there is no broker to ingest from")
        self.config = config
        self.now = now
        self.deliver = deliver
        self.database = Database(config.database_url)
        self.workers = [Worker(index, config, self.database, now) for index in range(1, workers + 1)]
        self._stop = threading.Event()
        self._timer = threading.Thread(target=self._run_timer, name="care-timer", daemon=True) if timer else None
        self.rounds = 0

    def start(self) -> None:
        for worker in self.workers:
            worker.start()
        if self._timer is not None:
            self._timer.start()

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
        if self._timer is not None and self._timer.is_alive():
            self._timer.join(10)
        for worker in self.workers:
            worker.stop()

    def _run_timer(self) -> None:
        with self.database.connect() as conn:
            while not self._stop.wait(self.config.alerts.tick_s):
                try:
                    care_round(conn, self.config, self.now(), self.deliver)
                    self.rounds += 1
                except Exception as error:  # noqa: BLE001 - the ladder outlives a bad round
                    log.error("care round failed: %s", str(error).splitlines()[0] if str(error) else type(error).__name__)
