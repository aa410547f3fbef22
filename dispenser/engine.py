"""The engine: feeds inputs to the dose rules, logs what they decide, then carries it out.

The order is the safety: the rules decide, the drafts are committed to the log in one
transaction (a release is committed as its intent), and only then does a servo move.
A release whose end is not recorded is found at the next start and reported
`dose.release_uncertain`, never repeated.
"""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import datetime

from . import __version__
from .events import GENESIS, canonical, event_hash
from .rules import DoseRules, Outcome, Release, State, fold, forget_old
from .schedule import Schedule, ScheduleError, parse_schedule
from .store import Store, StoreError

MAX_SCHEDULE_BYTES = 64 * 1024
MAX_VERSION = 2 ** 63 - 1  # the log keeps versions as SQLite INTEGERs
FORGET_EVERY = 1000  # events folded at start between two forgettings of old dose records

Mover = Callable[[int, int], None]  # (compartment, quantity): raises when the servo fails
Listener = Callable[[list[dict]], None]


def no_mover(compartment: int, quantity: int) -> None:
    """The mover of a device without servos (tests, `simulate --scenario`): nothing to move."""


class Engine:
    """One dispenser's decisions and their log. One thread owns it."""

    def __init__(self, store: Store, compartments: int, default_timezone: str = "UTC",
                 mover: Mover = no_mover, new_id: Callable[[], str] | None = None,
                 clinic_public_key: str | None = None, clock_trusted: Callable[[], bool] = lambda: True):
        self.store = store
        self.compartments = compartments
        self.default_timezone = default_timezone
        self.mover = mover
        self.clinic_public_key = clinic_public_key
        self.clock_trusted = clock_trusted  # asked before every decision (clocktrust.py)
        self._clock_ok = True
        self.listeners: list[Listener] = []
        self._schedules: dict[int, Schedule] = {}
        self._new_id = new_id
        self.rules = self._load_rules()

    # -- state ---------------------------------------------------------------------------

    def _schedule(self, version: int) -> Schedule | None:
        if version not in self._schedules:
            document = self.store.schedule_document(version)
            if document is None:
                return None
            self._schedules[version] = parse_schedule(document, self.default_timezone)
        return self._schedules[version]

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
                if self._seen_seq % FORGET_EVERY == 0:  # years of log fold in bounded memory
                    forget_old(state, min(state.last_at, state.settled_until or state.last_at))
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
        outcome = self._commit(self.rules.start(now, interrupted, __version__), now,
                               closing={release.event_id: "uncertain" for release in interrupted})
        self._catch_up(now)
        return outcome

    def _catch_up(self, now: datetime) -> None:
        """A long catch-up (after downtime) slice by slice, each its own transaction: memory
        stays bounded however long the device was off (RULES.md, Downtime)."""
        while self.rules.catching_up(now):
            self._commit(self.rules.catch_up(now), now)
            self._refresh(now)

    def stop(self, now: datetime) -> Outcome:
        self._refresh(now)
        return self._commit(self.rules.stop(now), now)

    def tick(self, now: datetime) -> Outcome:
        self._refresh(now)
        self._catch_up(now)
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

        From MQTT the signature is checked first, so nothing unauthenticated reaches the parser.
        """
        version = document.get("version") if isinstance(document, dict) else None
        version = version if isinstance(version, int) and not isinstance(version, bool) else None
        self._refresh(now)
        if source == "mqtt":
            refusal = self._signature_refusal(document)
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
        self._schedules[schedule.version] = schedule
        return self._commit(self.rules.apply_schedule(now, schedule, source), now)

    def apply_schedule_payload(self, now: datetime, payload: bytes, source: str = "mqtt") -> Outcome:
        """The clinic's `schedule/set`: refused unparsed when too large, then as a document."""
        if len(payload) > MAX_SCHEDULE_BYTES:
            return self._commit(self.rules.reject_schedule(
                now, None, source, "too_large", [f"payload: {len(payload)} bytes, more than 64 KiB"]), now)
        try:
            document = json.loads(payload.decode("utf-8"))
        except RecursionError:  # `[[[[...`: 64 KiB of nesting must not stop the daemon
            return self._commit(self.rules.reject_schedule(
                now, None, source, "invalid_json", ["payload: nested too deeply"]), now)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            return self._commit(self.rules.reject_schedule(
                now, None, source, "invalid_json", [f"payload: {error}"]), now)
        return self.apply_schedule(now, document, source)

    def _signature_refusal(self, document) -> tuple[str, list[str]] | None:
        if not isinstance(document, dict):
            return "invalid_schema", ["(document): must be a JSON object"]
        if not self.clinic_public_key:
            return "unsigned", ["signature: no clinic key is configured, so schedules from MQTT are refused"]
        from .signing import SignatureError, verify_document  # cryptography costs 7 MB: load it when needed
        try:
            verify_document(document, self.clinic_public_key)
        except SignatureError as error:
            return getattr(error, "reason", "bad_signature"), [f"signature: {error}"]
        except RecursionError:  # too deep for the canonical form, so it cannot have been signed
            return "bad_signature", ["signature: the document is nested too deeply to verify"]
        return None


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
