"""The engine: feeds inputs to the dose rules, logs what they decide, then carries it out.

The order is the safety: the rules decide, the drafts are committed to the log in one
transaction (a release is committed as its intent), and only then does a servo move.
A release whose end is not recorded is found at the next start and reported
`dose.release_uncertain`, never repeated.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from . import __version__
from .events import GENESIS, canonical, event_hash
from .rules import DoseRules, Outcome, Release, State, fold
from .schedule import Schedule, ScheduleError, parse_schedule
from .store import Store, StoreError
from .timeutil import format_utc, parse_utc

MAX_SCHEDULE_BYTES = 64 * 1024
MAX_VERSION = 2 ** 63 - 1  # the log keeps versions as SQLite INTEGERs
CLOCK_SKEW = timedelta(minutes=5)  # a schedule from the clinic issued later than this is from the future

Mover = Callable[[int, int], None]  # (compartment, quantity): raises when the servo fails
Listener = Callable[[list[dict]], None]


def no_mover(compartment: int, quantity: int) -> None:
    """The mover of a device without servos (tests, `simulate --scenario`): nothing to move."""


class Engine:
    """One dispenser's decisions and their log. One thread owns it."""

    def __init__(self, store: Store, compartments: int, default_timezone: str = "UTC",
                 mover: Mover = no_mover, new_id: Callable[[], str] | None = None,
                 clinic_public_key: str | None = None, clock_trusted: Callable[[], bool] = lambda: True,
                 clinic_keys: Mapping[str, str] | None = None):
        self.store = store
        self.compartments = compartments
        self.default_timezone = default_timezone
        self.mover = mover
        self.clinic_public_key = clinic_public_key
        self.clinic_keys = dict(clinic_keys or {})  # {key_id: base64}: `[clinic] keys`, for rotation
        self.clock_trusted = clock_trusted  # asked before every decision (clocktrust.py)
        self._clock_ok = True
        self.listeners: list[Listener] = []
        self.commit_filter: Callable[[Outcome], Outcome] | None = None
        self._schedules: dict[int, Schedule] = {}  # by the seq of the `schedule.applied` that applied it
        self._new_id = new_id
        self.rules = self._load_rules()

    # -- state ---------------------------------------------------------------------------

    def _schedule(self, version: int) -> Schedule | None:
        """The schedule the `schedule.applied` of `version` being folded put in force.

        A version may be applied twice (a local apply, then the clinic's signed schedule
        under the same number): the one meant is the last applied at or before the event
        being folded, the one after the last folded (`_seen_seq + 1`).
        """
        damaged = (f"{self.store.name}: the log is damaged: the schedule version {version} applied at seq "
                   f"{self._seen_seq + 1}")
        try:
            row = self.store.schedule_row(version, self._seen_seq + 1)
            if row is None:  # saved in the same transaction as its event: a lost page, not a choice
                raise StoreError(f"{damaged} has no saved document; not starting on it")
            applied_seq, document = row
            if applied_seq not in self._schedules:
                self._schedules[applied_seq] = parse_schedule(document, self.default_timezone)
        except (ValueError, ScheduleError, sqlite3.Error) as error:
            raise StoreError(f"{damaged} cannot be read ({type(error).__name__}); not starting on it") from None
        return self._schedules[applied_seq]

    def _load_rules(self) -> DoseRules:
        """The state is the fold of the whole log: what is on disk is what the device knows.

        The hash chain is checked on the way: a damaged event (a bad sector, an edit behind
        the triggers) stops the start with one line; it must never become what the device
        believes about the doses it gave.
        """
        state = State()
        self._seen_seq, prev_hash = 0, GENESIS
        try:
            for event in self.store.events():
                if event["seq"] != self._seen_seq + 1 or event["prev_hash"] != prev_hash \
                        or event_hash(prev_hash, event) != event["hash"]:
                    raise StoreError(f"{self.store.name}: the log is damaged at seq {self._seen_seq + 1}; "
                                     f"not starting on it (see `dispenser log verify`)")
                fold(state, event, self._schedule)
                self._seen_seq, prev_hash = event["seq"], event["hash"]
        except sqlite3.Error as error:
            raise StoreError(f"{self.store.name}: the log is damaged after seq {self._seen_seq} "
                             f"({type(error).__name__}); not starting on it") from None
        kwargs = {"new_id": self._new_id} if self._new_id else {}
        rules = DoseRules(state, self.compartments, self._schedule, **kwargs)
        rules.clock_trusted = self._clock_ok
        if state.last_at is not None:
            rules._forget_old(state.last_at)
        return rules

    @property
    def state(self) -> State:
        return self.rules.state

    @property
    def last_seq(self) -> int:
        """The seq of the last event this engine has folded (its own or another writer's)."""
        return self._seen_seq

    def _refresh(self, now: datetime) -> None:
        """Fold what another process appended meanwhile (a `dispenser refill` beside the daemon),
        then ask whether the wall clock is trusted now: every input starts here."""
        for event in self.store.events(since_seq=self._seen_seq):
            fold(self.rules.state, event, self._schedule)
            self._seen_seq = event["seq"]
        self._ask_clock(now)

    # -- committing ----------------------------------------------------------------------

    def _commit(self, outcome: Outcome, now: datetime, closing: dict[str, str] | None = None) -> Outcome:
        """Log the drafts in one transaction, tell listeners, then carry out the releases.

        `closing` ends release intents ({event_id: outcome}) in that same transaction.
        """
        if self.commit_filter is not None:  # the daemon's rate limit on repeated refusals
            outcome = self.commit_filter(outcome)
        if outcome.drafts:
            try:
                # At the rules' time: it stands still while the clock is untrusted.
                events = self.store.append(outcome.drafts, self.rules.log_time(now), outcome.schedule_document,
                                           complete_releases=closing)
            except Exception:
                self.rules = self._load_rules()  # the rules folded drafts the log refused
                raise
            if events[0]["seq"] != self._seen_seq + 1:
                self.rules = self._load_rules()  # another writer came first: fold in log order
            self._seen_seq = events[-1]["seq"]
            for listener in self.listeners:
                listener(events)
        failed = [release for release in outcome.releases if not self._carry_out(release, now)]
        if failed:
            outcome.feedback = "release_failed"
        return outcome

    def _carry_out(self, release: Release, now: datetime) -> bool:
        try:
            self.mover(release.compartment, release.quantity)
        except Exception as error:  # a servo fault must not stop the device
            self._commit(self.rules.release_failed(now, release, f"{type(error).__name__}: {error}"), now,
                         closing={release.event_id: "failed"})
            return False
        self.store.complete_release(release.event_id, "done", now)
        return True

    # -- inputs --------------------------------------------------------------------------

    def _ask_clock(self, now: datetime) -> None:
        """Tell the rules whether the clock is trusted; log the moment that changes."""
        self._clock_ok = self.rules.clock_trusted = self.clock_trusted()
        if self._clock_ok != self.rules.state.clock_trusted:
            self._commit(self.rules.clock_changed(now), now)

    def start(self, now: datetime) -> Outcome:
        self._ask_clock(now)
        interrupted = [
            Release(e["event_id"], e["data"]["medication_id"], e["data"]["compartment"], e["data"]["quantity"])
            for e in self.store.open_releases()
        ]
        return self._commit(self.rules.start(now, interrupted, __version__), now,
                            closing={release.event_id: "uncertain" for release in interrupted})

    def stop(self, now: datetime) -> Outcome:
        self._refresh(now)
        return self._commit(self.rules.stop(now), now)

    def tick(self, now: datetime) -> Outcome:
        self._refresh(now)
        return self._commit(self.rules.tick(now), now)

    def press(self, now: datetime) -> Outcome:
        self._refresh(now)
        return self._commit(self.rules.press(now), now)

    def hold(self, now: datetime, medication_id: str | None = None) -> Outcome:
        self._refresh(now)
        return self._commit(self.rules.hold(now, medication_id), now)

    def refill(self, now: datetime, medication_id: str, count: int) -> Outcome:
        self._refresh(now)
        return self._commit(self.rules.refill(now, medication_id, count), now)

    def fault(self, now: datetime, component: str, error: str) -> Outcome:
        self._refresh(now)
        return self._commit(self.rules.fault(now, component, error), now)

    def checkin(self, now: datetime, mood: int | None, side_effects: str | None,
                medication_ids: list[str]) -> Outcome:
        self._refresh(now)
        return self._commit(self.rules.checkin(now, mood, side_effects, medication_ids), now)

    def clock_unsynchronized(self, now: datetime, minutes: int) -> Outcome:
        self._refresh(now)
        return self._commit(self.rules.clock_unsynchronized(now, minutes), now)

    def next_wakeup(self, now: datetime) -> datetime | None:
        return self.rules.next_wakeup(now)

    def apply_schedule(self, now: datetime, document, source: str = "local") -> Outcome:
        """Check a schedule document (parsed JSON) and apply it, or log why not.

        From MQTT the signature is checked first, so nothing unauthenticated reaches the parser;
        then the document must name this device, be unexpired and not from the future. Its
        version and issued_at are compared with the clinic's last schedule, never with a local
        one (docs/RULES.md, "Schedules"), so a local apply cannot lock the clinic out.
        """
        version = document.get("version") if isinstance(document, dict) else None
        version = version if isinstance(version, int) and not isinstance(version, bool) else None
        self._refresh(now)
        key_id = None
        if source == "mqtt":
            refusal, key_id = self._signature_refusal(document)
            if refusal:
                return self._commit(self.rules.reject_schedule(now, version, source, *refusal), now)
        unstorable = _unstorable(document)
        if unstorable:  # refused here, or the log would refuse its event and the apply would raise
            return self._commit(self.rules.reject_schedule(now, version, source, "invalid_schema",
                                                           [unstorable]), now)
        try:
            schedule = parse_schedule(document, self.default_timezone)
        except ScheduleError as error:
            return self._commit(self.rules.reject_schedule(now, version, source, "invalid_schema",
                                                           error.problems), now)
        except Exception as error:  # a bug in the validator refuses the document, never stops the device
            return self._commit(self.rules.reject_schedule(
                now, version, source, "invalid_schema",
                [f"(document): could not be checked ({type(error).__name__})"]), now)
        if schedule.version > MAX_VERSION:  # the log could not store it: refuse it, do not raise
            return self._commit(self.rules.reject_schedule(now, version, source, "invalid_schema",
                                                           [f"version: must be at most {MAX_VERSION}"]), now)
        refusal = self._binding_refusal(schedule, source, now)
        if refusal:
            return self._commit(self.rules.reject_schedule(now, version, source, *refusal), now)
        last_signed = None
        if source == "mqtt":
            last = self.store.last_applied("mqtt")
            if last is not None:
                last_signed = (last["version"], parse_utc(last["issued_at"]) if last.get("issued_at") else None)
        return self._commit(self.rules.apply_schedule(now, schedule, source, digest=document_digest(document),
                                                      key_id=key_id, last_signed=last_signed), now)

    def apply_schedule_payload(self, now: datetime, payload: bytes | None, source: str = "mqtt",
                               size: int | None = None) -> Outcome:
        """The clinic's `schedule/set`: refused unparsed when too large (`payload` may then be
        None, `size` saying how large it was), then as a document."""
        size = len(payload) if size is None else size
        if size > MAX_SCHEDULE_BYTES or payload is None:
            return self._commit(self.rules.reject_schedule(
                now, None, source, "too_large", [f"payload: {size} bytes, more than 64 KiB"]), now)
        try:
            document = json.loads(payload.decode("utf-8"))
        except RecursionError:  # `[[[[...`: 64 KiB of nesting must not stop the daemon
            return self._commit(self.rules.reject_schedule(
                now, None, source, "invalid_json", ["payload: nested too deeply"]), now)
        except Exception as error:  # noqa: BLE001 - any parse failure (4,401 digits: ValueError) is a refusal
            return self._commit(self.rules.reject_schedule(
                now, None, source, "invalid_json", [f"payload: {str(error)[:200]}"]), now)
        return self.apply_schedule(now, document, source)

    def _signature_refusal(self, document) -> tuple[tuple[str, list[str]] | None, str | None]:
        """(why it is refused, or None; the key_id that signed it)."""
        if not isinstance(document, dict):
            return ("invalid_schema", ["(document): must be a JSON object"]), None
        if not self.clinic_public_key and not self.clinic_keys:
            return ("unsigned", ["signature: no clinic key is configured, so schedules from MQTT are refused"]), None
        from .signing import SignatureError, verify_with_keys  # cryptography costs 7 MB: load it when needed
        try:
            return None, verify_with_keys(document, self.clinic_keys, self.clinic_public_key)
        except SignatureError as error:
            return (getattr(error, "reason", "bad_signature"), [f"signature: {error}"]), None
        except RecursionError:  # too deep for the canonical form, so it cannot have been signed
            return ("bad_signature", ["signature: the document is nested too deeply to verify"]), None

    def _binding_refusal(self, schedule: Schedule, source: str, now: datetime) -> tuple[str, list[str]] | None:
        """(v2) A document is for one device, may expire, and from the clinic is not from the future.

        Judged on the wall clock as given: a device whose clock is not yet set (behind) refuses
        a schedule issued after its clock's time as `from_the_future`; the clinic sends it again.
        """
        document, device = schedule.document, self.store.device_id
        named = document.get("device_id")
        if named is None and source == "mqtt":
            return "wrong_device", [f"device_id: is required in a schedule from the clinic (this is {device})"]
        if named is not None and named != device:
            return "wrong_device", [f"device_id: {named[:64]!r} is not this device ({device})"]
        if "expires_at" in document and parse_utc(document["expires_at"]) <= now:
            return "expired", [f"expires_at: {format_utc(parse_utc(document['expires_at']))} has passed "
                               f"(device clock {format_utc(now)})"]
        if source == "mqtt" and schedule.issued_at > now + CLOCK_SKEW:
            return "from_the_future", [f"issued_at: {format_utc(schedule.issued_at)} is more than "
                                       f"{CLOCK_SKEW.seconds // 60} minutes after the device clock ({format_utc(now)})"]
        return None


def document_digest(document: dict) -> str:
    """sha256 (hex) of the document's canonical form without `signature`: what the clinic signs."""
    body = {key: value for key, value in document.items() if key != "signature"}
    return hashlib.sha256(canonical(body).encode("utf-8")).hexdigest()


def _unstorable(document) -> str | None:
    """Why a document cannot be kept in the log as canonical UTF-8 JSON, or None.

    NaN, lone surrogates (`"\\ud800"`) and extreme nesting parse, but the log refuses
    them; the problem text must not quote them either, or the rejection itself would fail.
    """
    try:
        canonical(document).encode("utf-8")
    except (ValueError, TypeError):
        return "(document): holds NaN, Infinity or text that is not valid Unicode"
    except RecursionError:
        return "(document): nested too deeply"
    return None
