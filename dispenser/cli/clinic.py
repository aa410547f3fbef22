"""`dispenser sync` and `dispenser clinic ...`: one-shot sync and the clinic's side.

The decisions (dedup, what a line says) are in dispenser/clinic.py; this is the MQTT I/O.
Handlers raise UserError for bad input (one line, exit 2), return 1 when the broker
could not be reached or did not take everything, 0 otherwise.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import secrets
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

if TYPE_CHECKING:  # types only: paho and the device's modules load when a command needs them
    from datetime import datetime

    import paho.mqtt.client as paho_client
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode

    from ..clinic import Watcher
    from ..config import Config
    from ..mqtt_settings import MqttSettings, Topics
    from ..store import Store
    from ..sync import Sync

from ..vocabulary import EventType, ScheduleSource
from .common import UserError, config_of, open_log, read_json_object

KEY_FILE, PUB_FILE = "clinic.key", "clinic.pub"
DEFAULT_KEY_ID = "clinic"
SYNC_TIMEOUT_S = 30.0
PUSH_TIMEOUT_S = 10.0
FOLLOW_NOTIFY_S = 2.0   # `sync` without --once: how often to look for rows other processes appended


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> dict[str, Callable]:
    """Add `sync` and `clinic` to the `dispenser` subparsers; return {name: handler}."""
    sync = sub.add_parser("sync", parents=[common], help="push the outbox to the broker")
    sync.add_argument("--once", action="store_true", help="drain the outbox, then exit (0: all sent)")
    sync.add_argument("--timeout", type=float, help=f"with --once: give up after this many seconds "
                                                     f"(default {SYNC_TIMEOUT_S:.0f})")

    clinic = sub.add_parser("clinic", help="the clinic's side: keys, signed schedules, events")
    actions = clinic.add_subparsers(dest="action", required=True, metavar="ACTION")
    keygen = actions.add_parser("keygen", parents=[common], help="make an Ed25519 key pair")
    keygen.add_argument("--out-dir", default=".", metavar="DIR", help="where to write clinic.key/.pub")

    sign = actions.add_parser("sign", parents=[common], help="validate and sign a schedule")
    sign.add_argument("file")
    sign.add_argument("--key", required=True, metavar="FILE", help="the private key (clinic.key)")
    sign.add_argument("--key-id", default=DEFAULT_KEY_ID, metavar="ID", help="a name for the key")
    sign.add_argument("--out", metavar="FILE", help="default: FILE with .signed.json")
    sign.add_argument("--device", metavar="ID",
                      help="the device it is for (device_id); required unless FILE names it")
    sign.add_argument("--expires-in", type=float, metavar="HOURS",
                      help="sets expires_at: the device refuses it (expired) after that many hours")

    push = actions.add_parser("push", parents=[common], help="send a signed schedule to a device")
    push.add_argument("file")
    push.add_argument("--device", required=True, metavar="ID")
    push.add_argument("--allow-unsigned", action="store_true", help="send it even though it is unsigned")
    push.add_argument("--timeout", type=float, default=PUSH_TIMEOUT_S)
    push.add_argument("--wait", type=float, metavar="S",
                      help="then wait up to S seconds for the device's answer (applied or rejected)")

    watch = actions.add_parser("watch", parents=[common], help="follow events, alerts and status")
    watch.add_argument("--device", metavar="ID", help="one device (default: all)")
    watch.add_argument("--json", action="store_true", help="JSON lines: each new event as it was sent")
    watch.add_argument("--count", type=int, metavar="N", help="exit after N new events (alerts count)")
    watch.add_argument("--timeout", type=float, metavar="S", help="exit after S seconds")
    watch.add_argument("--session", metavar="NAME",
                       help="a persistent session: what arrives while this watcher is away is kept for it")
    return {"sync": cmd_sync, "clinic": cmd_clinic}


def cmd_clinic(args: argparse.Namespace) -> int:
    return {"keygen": clinic_keygen, "sign": clinic_sign, "push": clinic_push,
            "watch": clinic_watch}[args.action](args)


# -- shared helpers -------------------------------------------------------------------


def _mqtt_settings(config: Config) -> MqttSettings:
    """The `[mqtt]` table as MqttSettings, or one line saying why not."""
    from ..mqtt_settings import MqttSettings
    if not config.mqtt:
        raise UserError(f"{config.source}: no [mqtt] table: there is no broker to talk to")
    try:
        return MqttSettings.from_config(config.mqtt)
    except ValueError as error:
        raise UserError(f"{config.source}: {error}") from None


def _fail(message: str) -> int:
    """Could not do it (broker down, not acknowledged): one line, exit 1."""
    print(f"dispenser: {message}", file=sys.stderr)
    return 1


# -- dispenser sync ---------------------------------------------------------------------


class _CountingOutbox:
    """The Store, counting the rows the sync marks sent (so we can say how many went)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.sent = 0

    def unsent(self, limit: int, after: int = 0) -> list[tuple[int, str]]:
        return self.store.unsent(limit, after)

    def mark_sent(self, seqs: Iterable[int], now: datetime) -> None:
        seqs = list(seqs)
        self.store.mark_sent(seqs, now)
        self.sent += len(seqs)

    def backlog(self) -> int:
        return self.store.backlog()

    def close(self) -> None:
        self.store.close()


