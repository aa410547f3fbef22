"""MQTT for the device: the outbox to the broker, schedule messages from it (contract 4).

paho keeps unacknowledged messages in memory only, so the durable queue is ours: the
outbox. A row leaves it only when the broker's PUBACK for it (both PUBACKs for an
`alert.raised`, which also goes to the alerts topic) says success. Anything else is
sent again after a reconnect or a restart; the clinic deduplicates on `event_id`.

Threads: paho's network thread runs the callbacks; one worker thread of ours reads
the outbox, publishes and marks rows sent, so the outbox is only touched from there.
SQLite connections belong to the thread that opened them, so pass a factory
(`lambda: Store.open(path, device_id)`): the worker opens its own Store on the same
file (WAL lets the daemon append meanwhile) and closes it at stop. Nothing polls: the
worker sleeps on a condition until `notify()`, a PUBACK, a (re)connect or `stop()`.

    opener = lambda: Store.open(db_path, "disp-0001")
    sync = Sync(MqttSettings.from_config(config.mqtt), "disp-0001", opener, inbox.put)
    sync.start()            # never blocks, never raises for a broker that is down
    store.append(...); sync.notify()
    sync.stop()             # retained {"online": false}, clean disconnect

A `schedule/set` reaches `on_schedule` as an `Inbound` (raw bytes, never parsed here),
on paho's thread, one at a time: the next is handed over only after the previous one's
`done()`. Messages arriving meanwhile are coalesced: only the newest waits, and the
ones it replaced are acknowledged once a later one is done (contract 4, v2: a
`schedule/set` is acknowledged to the broker only once its answer is in the log; see
`ScheduleInbox`). A retained `schedule/set` is ignored. Payloads over
MAX_SCHEDULE_BYTES are handed over without their bytes (`payload` None, `size` set),
so that the caller can log `schedule.rejected` (`too_large`) without copying or
parsing them; with MQTT 5 the CONNECT announces a Maximum Packet Size a little above
that, and Mosquitto then drops bigger messages before they reach the device.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import replace
from datetime import datetime, timezone
from collections.abc import Set as AbstractSet
from typing import Callable, Iterable, Protocol, Sequence, runtime_checkable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from .mqtt_client import StoppableClient, TlsFilesError, build_client, connect_async
from .mqtt_settings import MqttSettings, Topics
from .schedule import MAX_SCHEDULE_BYTES
from .timeutil import format_utc
from .vocabulary import EventType

__all__ = ["MqttSettings", "Topics", "Sync", "Outbox", "Inbound", "ScheduleInbox", "MAX_SCHEDULE_BYTES"]

log = logging.getLogger(__name__)

# The Maximum Packet Size counts the whole PUBLISH (header, topic, properties), so leave room.
MAX_PACKET_BYTES = MAX_SCHEDULE_BYTES + 4096
INFLIGHT_WINDOW = 20               # outbox rows awaiting PUBACK at once
RETRY_AFTER_REFUSAL_S = 30.0       # a broker that refuses a row (ACL?) is not hammered
UNDELIVERED_BACKOFF_MAX_S = 600.0  # a row answered 0x10 "no matching subscribers": again after 30 s, doubling to 10 min
RETRY_ROUND = 0.5                  # rows due again within half a retry_after of the first go with it: one round
NETWORK_WAIT_MAX_S = 15.0          # paho's network thread sleeps at most this long with nothing to read or write
NO_MATCHING_SUBSCRIBERS = 0x10
RECEIVE_MAXIMUM = 10               # MQTT 5: schedule/set messages the broker may have unacknowledged with us
MAX_UNACKED = 100                  # coalesced messages awaiting their ack (3.1.1 has no Receive Maximum)


@runtime_checkable
class Outbox(Protocol):
    """What Sync needs from the store (dispenser.store.Store has it); used by the worker only."""

    def unsent(self, limit: int, after: int = 0) -> list[tuple[int, str]]: ...
    def mark_sent(self, seqs: list[int], now: datetime) -> None: ...
    def backlog(self) -> int: ...


class _NoOutbox:
    """outbox=None: a link for status and schedules only."""

    def unsent(self, limit: int, after: int = 0) -> list[tuple[int, str]]:
        return []

    def mark_sent(self, seqs: list[int], now: datetime) -> None:
        pass

    def backlog(self) -> int:
        return 0


class _BrokenOutbox:
    """Stands in for an outbox that would not open: status and schedules still work,
    and the drain keeps failing (never "idle") instead of pretending all was sent."""

    def __init__(self, error: Exception):
        self.error = error

    def unsent(self, limit: int, after: int = 0) -> list[tuple[int, str]]:
        raise RuntimeError(f"outbox unavailable: {self.error}")

    def mark_sent(self, seqs: list[int], now: datetime) -> None:
        raise RuntimeError(f"outbox unavailable: {self.error}")

    def backlog(self) -> int:
        raise RuntimeError(f"outbox unavailable: {self.error}")


class _BoundedClient(StoppableClient):
    """paho's Client, but a PUBLISH bigger than MAX_PACKET_BYTES is not kept in memory.

    paho reads a whole packet into one buffer before anyone sees it, and then copies
    the payload out: a 150 MB message on MQTT 3.1.1 (no Maximum Packet Size there)
    took the daemon to 488 MB. Here, once the packet's length is known to be too big,
    the rest of it is read and thrown away as it arrives; only its head (topic, packet
    id, properties) is decoded, so it can be acknowledged, and `oversize` holds the
    packet's length while `on_message` runs (the payload it sees then is the first bytes
    only: do not use it). paho reads at most ~100 socket chunks before this can step in.
    This leans on paho 2.x internals (`_in_packet`, `_sock_recv`); without them it is
    plain paho. A StoppableClient: stopping it never waits out the pause before a reconnect.
    """

    oversize: int | None = None
    network_wait = 1.0  # paho's default; Sync sets network_wait_for(keepalive)

    def loop_forever(self, timeout: float = 1.0, retry_first_connection: bool = False) -> MQTTErrorCode:
        """loop_start()'s thread, sleeping `network_wait` in select() rather than paho's 1 s.

        Nothing is late for it: a publish from another thread wakes the select at once
        (paho's socket pair), and so does anything the broker sends; the timeout only paces
        the keepalive's PINGREQ and the check for a missing PINGRESP (network_wait_for).
        """
        return super().loop_forever(self.network_wait, retry_first_connection)

    def _packet_read(self) -> MQTTErrorCode:
        packet = getattr(self, "_in_packet", None)
        if (not isinstance(packet, dict) or not packet.get("have_remaining")
                or packet.get("command", 0) & 0xF0 != mqtt.PUBLISH
                or packet.get("remaining_length", 0) <= MAX_PACKET_BYTES):
            return super()._packet_read()
        del packet["packet"][MAX_PACKET_BYTES:]  # what paho read before we could step in
        while packet["to_process"] > 0:
            try:
                data = self._sock_recv(min(packet["to_process"], 256 * 1024))
            except BlockingIOError:
                return MQTTErrorCode.MQTT_ERR_AGAIN
            except OSError:
                return MQTTErrorCode.MQTT_ERR_CONN_LOST
            if not data:
                return MQTTErrorCode.MQTT_ERR_CONN_LOST
            packet["to_process"] -= len(data)
            room = MAX_PACKET_BYTES - len(packet["packet"])
            if room > 0:
                packet["packet"] += data[:room]
        self.oversize = packet["remaining_length"]
        try:
            return super()._packet_read()  # nothing left to read: paho decodes the head and resets
        finally:
            self.oversize = None


def network_wait_for(keepalive: int) -> float:
    """How long paho's network thread may sleep: a quarter of the keepalive, so a PINGREQ
    goes at most a quarter late (the broker waits one and a half keepalives), at least 1 s."""
    return max(1.0, min(keepalive / 4, NETWORK_WAIT_MAX_S))


def retry_round(waiting: dict[int, float], now: float, slack: float, room: int, span: int) -> list[int]:
    """The rows (0x10) to publish again now: those due, and with them those due within
    `slack`, so that rows answered moments apart go in one round, not a wake each; never a
    row later than its time. At most `room`, lowest first, within `span` seqs of the first
    (the outbox is read back over that span)."""
    due = sorted(seq for seq, when in waiting.items() if when <= now + slack)[:room]
    return [seq for seq in due if seq - due[0] < span]


class Inbound:
    """One `schedule/set` handed to the daemon: its bytes (None when over
    MAX_SCHEDULE_BYTES: never copied), its size, and how many earlier messages it
    replaced while they waited. Call `done()` on the daemon's thread once its answer
    (`schedule.applied` / `schedule.rejected`) is in the log, or it was refused without
    one: that acknowledges it, and the messages it replaced, to the broker.
    `done(logged=False)` (the log could not be written) hands the next one over but
    acknowledges nothing: the broker sends those again at the next reconnect."""

    __slots__ = ("payload", "size", "replaced", "_acks", "_inbox")

    def __init__(self, payload: bytes | bytearray | None, size: int, acks: list[Callable[[], None]], replaced: int,
                 inbox: "ScheduleInbox"):
        self.payload, self.size, self.replaced = payload, size, replaced
        self._acks, self._inbox = acks, inbox

    def done(self, logged: bool = True) -> None:
        self._inbox._done(self, logged)


class ScheduleInbox:
    """Between paho's thread and the daemon's: one `schedule/set` handed over at a time.

    A message arriving while one is being handled waits; a newer one replaces it (only
    the newest schedule matters; a flood costs the daemon one step per handled message,
    never a queue of them). The replaced ones are counted and acknowledged when the one
    that replaced them is done, so a crash before that leaves them unacknowledged and
    the broker sends them again (persistent session). At most two payloads are held
    (the one handled, the newest waiting) and at most MAX_UNACKED acknowledgements; past
    that the oldest are acknowledged (dropped) at once.

        inbox = ScheduleInbox(lambda item: daemon.put(("schedule", item)))
        inbox.offer(payload, len(payload), ack)     # paho's thread
        item.done()                                 # daemon's thread, after the commit
    """

    def __init__(self, deliver: Callable[[Inbound], None]):
        self._deliver = deliver
        self._lock = threading.Lock()
        self._busy = False
        self._pending: Inbound | None = None
        self.received = self.replaced = self.dropped = 0

    def offer(self, payload: bytes | bytearray | None, size: int, ack: Callable[[], None]) -> None:
        overflow: list[Callable[[], None]] = []
        with self._lock:
            self.received += 1
            if self._busy:
                before = self._pending
                acks = ([] if before is None else before._acks) + [ack]
                if before is not None:
                    self.replaced += 1
                if len(acks) > MAX_UNACKED:
                    overflow, acks = acks[:-MAX_UNACKED], acks[-MAX_UNACKED:]
                    self.dropped += len(overflow)
                self._pending = Inbound(payload, size, acks, 0 if before is None else before.replaced + 1, self)
                item = None
            else:
                self._busy = True
                item = Inbound(payload, size, [ack], 0, self)
        for early in overflow:
            early()
        if item is not None:
            self._deliver(item)

    def _done(self, item: Inbound, logged: bool) -> None:
        if logged:
            for ack in item._acks:  # the replaced ones first: the order they came in
                ack()
        with self._lock:
            following, self._pending = self._pending, None
            self._busy = following is not None
        if following is not None:
            if following.replaced:
                log.debug("%d schedule/set message(s) replaced by a newer one before being handled",
                          following.replaced)
            self._deliver(following)


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class Sync:
    """The device's MQTT link: one paho client, its network thread and our worker.

    `client_suffix=None` is the daemon: client id = device id, a persistent session
    (so schedules sent while it is offline arrive later), a retained Last Will and
    status messages. A one-shot command passes a suffix ("sync", "simulate"): it
    connects as `{device_id}-{suffix}` with a clean session and no Last Will, so it
    never disturbs a running daemon. `on_schedule` given = subscribe to schedule/set;
    it receives `Inbound` items one at a time and must call `item.done()` (see
    ScheduleInbox): the broker's PUBACK waits for that.

    TLS files that cannot be used (missing, truncated, a key that does not match its
    certificate) do not raise: `unusable` says why in one line, the link never connects,
    and the device goes on offline (the daemon logs a `device.fault`).

    `outbox` is a callable that opens an Outbox (called on the worker thread, the
    outbox closed when the worker ends: use this for a Store, whose SQLite connection
    only works on the thread that opened it), or an Outbox usable from any thread, or
    None (nothing to send: status and schedules only).
    """

    def __init__(
        self,
        settings: MqttSettings,
        device_id: str,
        outbox: Callable[[], Outbox] | Outbox | None,
        on_schedule: Callable[[Inbound], None] | None = None,
        *,
        client_suffix: str | None = None,
        now: Callable[[], datetime] = _utc_now,
        window: int = INFLIGHT_WINDOW,
        retry_after: float = RETRY_AFTER_REFUSAL_S,
        discovery: Callable[[dict], dict[str, str]] | None = None,
    ):
        self.settings = settings
        self.device_id = device_id
        self.topics = Topics(settings.topic_prefix, device_id)
        self.is_daemon = client_suffix is None
        self.client_id = device_id if self.is_daemon else f"{device_id}-{client_suffix}"
        self.last_error: str | None = None      # the latest problem, for `dispenser status`
        self.last_refusal: str | None = None    # the latest row the broker would not take
        self._outbox_source = outbox
        self._outbox: Outbox = _NoOutbox()  # the worker's, once it has opened it
        self._on_schedule = on_schedule
        self.inbox = ScheduleInbox(on_schedule) if on_schedule is not None else None
        self.unusable: str | None = None        # why this link can never connect (bad TLS files)
        self.undelivered: str | None = None     # the latest row answered "no matching subscribers"
        self._retry_after = retry_after
        self._waiting: dict[int, float] = {}  # rows answered 0x10: seq -> when to publish them again
        self._tries: dict[int, int] = {}      # rows answered 0x10: seq -> how many times so far
        self._stuck = False          # nothing left to send but rows nobody took (0x10)
        self._now = now
        self._window = window
        self._v5 = settings.protocol == "5"

        self._cond = threading.Condition()
        self._started = self._stopping = False
        self._ready = False          # connected, subscribed: the drain may run
        self._wake = True            # there may be rows to send
        self._idle = False           # the last look found the outbox empty
        self._failed_attempt = False  # an attempt failed since start or the last connection
        self._hold_until = 0.0       # after a refused row, monotonic time to try again
        self._mid_seq: dict[int, int] = {}        # PUBLISH mid -> outbox seq
        self._inflight: dict[int, set[int]] = {}  # seq -> mids still awaiting PUBACK
        self._acked: list[int] = []               # seqs to mark sent (by the worker)
        self._reached: set[int] = set()           # seqs in flight of which a copy reached a subscriber
        self._early: dict[int, ReasonCode] = {}   # PUBACKs that beat publish() returning
        self._other_mids: dict[int, str] = {}     # status/state publishes: mid -> topic
        self._sub_mid: int | None = None
        self._state_latest: str | None = None     # the newest state given: sent, or sent at the next connect
        self._state_shown: str | None = None      # the same without its `at`: what a new state is compared with
        # (v2) Home Assistant: state document -> {discovery topic: retained payload} (homeassistant.py)
        self._discovery = discovery
        self._discovery_latest: dict[str, str] = {}
        self._discovery_sent: dict[str, str] = {}
        self._stop_timeout = 5.0

        self._client = self._make_client()
        self._worker = threading.Thread(target=self._run, name=f"sync-{self.client_id}", daemon=True)

    # ----------------------------------------------------------------- public

    @property
    def connected(self) -> bool:
        """Connected and ready (subscribed where it subscribes)."""
        return self._ready

    def start(self) -> None:
        """Connect in the background; returns at once whether or not a broker is there."""
        with self._cond:
            if self._started:
                return
            self._started = True
        if self.unusable:
            self._connection_failed(self.unusable)
            return
        properties = {"MaximumPacketSize": MAX_PACKET_BYTES}
        if self.inbox is not None:  # the broker sends at most this many unacknowledged
            properties["ReceiveMaximum"] = RECEIVE_MAXIMUM
        connect_async(self._client, self.settings, persistent=self.is_daemon, **properties)
        self._client.loop_start()
        self._worker.start()

    def notify(self) -> None:
        """New rows are in the outbox: wake the drain. Cheap; call after every append."""
        with self._cond:
            self._wake = True
            self._idle = False
            self._cond.notify_all()

    def publish_state(self, state: dict) -> None:
        """Retain the device's state (next dose, stock, backlog...). Offline: keep the newest.

        A state that differs from the last one only in its `at` is not sent: the retained one
        says the same. Every connect sends the newest again (`_become_ready`), so a broker that
        lost its retained messages has it back without waiting for a change.
        """
        payload = json.dumps(state, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        shown = json.dumps({key: value for key, value in state.items() if key != "at"},
                           sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        with self._cond:
            if shown == self._state_shown:
                return
            self._state_latest, self._state_shown = payload, shown
        messages = self._discovery(state) if self._discovery is not None else None
        with self._cond:
            if messages is not None:
                self._discovery_latest = messages
            if not self._ready:
                return
        self._publish_discovery(everything=False)
        self._publish_other(self.topics.state, payload)

    def _publish_discovery(self, everything: bool) -> None:
        """Retain the Home Assistant configs that changed (all of them at a connect: a
        broker that lost its retained messages, or a compartment emptied while offline)."""
        with self._cond:
            changed = {topic: payload for topic, payload in self._discovery_latest.items()
                       if everything or self._discovery_sent.get(topic) != payload}
            self._discovery_sent.update(changed)
        for topic, payload in changed.items():
            self._publish_other(topic, payload)

    def wait_connected(self, timeout: float) -> bool:
        """True once connected; False at the timeout or as soon as a connection attempt
        has failed since start() or the last connection (paho keeps retrying meanwhile)."""
        with self._cond:
            self._cond.wait_for(lambda: self._ready or self._failed_attempt, timeout)
            return self._ready

    def wait_for(self, predicate: Callable[["Sync"], bool], timeout: float) -> bool:
        """Wait until predicate(self) holds; re-checked at every change of connection,
        acknowledgement or error (e.g. `lambda s: s.last_error is not None`)."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)

    def wait_idle(self, timeout: float) -> bool:
        """True once the broker has acknowledged every row of the outbox."""
        with self._cond:
            return self._cond.wait_for(lambda: self._idle, timeout)

    def drain_once(self, timeout: float = 10.0) -> bool:
        """`dispenser sync --once`: connect, send everything, wait for the PUBACKs, leave.

        False when the broker could not be reached or did not acknowledge everything
        in time; whatever was acknowledged is marked sent either way.
        """
        deadline = time.monotonic() + timeout
        self.start()
        try:
            if not self.wait_connected(timeout):
                return False
            with self._cond:  # rows nobody subscribed to (0x10) will not go in this run: say so now
                self._cond.wait_for(lambda: self._idle or self._stuck, max(0.0, deadline - time.monotonic()))
                return self._idle
        finally:
            self.stop()

    def stop(self, timeout: float = 5.0) -> None:
        """Say offline (daemon only), disconnect cleanly, end both threads."""
        with self._cond:
            if not self._started or self._stopping or self.unusable:
                return
            self._stopping = True
            self._stop_timeout = timeout
            self._cond.notify_all()
        self._worker.join(timeout + 1.0)
        if self._worker.is_alive():  # the outbox is stuck; still leave the broker cleanly
            log.warning("sync worker did not stop in time")
            self._client.disconnect()
            self._client.loop_stop()

    def __enter__(self) -> "Sync":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ the client

    def _make_client(self) -> mqtt.Client:
        try:
            # manual_ack: a schedule/set is acknowledged only once the daemon has logged its answer.
            client = build_client(self.settings, self.client_id, persistent=self.is_daemon,
                                  client_class=_BoundedClient, manual_ack=self.inbox is not None)
        except TlsFilesError as error:
            self.unusable = str(error)
            self.last_error = self.unusable
            log.error("%s; running offline", self.unusable)
            # A client that never connects (start() sees `unusable`), so stop() has one to stop.
            client = build_client(replace(self.settings, tls=False), self.client_id, persistent=self.is_daemon,
                                  client_class=_BoundedClient, manual_ack=self.inbox is not None)
        client.max_inflight_messages_set(2 * self._window + 4)  # alerts take two; status, state
        client.network_wait = network_wait_for(self.settings.keepalive)
        if self.is_daemon:
            client.will_set(self.topics.status, json.dumps({"online": False}), qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags, reason_code: ReasonCode,
                    properties: Properties | None) -> None:
        if reason_code.is_failure:
            self._connection_failed(f"broker refused the connection: {reason_code}")
            return
        log.info("connected to %s:%s as %s (session present: %s)", self.settings.host,
                 self.settings.port, self.client_id, flags.session_present)
        if self._on_schedule is None:
            self._become_ready()
            return
        # Subscribe first; online and the drain follow the SUBACK, so "online" means
        # "can receive a schedule", and paho has re-sent its unacknowledged messages
        # by then, which keeps the events in seq order.
        # MQTT 5: no retained message at subscribe (retain handling 2); 3.1.1: see _on_message.
        if self._v5:
            options = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND)
            _, mid = client.subscribe(self.topics.schedule_set, options=options)
        else:
            _, mid = client.subscribe(self.topics.schedule_set, qos=1)
        with self._cond:
            self._sub_mid = mid

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int, reason_codes: list[ReasonCode],
                      properties: Properties | None) -> None:
        with self._cond:
            if mid != self._sub_mid:
                return
        if any(code.is_failure for code in reason_codes):
            self.last_error = f"broker refused the schedule/set subscription: {reason_codes[0]}"
            log.error("%s", self.last_error)
        self._become_ready()

    def _become_ready(self) -> None:
        if self.is_daemon:
            self._publish_other(self.topics.status, json.dumps(
                {"online": True, "device_id": self.device_id, "since": format_utc(self._now())}), retain=True)
        with self._cond:
            self._ready = True
            self._failed_attempt = False
            self._wake = True
            state = self._state_latest  # again at every connect, like the discovery configs
            self._cond.notify_all()
        if self.is_daemon:
            self._publish_discovery(everything=True)
        while state is not None:  # publish_state on the daemon's thread may have sent a newer one meanwhile
            self._publish_other(self.topics.state, state)
            with self._cond:
                state = None if self._state_latest == state else self._state_latest

    def _on_connect_fail(self, client: mqtt.Client, userdata: object) -> None:
        self._connection_failed(f"cannot connect to {self.settings.host}:{self.settings.port}")

    def _connection_failed(self, message: str) -> None:
        log.warning("%s", message)
        with self._cond:
            self.last_error = message
            self._failed_attempt = True
            self._cond.notify_all()

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: mqtt.DisconnectFlags,
                       reason_code: ReasonCode, properties: Properties | None) -> None:
        with self._cond:
            was_ready, self._ready = self._ready, False
            if self._stopping:
                pass
            elif was_ready:
                self.last_error = f"connection lost: {reason_code}"
                log.warning("%s", self.last_error)
            elif not self._failed_attempt:  # closed before CONNACK/SUBACK: e.g. plain MQTT to a TLS port
                self.last_error = f"connection to {self.settings.host}:{self.settings.port} closed: {reason_code}"
                self._failed_attempt = True
                log.warning("%s", self.last_error)
            self._cond.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        def ack(mid: int = message.mid, qos: int = message.qos) -> None:
            if qos > 0:
                self._client.ack(mid, qos)

        if message.topic != self.topics.schedule_set or self.inbox is None:
            ack()
            return
        oversize = getattr(client, "oversize", None)  # read past and thrown away (_BoundedClient)
        # Its head is the first MAX_PACKET_BYTES of the packet: the payload is the rest of its length.
        size = len(message.payload) if oversize is None else oversize - (MAX_PACKET_BYTES - len(message.payload))
        if message.retain:  # (v2) a retained schedule/set is ignored: not applied, not answered
            log.debug("ignored a retained schedule/set (%d bytes)", size)
            ack()
            return
        try:  # an exception here would end paho's network thread
            # Too large: the size alone goes on, the bytes are neither copied nor kept.
            self.inbox.offer(message.payload if oversize is None and size <= MAX_SCHEDULE_BYTES else None,
                             size, ack)
        except Exception:  # noqa: BLE001
            log.exception("on_schedule failed")

    # --------------------------------------------------- publishes and acks

    def _publish_other(self, topic: str, payload: str, retain: bool = True) -> int:
        """A status or state message: QoS 1, retained, not an outbox row."""
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        with self._cond:
            early = self._early.pop(info.mid, None)
            if early is None:
                self._other_mids[info.mid] = topic
            elif early.is_failure:
                self.last_error = self.last_refusal = f"{topic} not accepted: {early}"
        return info.mid

    def _publish_row(self, seq: int, payload: str) -> None:
        """Publish one outbox row (twice for an alert), then track its mids.

        The PUBACK may be handled before publish() returns; such early acks wait in
        `_early` and are settled here, after every mid of the row is known.
        """
        infos = [self._client.publish(topic, payload, qos=1) for topic in self._row_topics(payload)]
        with self._cond:
            failed = [info for info in infos if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS,
                                                               MQTTErrorCode.MQTT_ERR_NO_CONN)]
            if failed:  # refused by paho itself (too large?): ignore any ack, try later
                for info in infos:
                    if self._early.pop(info.mid, None) is None:
                        self._other_mids[info.mid] = "(abandoned)"
                self._refused(seq, mqtt.error_string(failed[0].rc))
                return
            self._inflight[seq] = {info.mid for info in infos}
            for info in infos:
                self._mid_seq[info.mid] = seq
            for info in infos:
                if info.mid in self._early:
                    self._settle(info.mid, self._early.pop(info.mid))

    def _row_topics(self, payload: str) -> list[str]:
        try:
            is_alert = json.loads(payload).get("type") == EventType.ALERT_RAISED
        except (ValueError, AttributeError):
            is_alert = False
        return [self.topics.events, self.topics.alerts] if is_alert else [self.topics.events]

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int, reason_code: ReasonCode,
                    properties: Properties) -> None:
        with self._cond:
            if mid in self._mid_seq:
                self._settle(mid, reason_code)
            elif mid in self._other_mids:
                topic = self._other_mids.pop(mid)
                if reason_code.is_failure:
                    self.last_error = self.last_refusal = f"{topic} not accepted: {reason_code}"
                    log.error("%s", self.last_error)
                self._cond.notify_all()
            else:
                self._early[mid] = reason_code

    def _settle(self, mid: int, reason_code: ReasonCode) -> None:
        """One PUBACK for a row (lock held). The row is acked when all its mids are."""
        seq = self._mid_seq.pop(mid)
        mids = self._inflight.get(seq)
        if mids is None:  # the row was already given up (its twin was refused)
            return
        mids.discard(mid)
        if reason_code.is_failure:
            for other in mids:  # its twin's ack no longer matters
                self._mid_seq.pop(other, None)
                self._other_mids[other] = "(abandoned)"
            self._inflight.pop(seq, None)
            self._reached.discard(seq)
            self._refused(seq, str(reason_code))
        else:
            if reason_code.value != NO_MATCHING_SUBSCRIBERS:
                self._reached.add(seq)
            if not mids:
                self._inflight.pop(seq, None)
                if seq in self._reached:
                    self._reached.discard(seq)
                    self._acked.append(seq)
                    self._tries.pop(seq, None)
                    if self._waiting:  # someone listens now: what found nobody goes again at once
                        self._waiting = dict.fromkeys(self._waiting, 0.0)
                else:  # 0x10 on every copy: a success code, but nobody got it; it stays unsent
                    tries = self._tries[seq] = self._tries.get(seq, 0) + 1
                    wait = min(self._retry_after * 2 ** (tries - 1), UNDELIVERED_BACKOFF_MAX_S)
                    self._waiting[seq] = time.monotonic() + wait
                    if self.undelivered is None:
                        log.warning("event seq %d not delivered: %s (nobody is subscribed); kept, sent again "
                                    "in %.0f s and later", seq, reason_code, wait)
                    self.undelivered = self.last_error = \
                        f"event seq {seq} not delivered: {reason_code} (nobody is subscribed)"
        self._wake = True
        self._cond.notify_all()

    def _refused(self, seq: int, why: str) -> None:
        """(Lock held.) The row stays unsent; the drain pauses instead of retrying at once."""
        self.last_refusal = f"event seq {seq} not accepted: {why}"
        self._pause(self.last_refusal)

    def _pause(self, why: str, seconds: float | None = None) -> None:
        """(Lock held.) Stop draining for a while (`retry_after`); acks are still recorded."""
        seconds = self._retry_after if seconds is None else seconds
        self.last_error = why
        log.error("%s; retrying in %.0f s", why, seconds)
        self._hold_until = max(self._hold_until, time.monotonic() + seconds)
        self._wake = True
        self._cond.notify_all()

    # ---------------------------------------------------------------- worker

    def _may_drain(self) -> bool:
        now = time.monotonic()
        due = any(when <= now for when in self._waiting.values())
        return (self._ready and (self._wake or due) and len(self._inflight) < self._window
                and now >= self._hold_until)

    def _hold_remaining(self) -> float | None:
        """Seconds until the pause ends or a row nobody took (0x10) is due again; None: no timeout."""
        now = time.monotonic()
        moments = [self._hold_until - now] + [when - now for when in self._waiting.values()]
        ahead = [moment for moment in moments if moment > 0]
        return min(ahead) if ahead else None

    def _run(self) -> None:
        """The worker: open the outbox, then loop; close what it opened at the end."""
        source = self._outbox_source if self._outbox_source is not None else _NoOutbox()
        opened = not isinstance(source, Outbox)  # else a callable that opens one here
        try:
            self._outbox = source if isinstance(source, Outbox) else source()
        except Exception as exc:  # noqa: BLE001 - report it; stop() still works
            log.exception("cannot open the outbox")
            self.last_error = f"cannot open the outbox: {exc}"
            self._outbox = _BrokenOutbox(exc)
            opened = False
        try:
            self._loop()
        finally:
            close = getattr(self._outbox, "close", None)
            if opened and close is not None:
                close()

    def _loop(self) -> None:
        """Refill the window, mark acknowledged rows sent (in batches), sleep.

        Marking is a commit with an fsync, the slowest step by far, so acknowledged
        rows are marked a window's worth at a time, or as soon as nothing is left in
        flight (no PUBACK is coming to wake us), and at stop. The window is refilled
        before the marking, so the broker works while the fsync runs. Rows acked but
        not yet marked are never published again by this worker; after a crash they
        would be, which delivery at least once allows.
        """
        pending: set[int] = set()   # acknowledged, not yet marked sent
        while True:
            with self._cond:
                # Also wake when the rows in flight ended without a PUBACK to wake us (refused).
                # The timeout is the pause's, taken anew at every wake: a pause that began
                # while we slept (a 0x10, a refusal) must end the sleep when it ends.
                while not (self._stopping or self._acked or self._may_drain() or (pending and not self._inflight)):
                    self._cond.wait(self._hold_remaining())
                stopping = self._stopping
                pending.update(self._acked)
                self._acked = []
                drain = not stopping and self._may_drain()
                if drain:
                    self._wake = False
                    room = self._window - len(self._inflight)
                    in_flight = set(self._inflight)
                    due = retry_round(self._waiting, time.monotonic(), self._retry_after * RETRY_ROUND,
                                      room, 10 * self._window)
                    waiting = set(self._waiting) - set(due)
            empty = self._drain(room, in_flight, pending, due, waiting) if drain else False
            with self._cond:
                more_acks_coming = bool(self._inflight)
                if drain:
                    self._stuck = empty and bool(self._waiting) and not self._inflight
                    if self._stuck:
                        self._cond.notify_all()
            marked = not pending
            if pending and (stopping or not more_acks_coming or len(pending) >= self._window):
                marked = self._mark_sent(pending)
                pending = set()  # marked, or (failed) to be read and sent again
            if empty and marked:
                self._became_idle()
            if stopping:
                self._shut_down()
                return

    def _drain(self, room: int, in_flight: set[int], acked: set[int], due: Sequence[int] = (),
               waiting: AbstractSet[int] = frozenset()) -> bool:
        """Publish unsent rows that are neither in flight nor acknowledged (and about
        to be marked) nor waiting to be tried again after a 0x10; first the `due` ones of
        those. True when nothing is left but the acknowledged and the waiting rows."""
        # Rows in flight, acknowledged or waiting are not read again: start after the highest of them.
        # A row refused meanwhile (lower) is read again once those are marked and the set is empty.
        known = in_flight | acked | waiting
        after = max(known | set(due), default=0)
        try:
            again = [row for row in self._outbox.unsent(due[-1] - due[0] + 1, due[0] - 1)
                     if row[0] in set(due)] if due else []
            rows = self._outbox.unsent(room - len(again), after) if room > len(again) else []
        except Exception as exc:  # noqa: BLE001 - a busy database must not end the worker
            log.exception("reading the outbox failed")
            with self._cond:
                self._pause(f"cannot read the outbox: {exc}")
            return False
        with self._cond:
            for seq in due:  # in flight again (or, if gone meanwhile, marked by another sender)
                self._waiting.pop(seq, None)
        fresh = [(seq, payload) for seq, payload in rows if seq not in known][:room - len(again)]
        # Each PUBACK wakes the worker again, which then fills the window anew.
        for seq, payload in again + fresh:
            self._publish_row(seq, payload)
        return not again and all(seq in acked for seq, _ in rows)

    def _became_idle(self) -> None:
        """The outbox was empty once the acknowledged rows were marked, unless a
        notify() or a publish came in meanwhile (then the next look decides)."""
        with self._cond:
            if not self._wake and not self._inflight and not self._waiting:
                self._idle = True
                self.undelivered = None
                self._cond.notify_all()

    def _mark_sent(self, seqs: Iterable[int]) -> bool:
        """False when the rows could not be marked (they stay unsent and go again: harmless)."""
        seqs = sorted(seqs)
        if not seqs:
            return True
        try:
            self._outbox.mark_sent(seqs, self._now())
        except Exception:  # noqa: BLE001
            log.exception("marking %d rows sent failed", len(seqs))
            return False
        finally:
            with self._cond:
                self._cond.notify_all()  # for wait_for() on the outbox
        return True

    def _shut_down(self) -> None:
        """On the worker: offline status, wait for its ack and late PUBACKs, disconnect."""
        timeout = self._stop_timeout
        if self.is_daemon and self._ready:
            mid = self._publish_other(self.topics.status, json.dumps(
                {"online": False, "device_id": self.device_id, "since": format_utc(self._now())}))
            with self._cond:
                self._cond.wait_for(lambda: mid not in self._other_mids or not self._ready, timeout)
        self._client.disconnect()
        self._client.loop_stop()
        with self._cond:
            self._ready = False
            acked, self._acked = self._acked, []
            self._cond.notify_all()
        self._mark_sent(acked)