def cmd_sync(args: argparse.Namespace) -> int:
    """Push the outbox as `{device_id}-sync`: no Will, clean session, never the daemon's id."""
    from ..store import Store
    from ..sync import Sync
    config = config_of(args)
    settings = _mqtt_settings(config)
    if args.timeout is not None and not args.once:
        raise UserError("--timeout goes with --once")
    timeout = SYNC_TIMEOUT_S if args.timeout is None else args.timeout
    if not timeout > 0:
        raise UserError("--timeout must be more than 0")
    path = args.db or config.db_path
    before = _backlog(args, config)
    counter: list[_CountingOutbox] = []

    def opener() -> _CountingOutbox:  # runs on the sync's worker thread
        counter.append(_CountingOutbox(Store.open_outbox(path, config.device_id)))
        return counter[0]

    sync = Sync(settings.for_command("sync"), config.device_id, opener, None, client_suffix="sync")
    where = f"{settings.host}:{settings.port}"
    if args.once:
        return _sync_once(sync, timeout, where, before, lambda: counter[0].sent if counter else 0)
    return _sync_follow(sync, where, lambda: counter[0].sent if counter else 0)


def _backlog(args: argparse.Namespace, config: Config) -> int:
    """Open the log as the other commands do (a missing or foreign file: one line)."""
    store = open_log(args, config, create=False)
    try:
        return store.backlog()
    finally:
        store.close()


def _sync_once(sync: Sync, timeout: float, where: str, before: int, sent: Callable[[], int]) -> int:
    """Exit 0 means: the broker answered and the outbox is empty (so it also connects
    when nothing waits, which makes `sync --once` a check of the broker settings)."""
    logging.getLogger("dispenser.sync").setLevel(logging.CRITICAL)  # the one line below says it all
    began = time.monotonic()
    ok = sync.drain_once(timeout)
    count = sent()
    if ok:
        print(f"sent {count} event(s) to {where} in {time.monotonic() - began:.1f} s; outbox empty")
        return 0
    left = max(before - count, 0)
    if getattr(sync, "undelivered", None):  # PUBACK 0x10: the broker threw it away, nobody is subscribed
        return _fail(f"sync: sent {count} event(s); {left} not delivered: nobody is subscribed "
                     f"({sync.undelivered}); they wait in the outbox")
    if count == 0 and sync.last_error:
        return _fail(f"sync: {sync.last_error}; {left} event(s) still wait in the outbox")
    why = f" ({sync.last_error})" if sync.last_error else ""
    return _fail(f"sync: sent {count} event(s), {left} still unsent after {timeout:g} s{why}")


def _sync_follow(sync: Sync, where: str, sent: Callable[[], int]) -> int:
    """A foreground pusher for a device whose daemon is not running; ends with Ctrl-C.

    Another process (`dispenser refill`) cannot call our notify(), so look every
    FOLLOW_NOTIFY_S seconds; an empty look is one indexed query.
    """
    print(f"pushing the outbox to {where} until Ctrl-C", flush=True)
    shown, connected = 0, None
    sync.start()
    try:
        while True:
            time.sleep(FOLLOW_NOTIFY_S)
            sync.notify()
            if sync.connected != connected:
                connected = sync.connected
                print("connected" if connected else f"not connected: {sync.last_error or 'connecting'}",
                      flush=True)
            if sent() != shown:
                shown = sent()
                print(f"sent {shown} event(s) so far", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        sync.stop()
    print(f"stopped; sent {sent()} event(s)")
    return 0


# -- dispenser clinic keygen / sign ------------------------------------------------------


def clinic_keygen(args: argparse.Namespace) -> int:
    """Write clinic.key (0600) and clinic.pub; never overwrite a key someone may rely on."""
    from ..signing import generate_keypair
    out = Path(args.out_dir)
    if not out.is_dir():
        raise UserError(f"{out}: no such directory")
    key_path, pub_path = out / KEY_FILE, out / PUB_FILE
    for path in (key_path, pub_path):
        if path.exists():
            raise UserError(f"{path} already exists: not overwriting a key (move it away first)")
    private, public = generate_keypair()
    _write_new(key_path, private + "\n", 0o600)
    _write_new(pub_path, public + "\n", 0o644)
    print(f"private key  {key_path}  (keep it secret; mode 0600)")
    print(f"public key   {pub_path}  {public}")
    print("put this in each device's config:")
    print("[clinic]")
    print(f'public_key = "{public}"')
    return 0


def _write_new(path: Path, text: str, mode: int) -> None:
    """Create `path` with `mode` from the start (no moment when the key is world-readable)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise UserError(f"{path} already exists: not overwriting a key (move it away first)") from None
    except OSError as error:
        raise UserError(f"{path}: cannot write ({error.strerror})") from None
    with os.fdopen(fd, "w", encoding="ascii") as file:
        file.write(text)
    os.chmod(path, mode)  # the umask may have taken bits from the public key's mode


def _private_key(path: str) -> str:
    from ..signing import load_private_key
    try:
        text = Path(path).read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: cannot be read ({error})") from None
    try:
        load_private_key(text)
    except ValueError as error:
        raise UserError(f"{path}: not a clinic key ({error})") from None
    return text


def _validate(document: dict) -> None:
    """The device's own check (ScheduleError: every problem with its field path, exit 2).

    A document without `timezone` takes the device's; UTC stands in for it here.
    """
    from ..schedule import parse_schedule
    parse_schedule(document, default_timezone="UTC")


def clinic_sign(args: argparse.Namespace) -> int:
    from ..signing import CanonicalFormError, sign_document
    document = read_json_object(args.file)
    _validate(document)
    key = _private_key(args.key)
    if not args.key_id.strip():
        raise UserError("--key-id must not be empty")
    _bind(args, document)
    _validate(document)
    try:
        signed = sign_document(document, key, args.key_id)  # over its RFC 8785 form
    except CanonicalFormError as error:
        raise UserError(f"{args.file}: cannot be signed ({error})") from None
    out = Path(args.out) if args.out else _signed_name(Path(args.file))
    try:
        out.write_text(json.dumps(signed, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    except OSError as error:
        raise UserError(f"{out}: cannot write ({error.strerror})") from None
    print(f"signed schedule version {signed['version']} with key id {args.key_id!r}: {out}")
    return 0


def _bind(args: argparse.Namespace, document: dict) -> None:
    """(v2) Put `device_id` (--device) and `expires_at` (--expires-in) in the document to be signed.

    A device applies from MQTT only a schedule that names it (contract section 2).
    """
    named = document.get("device_id")
    if args.device is not None:
        if not args.device.strip():
            raise UserError("--device must not be empty")
        if named is not None and named != args.device:
            raise UserError(f"{args.file} names device_id {named!r}, not --device {args.device!r}")
        document["device_id"] = args.device
    elif named is None:
        raise UserError(f"{args.file} names no device_id: pass --device ID (a device refuses a schedule "
                          "from the clinic that does not name it: wrong_device)")
    if args.expires_in is not None:
        if not 0 < args.expires_in <= 24 * 366:
            raise UserError("--expires-in must be more than 0 and at most a year of hours (8784)")
        from datetime import datetime, timedelta, timezone
        expires = datetime.now(timezone.utc) + timedelta(hours=args.expires_in)
        document["expires_at"] = expires.strftime("%Y-%m-%dT%H:%M:%SZ")


def _signed_name(path: Path) -> Path:
    """schedule.json -> schedule.signed.json"""
    return path.with_name((path.stem if path.suffix == ".json" else path.name) + ".signed.json")


# -- MQTT clients of the clinic ----------------------------------------------------------


class _Link:
    """One paho client of the clinic's, with waits on a condition instead of sleeps."""

    def __init__(self, settings: MqttSettings, role: str, topics: Iterable[str] = (),
                 session: str | None = None) -> None:
        """`session`: a named, persistent session; the broker keeps what arrives while away."""
        from ..mqtt_client import StoppableClient, TlsFilesError, build_client
        self.settings = settings
        self.session = session
        self.topics = list(topics)
        self.connected = False
        self.failure: str | None = None
        self.acks: dict[int, ReasonCode] = {}
        self.messages: queue.Queue = queue.Queue()
        self.subscribed = False
        self._cond = threading.Condition()
        client_id = f"clinic-{role}-{session}" if session else f"clinic-{role}-{secrets.token_hex(4)}"
        try:
            self.client = build_client(settings, client_id, persistent=session is not None,
                                       client_class=StoppableClient, reconnect_max_s=30)
        except TlsFilesError as error:
            raise UserError(str(error)) from None
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = lambda client, userdata, message: self.messages.put(
            (message.topic, bytes(message.payload)))

    @property
    def where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    def connect(self, timeout: float) -> bool:
        """Connect (and subscribe); False with `failure` set when that did not happen in time."""
        from ..mqtt_client import connect_async
        try:
            connect_async(self.client, self.settings, persistent=self.session is not None)
        except ValueError as error:
            self.failure = str(error)
            return False
        self.client.loop_start()
        ready = self.wait(lambda: self.failure is not None or (self.connected and
                                                               (self.subscribed or not self.topics)), timeout)
        if not ready or not self.connected or self.failure is not None:
            self.failure = self.failure or f"no answer from the broker at {self.where} within {timeout:g} s"
            return False
        return True

    def wait(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def close(self) -> None:
        with self._cond:
            self.closing = True  # our own disconnect is not a lost connection
        self.client.disconnect()
        self.client.loop_stop()

    closing = False

    def _on_connect(self, client: paho_client.Client, userdata: object, flags: paho_client.ConnectFlags,
                    reason_code: ReasonCode, properties: Properties | None) -> None:
        with self._cond:
            if reason_code.is_failure:
                self.failure = f"the broker at {self.where} refused the connection: {reason_code}"
            else:
                self.connected, self.failure = True, None
                if self.topics:  # a clean session: subscribe again after every reconnect
                    client.subscribe([(topic, 1) for topic in self.topics])
            self._cond.notify_all()

    def _on_connect_fail(self, client: paho_client.Client, userdata: object) -> None:
        with self._cond:
            self.failure = f"cannot connect to the broker at {self.where}"
            self._cond.notify_all()

    def _on_disconnect(self, client: paho_client.Client, userdata: object, flags: paho_client.DisconnectFlags,
                       reason_code: ReasonCode, properties: Properties | None) -> None:
        with self._cond:
            if self.connected and not self.closing:
                print(f"-- connection to {self.where} lost ({reason_code}); reconnecting", file=sys.stderr)
            elif self.failure is None:
                self.failure = f"the broker at {self.where} closed the connection: {reason_code}"
            self.connected = False
            self._cond.notify_all()

    def _on_publish(self, client: paho_client.Client, userdata: object, mid: int, reason_code: ReasonCode,
                    properties: Properties) -> None:
        with self._cond:
            self.acks[mid] = reason_code
            self._cond.notify_all()

    def _on_subscribe(self, client: paho_client.Client, userdata: object, mid: int, reason_codes: list[ReasonCode],
                      properties: Properties | None) -> None:
        with self._cond:
            refused = [code for code in reason_codes if code.is_failure]
            if refused:
                self.failure = f"the broker refused the subscription: {refused[0]}"
            self.subscribed = True
            self._cond.notify_all()


# -- dispenser clinic push -----------------------------------------------------------------


def clinic_push(args: argparse.Namespace) -> int:
    """Publish a schedule to one device's schedule/set (QoS 1, not retained); wait for the PUBACK."""
    from ..sync import MAX_SCHEDULE_BYTES
    config = config_of(args)
    settings = _mqtt_settings(config)
    topic = _topics(settings, args.device).schedule_set
    document = read_json_object(args.file)
    _validate(document)
    if isinstance(document.get("device_id"), str) and document["device_id"] != args.device:
        raise UserError(f"{args.file} is for device {document['device_id']!r}, not {args.device!r}; "
                          "that device would refuse it (wrong_device)")
    _check_signature(args, document, config.clinic_public_key, config.clinic_keys)
    payload = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    if len(payload) > MAX_SCHEDULE_BYTES:
        raise UserError(f"{args.file}: {len(payload)} bytes; the device refuses more than "
                          f"{MAX_SCHEDULE_BYTES} (too_large)")
    if args.wait is not None and not args.wait > 0:
        raise UserError("--wait must be more than 0")
    # With --wait, listen to the device's events before sending, so its answer cannot slip by.
    events_topic = [_topics(settings, args.device).events] if args.wait else []
    link = _Link(settings, "push", events_topic)
    try:
        if not link.connect(args.timeout):
            return _fail(f"push: {link.failure}; nothing sent")
        info = link.client.publish(topic, payload, qos=1, retain=False)
        if not link.wait(lambda: info.mid in link.acks or not link.connected, args.timeout):
            return _fail(f"push: no acknowledgement from {link.where} within {args.timeout:g} s")
        if info.mid not in link.acks:
            return _fail(f"push: the broker closed the connection before acknowledging ({link.failure})")
        result = _push_result(link.acks[info.mid], topic, document)
        if result != 0 or not args.wait:
            return result
        return _await_answer(link, args.device, document.get("version"), args.wait)
    finally:
        link.close()


def _await_answer(link: _Link, device: str, version: object, wait_s: float) -> int:
    """The device's schedule.applied / schedule.rejected for this version: 0 applied, 1 otherwise."""
    deadline = time.monotonic() + wait_s
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            _, payload = link.messages.get(timeout=remaining)
        except queue.Empty:
            break
        try:
            event = json.loads(payload)
            kind, data = event["type"], event["data"]
        except (ValueError, TypeError, KeyError):
            continue
        if kind not in (EventType.SCHEDULE_APPLIED, EventType.SCHEDULE_REJECTED) \
                or data.get("source") != ScheduleSource.MQTT \
                or data.get("version") != version:
            continue
        if kind == EventType.SCHEDULE_APPLIED:
            print(f"{device} applied schedule version {version} at {event.get('at')}")
            return 0
        problems = "; ".join(str(p) for p in data.get("problems", [])[:3])
        return _fail(f"push: {device} rejected schedule version {version}: {data.get('reason')}"
                     + (f" ({problems})" if problems else ""))
    return _fail(f"push: no answer from {device} within {wait_s:g} s; it gets the schedule when it next "
                 "connects (its session keeps it), and answers then (see `dispenser clinic watch`)")


def _topics(settings: MqttSettings, device: str) -> Topics:
    from ..mqtt_settings import Topics
    try:
        return Topics(settings.topic_prefix, device)
    except ValueError as error:
        raise UserError(str(error)) from None


def _check_signature(args: argparse.Namespace, document: dict, public_key: str | None, keys: dict | None = None) -> None:
    """The device refuses an unsigned or wrongly signed schedule from MQTT: say so here."""
    from ..signing import KeyFormatError, SignatureError, verify_with_keys
    if "signature" not in document:
        if not args.allow_unsigned:
            raise UserError(f"{args.file} is not signed, and a device refuses unsigned schedules from MQTT "
                              "(sign it with `dispenser clinic sign`, or send it anyway with --allow-unsigned)")
        return
    if public_key is None and not keys:
        return
    try:
        verify_with_keys(document, keys or {}, public_key)
    except KeyFormatError as error:
        raise UserError(f"[clinic] key: {error}") from None
    except SignatureError as error:
        raise UserError(f"{args.file}: {error} (checked against the [clinic] keys); the device would "
                          "refuse it") from None


def _push_result(reason_code: ReasonCode, topic: str, document: dict) -> int:
    if reason_code.is_failure:
        return _fail(f"push: the broker refused it: {reason_code}")
    if reason_code.value == 0x10:  # MQTT 5 "No matching subscribers": it went nowhere
        return _fail(f"push: no device is subscribed to {topic} (it never connected, or its session "
                     "expired): nothing will be delivered")
    print(f"schedule version {document.get('version')} sent to {topic}; the device answers with a "
          "schedule.applied or schedule.rejected event")
    return 0


# -- dispenser clinic watch ----------------------------------------------------------------


def clinic_watch(args: argparse.Namespace) -> int:
    """Follow events, alerts, status and state; each event once (dedup on event_id)."""
    from ..clinic import Watcher
    config = config_of(args)
    settings = _mqtt_settings(config)
    if args.count is not None and args.count < 1:
        raise UserError("--count must be at least 1")
    if args.timeout is not None and not args.timeout > 0:
        raise UserError("--timeout must be more than 0")
    device = _topics(settings, args.device).device_id if args.device else "+"
    base = f"{settings.topic_prefix}/{device}"
    watcher = Watcher(settings.topic_prefix, json_lines=args.json)
    if args.session is not None and not (args.session.replace("-", "").replace("_", "").isalnum()
                                         and len(args.session) <= 40):
        raise UserError("--session may hold only letters, digits, - and _ (at most 40)")
    link = _Link(settings, "watch", [f"{base}/{kind}" for kind in ("events", "alerts", "status", "state")],
                 session=args.session)
    if hasattr(sys.stdout, "reconfigure"):  # a device's name in UTF-8 never stops a watch on an ASCII terminal
        sys.stdout.reconfigure(errors="replace")
    try:
        if not link.connect(args.timeout or PUSH_TIMEOUT_S):
            return _fail(f"watch: {link.failure}")
        return _follow(link, watcher, args.count, args.timeout)
    except KeyboardInterrupt:
        return 0
    finally:
        link.close()


def _follow(link: _Link, watcher: Watcher, count: int | None, timeout: float | None) -> int:
    """Print until Ctrl-C, `count` events, or `timeout` seconds (then 1 if `count` fell short)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while count is None or watcher.events_shown < count:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return 0 if count is None else _fail(
                f"watch: {watcher.events_shown} of {count} event(s) within {timeout:g} s")
        try:
            topic, payload = link.messages.get(timeout=remaining if remaining is not None else 1.0)
        except queue.Empty:
            continue
        for line in _lines(watcher, topic, payload):
            print(line, flush=True)
    return 0


def _lines(watcher: Watcher, topic: str, payload: bytes) -> list[str]:
    """The watcher's lines; a message it fails on (a bug of ours) is named, never fatal:
    whoever writes on the broker must not be able to stop the clinic's watch."""
    try:
        return watcher.handle(topic, payload)
    except Exception as error:  # noqa: BLE001 - the watch outlives any one message
        from ..clinic import printable
        return [printable(f"?? {topic[:200]}: could not be read ({type(error).__name__})")]
