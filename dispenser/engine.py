"""The engine: feeds inputs to the dose rules, logs what they decide, then carries it out.

The order is the safety. Every input is one write transaction: take the log's write lock,
fold what another process appended meanwhile (a `dispenser refill` beside the daemon), ask
the clock's owner whether it is trusted, let the rules decide, append the drafts (a release
as its intent), commit. Only then does a servo move. So no decision is made on a stale
log, and a release whose end is not recorded is found at the next start and reported
`dose.release_uncertain`, never repeated.

The rules' state belongs to the engine's thread. After every input the engine publishes
`view`, an immutable `ReadModel` (readmodel.py) that any thread may read.
"""
from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta

from . import __version__
from . import docjson
from . import snapshot
from .events import GENESIS, canonical
from .inputs import PillNotSeen
from .readmodel import DoseView, ReadModel, StockView
from .rules import DoseRecord, DoseRules, Outcome, Release, State, copy_state, fold, forget_old
from .schedule import MAX_SCHEDULE_BYTES, MAX_VERSION, Schedule, ScheduleError, parse_schedule
from .scheduler import Dose
from .store import ChainBroken, SnapshotRow, Store, StoreError
from .timeutil import format_utc, parse_utc
from .vocabulary import Feedback, RejectReason, ReleaseOutcome, ScheduleSource

CLOCK_SKEW = timedelta(minutes=5)  # a schedule from the clinic issued later than this is from the future
FORGET_EVERY = 1000  # events folded at start between two forgettings of old dose records
# A snapshot of the folded state is written with the commit that takes the log this many
# events past the last one (and at every stop): a start folds at most this many events.
SNAPSHOT_EVERY = 250

Mover = Callable[[int, int], None]  # (compartment, quantity): raises when the servo fails
Listener = Callable[[list[dict]], None]
Decision = Callable[[], Outcome]


class ReadOnlyEngine(RuntimeError):
    """An input was given to an engine built `read_only` (a caller's mistake, not the log's)."""


def no_mover(compartment: int, quantity: int) -> None:
    """The mover of a device without servos (tests, `simulate --scenario`): nothing to move."""


class Engine:
    """One dispenser's decisions and their log. One thread owns it; any thread may read `view`.

    `clock_trusted` is the one owner of clock trust (a `ClockTrust.check`, clocktrust.py):
    asked once per input, its answer is what the rules decide with.

        >>> from datetime import timezone
        >>> from importlib.resources import files
        >>> from dispenser.clocktrust import ClockTrust
        >>> store, trust = Store.open(":memory:", "disp-0001"), ClockTrust("always")
        >>> contract_example = json.loads(files("dispenser").joinpath("demo", "schedule.json").read_text())
        >>> now = datetime(2026, 11, 24, 12, 45, tzinfo=timezone.utc)     # 07:45 in New York
        >>> engine = Engine(store, 8, "Europe/London", clock_trusted=trust.check)
        >>> outcome = engine.start(now)
        >>> engine.apply_schedule(now, contract_example, stock={"sertraline": 10}).feedback
        <Feedback.APPLIED: 'applied'>
        >>> engine.press(now).feedback
        <Feedback.RELEASED: 'released'>
        >>> engine.view.next_dose.name, engine.view.next_dose.scheduled_at
        ('Naltrexone 25 mg', datetime.datetime(2026, 11, 24, 14, 0, tzinfo=datetime.timezone.utc))
    """

    def __init__(self, store: Store, compartments: int, default_timezone: str = "UTC",
                 mover: Mover = no_mover, new_id: Callable[[], str] | None = None,
                 clinic_public_key: str | None = None, clock_trusted: Callable[[], bool] = lambda: True,
                 clinic_keys: Mapping[str, str] | None = None, read_model: bool = True,
                 snapshots: bool = True, read_only: bool = False):
        """`read_model=False`: a headless harness that never reads `view` (the safety
        simulation) saves computing it after every input; `view` then stays as built.
        `snapshots=False` folds the whole log and writes no snapshot (tests compare the two).
        `read_only=True`: a command that only looks (`dispenser status`): the fold is the
        rules' state, with no copy kept for the next snapshot, and every input raises
        `ReadOnlyEngine` before anything is read or written."""
        self.store = store
        self.read_only = read_only
        self._publishing = read_model
        self.compartments = compartments
        self.default_timezone = default_timezone
        self.mover = mover
        self.clinic_public_key = clinic_public_key
        self.clinic_keys = dict(clinic_keys or {})  # {key_id: base64}: `[clinic] keys`, for rotation
        self._clock_trusted = clock_trusted  # the one owner of clock trust (clocktrust.py), asked per input
        self.listeners: list[Listener] = []
        self.commit_filter: Callable[[Outcome], Outcome] | None = None  # the daemon's (daemon.RejectionLimiter)
        self._schedules: dict[int, Schedule] = {}  # by the seq of the `schedule.applied` that applied it
        self._new_id = new_id
        self._snapshots = snapshots
        self.rules = self._load_rules()  # the engine's own: everything else reads `view`
        # Before the first input: what the log says, nothing that depends on the time.
        self.view = self._read_model(None, self.rules.state.clock_trusted)

    # -- state ---------------------------------------------------------------------------

    def _schedule(self, version: int) -> Schedule | None:
        """The schedule the `schedule.applied` of `version` being folded put in force (the
        event after the last folded, `_seen_seq + 1`)."""
        return self._schedule_at(version, self._seen_seq + 1)

    def _schedule_at(self, version: int, seq: int) -> Schedule | None:
        """The schedule the `schedule.applied` of `version` at `seq` put in force.

        A version may be applied twice (a local apply, then the clinic's signed schedule
        under the same number): the one meant is the last applied at or before `seq`.
        """
        damaged = f"{self.store.name}: the log is damaged: the schedule version {version} applied at seq {seq}"
        try:
            row = self.store.schedule_text(version, seq)
            if row is None:  # saved in the same transaction as its event: a lost page, not a choice
                raise StoreError(f"{damaged} has no saved document; not starting on it")
            applied_seq, text = row
            if applied_seq not in self._schedules:
                self._schedules[applied_seq] = _parse_applied(text, self.default_timezone)
        except (ValueError, ScheduleError, sqlite3.Error) as error:
            raise StoreError(f"{damaged} cannot be read ({type(error).__name__}); not starting on it") from None
        return self._schedules[applied_seq]

    def _load_rules(self) -> DoseRules:
        """The state is the fold of the log: what is on disk is what the device knows.

        From the snapshot when one matches the log's chain and this code (snapshot.py),
        folding only the events after it; else from the first event. The events folded are
        checked to chain (a damaged event, an edit behind the triggers, stops the start with
        one line): what the device believes about the doses it gave must never come from a
        broken log. The whole chain is checked by `dispenser log verify` and, in the
        background, by the daemon (chaincheck.py).

        The fold (with old records forgotten every FORGET_EVERY seqs) is kept aside as
        `_folded`: a snapshot written later is that fold, never the rules' live state, so
        snapshot + events after it is the same fold as the whole log, by construction.
        """
        self._schedules = {}
        state, self._seen_seq, self._last_type, self._head = self._from_snapshot()
        self._snapshot_seq = self._seen_seq
        try:
            self._fold_logged(state, self.store.chained(self._seen_seq, self._head))
        except ChainBroken as broken:
            raise StoreError(f"{self.store.name}: the log is damaged at seq {broken.seq}; "
                             f"not starting on it (see `dispenser log verify`)") from None
        self._folded = state
        self.tail_folded = self._seen_seq - self._snapshot_seq  # events folded at this start
        # A reader writes no snapshot: the fold itself is its state, never copied.
        live = state if self.read_only else _copy_state(state)
        kwargs = {"new_id": self._new_id} if self._new_id else {}
        rules = DoseRules(live, self.compartments, self._schedule, **kwargs)
        if live.last_at is not None:
            rules._forget_old(live.last_at)
        self._keep_schedules_in_use(live)
        return rules

    def _from_snapshot(self) -> tuple[State, int, str | None, str]:
        """(state, its seq, the type of that event, its hash) from the snapshot, or the empty log's.

        `snapshot_note` says which, and why a snapshot was not used.
        """
        empty = State(), 0, None, GENESIS
        if not self._snapshots:
            self.snapshot_note = "not used"
            return empty
        row = self.store.snapshot()
        if row is None:
            self.snapshot_note = "none"
            return empty
        reason = self._stale(row)
        if reason:
            self.snapshot_note = f"ignored: {reason}"
            return empty
        try:
            data = json.loads(row.state)
            state = snapshot.restore(data, lambda seq: self._applied_by(seq))
            last_type = data.get("last_type")
        except (snapshot.SnapshotError, StoreError, ValueError, RecursionError, sqlite3.Error) as error:
            self.snapshot_note = f"ignored: {error}"
            self._schedules = {}
            return empty
        self.snapshot_note = f"seq {row.seq}"
        return state, row.seq, last_type, row.hash

    def _stale(self, row: SnapshotRow) -> str | None:
        """Why a stored snapshot may not be believed, or None."""
        if row.code != snapshot.code_version():
            return "written by other code"
        if snapshot.text_digest(row.state) != row.digest:
            return "its text is damaged"
        if not self.store.holds_head(row.seq, row.hash):
            return f"seq {row.seq} with its hash is not in the log"
        return None

    def _applied_by(self, seq: int) -> Schedule:
        """The schedule the `schedule.applied` at `seq` put in force (a snapshot names it so)."""
        row = self.store.db.execute("SELECT version FROM schedules WHERE applied_seq = ?", [seq]).fetchone()
        if row is None:
            raise snapshot.SnapshotError(f"no schedule was applied at seq {seq}")
        schedule = self._schedule_at(row[0], seq)
        if schedule is None:
            raise snapshot.SnapshotError(f"no schedule was applied at seq {seq}")
        return schedule

    def _fold_logged(self, state: State, events: Iterable[dict]) -> None:
        """Fold logged events as a start does, forgetting old records every FORGET_EVERY seqs."""
        for event in events:
            seq = event["seq"]
            fold(state, event, functools.partial(self._schedule_at, seq=seq))
            self._seen_seq, self._last_type, self._head = seq, event["type"], event["hash"]
            last = state.last_at
            if seq % FORGET_EVERY == 0 and last is not None:  # years of log fold in bounded memory
                forget_old(state, min(last, state.settled_until or last))

    def _keep_schedules_in_use(self, state: State) -> None:
        """Parsed schedules of the past are not kept: only the ones the states still use."""
        using = {id(state.schedule), id(self._folded.schedule)}
        self._schedules = {seq: s for seq, s in self._schedules.items() if id(s) in using}

    def _snapshot_due(self, stopping: bool) -> bool:
        return self._snapshots and self._seen_seq > self._snapshot_seq and (
            stopping or self._seen_seq - self._snapshot_seq >= SNAPSHOT_EVERY)

    def _write_snapshot(self) -> None:
        """The fold up to the last event, saved inside the input's transaction."""
        state = self._folded
        applied = next((seq for seq, s in self._schedules.items() if s is state.schedule), None) \
            if state.schedule is not None else None
        try:
            data = snapshot.dump(state, applied)
        except snapshot.SnapshotError:  # never a reason to refuse an input: the next start folds more
            return
        data["last_type"] = self._last_type
        text = snapshot.encode(data)
        self.store.save_snapshot(SnapshotRow(self._seen_seq, self._head, snapshot.code_version(),
                                             state.clock_trusted, snapshot.text_digest(text), text))
        self._snapshot_seq = self._seen_seq
        self._keep_schedules_in_use(self.rules.state)

    @property
    def last_seq(self) -> int:
        """The seq of the last event this engine has folded (its own or another writer's)."""
        return self._seen_seq

    def _fold_news(self) -> None:
        """Fold what another process appended since this engine last looked."""
        if self.read_only:  # one state: the rules' is the fold
            self._fold_logged(self.rules.state, self.store.events(since_seq=self._seen_seq))
            return
        for event in self.store.events(since_seq=self._seen_seq):
            fold(self.rules.state, event, self._schedule)
            self._fold_logged(self._folded, [event])

    def _ask_clock(self, now: datetime) -> Outcome:
        """Ask the clock's owner once for this input: the rules decide with its answer.

        When the answer differs from the log's last word, its drafts log the change.
        """
        self.rules.clock_trusted = self._clock_trusted()
        if self.rules.clock_trusted != self.rules.state.clock_trusted:
            return self.rules.clock_changed(now)
        return Outcome()

    # -- deciding and committing ---------------------------------------------------------

    def _decide(self, now: datetime, decide: Decision, closing: dict[str, str] | None = None,
                stopping: bool = False) -> Outcome:
        """One input: fold, ask the clock, decide and append under one write lock; then act.

        `closing` ends release intents ({event_id: outcome}) in that same transaction; it
        may be filled by `decide`. If anything fails, nothing of it is in the log, and the
        rules, which folded its drafts already, are rebuilt from the log.
        """
        if self.read_only:
            raise ReadOnlyEngine(f"{self.store.name}: this engine only reads (read_only=True): "
                                 f"it cannot decide or append")
        try:
            with self.store.writing():
                self._fold_news()
                outcome = self._ask_clock(now).extend(decide())
                if self.commit_filter is not None:  # the daemon's rate limit on repeated refusals
                    outcome = self.commit_filter(outcome)
                events = self._append(outcome, now, closing)
                if self._snapshot_due(stopping):
                    self._write_snapshot()
        except BaseException:
            self._rebuild(now)
            raise
        for listener in self.listeners:
            listener(events)
        failed = [release for release in outcome.releases if not self._carry_out(release, now)]
        if failed:
            outcome.feedback = Feedback.RELEASE_FAILED
        self._publish(now)
        return outcome

    def _rebuild(self, now: datetime) -> None:
        """After a failed input: the state the log holds, decided on with the clock's last answer."""
        trusted = self.rules.clock_trusted
        self.rules = self._load_rules()
        self.rules.clock_trusted = trusted
        self._publish(now)

    def _append(self, outcome: Outcome, now: datetime, closing: dict[str, str] | None) -> list[dict]:
        if not outcome.drafts:
            return []
        # At the rules' time: it stands still while the clock is untrusted.
        events = self.store.append(outcome.drafts, self.rules.log_time(now), outcome.schedule_document,
                                   complete_releases=closing)
        if events[0]["seq"] != self._seen_seq + 1:  # cannot happen under the lock; never log a stale decision
            raise StoreError(f"{self.store.name}: another writer appended during a decision")
        self._fold_logged(self._folded, events)  # as a start would fold them, for the next snapshot
        return events

    def _carry_out(self, release: Release, now: datetime) -> bool:
        try:
            self.mover(release.compartment, release.quantity)
        except PillNotSeen as unseen:  # the drop sensor's word: the rules say jam or empty
            seen = unseen.seen
            self._decide(now, lambda: self.rules.release_unseen(now, release, seen),
                         closing={release.event_id: "failed"})
            return False
        except Exception as error:  # a servo fault must not stop the device
            message = f"{type(error).__name__}: {error}"
            self._decide(now, lambda: self.rules.release_failed(now, release, message),
                         closing={release.event_id: ReleaseOutcome.FAILED})
            return False
        self.store.complete_release(release.event_id, ReleaseOutcome.DONE, now)
        return True

    # -- the read model ------------------------------------------------------------------

    def _publish(self, now: datetime) -> None:
        """Replace `view` in one assignment: readers on other threads see one whole moment."""
        if self._publishing:
            self.view = self._read_model(now, self.rules.clock_trusted)

    def _read_model(self, now: datetime | None, clock_trusted: bool) -> ReadModel:
        state = self.rules.state
        schedule = state.schedule
        medications = schedule.medications if schedule else ()
        names = {m.id: m.name for m in medications}

        def dose(item: Dose | DoseRecord) -> DoseView:
            record = state.doses.get((item.medication_id, item.scheduled_at))
            return DoseView(item.medication_id, names.get(item.medication_id, item.medication_id),
                            item.scheduled_at, item.quantity, item.compartment, item.window_start,
                            item.window_end, record.reminders if record else 0)

        upcoming = self.rules.upcoming(now) if now is not None else None
        return ReadModel(
            at=now, seq=self._seen_seq, last_event=self._last_type, last_event_at=state.last_at,
            schedule_version=schedule.version if schedule else None,
            timezone=schedule.tz if schedule else None,
            due=tuple(dose(d) for d in self.rules.releasable(now)) if now is not None else (),
            awaiting=tuple(dose(r) for r in self.rules.awaiting_confirmation(now)) if now is not None else (),
            next_dose=dose(upcoming) if upcoming else None,
            stock=tuple(StockView(m.id, m.name, m.compartment, state.stock.get(m.id, 0),
                                  m.id in state.stock_low, m.id in state.stock_empty, m.as_needed is not None,
                                  m.display)
                        for m in medications),
            clock_trusted=clock_trusted,
        )

    def look(self, now: datetime) -> ReadModel:
        """The read model at `now`, logging nothing (`dispenser status`): what others appended
        is folded and the clock asked, but no time passes for the rules."""
        self._fold_news()
        self.rules.clock_trusted = self._clock_trusted()
        self._publish(now)
        return self.view

    # -- inputs --------------------------------------------------------------------------

    def start(self, now: datetime) -> Outcome:
        closing: dict[str, str] = {}

        def decide() -> Outcome:
            interrupted = [
                Release(e["event_id"], e["data"]["medication_id"], e["data"]["compartment"], e["data"]["quantity"])
                for e in self.store.open_releases()
            ]
            closing.update({release.event_id: ReleaseOutcome.UNCERTAIN for release in interrupted})
            return self.rules.start(now, interrupted, __version__)
        outcome = self._decide(now, decide, closing)
        self._catch_up(now)
        return outcome

    def _catch_up(self, now: datetime) -> None:
        """A long catch-up (after downtime) slice by slice, each its own transaction: memory
        stays bounded however long the device was off (RULES.md, Downtime)."""
        self.rules.clock_trusted = self._clock_trusted()  # whether time may pass at all; each slice asks again
        while self.rules.catching_up(now):
            self._decide(now, lambda: self.rules.catch_up(now))

    def stop(self, now: datetime) -> Outcome:
        """The last input before a stop: a snapshot goes with it, so the next start folds little."""
        return self._decide(now, lambda: self.rules.stop(now), stopping=True)

    def tick(self, now: datetime) -> Outcome:
        self._catch_up(now)
        return self._decide(now, lambda: self.rules.tick(now))

    def press(self, now: datetime) -> Outcome:
        return self._decide(now, lambda: self.rules.press(now))

    def hold(self, now: datetime, medication_id: str | None = None) -> Outcome:
        return self._decide(now, lambda: self.rules.hold(now, medication_id))

    def refill(self, now: datetime, medication_id: str, count: int) -> Outcome:
        return self._decide(now, lambda: self.rules.refill(now, medication_id, count))

    def fault(self, now: datetime, component: str, error: str) -> Outcome:
        return self._decide(now, lambda: self.rules.fault(now, component, error))

    def checkin(self, now: datetime, mood: int | None, side_effects: str | None,
                medication_ids: list[str]) -> Outcome:
        return self._decide(now, lambda: self.rules.checkin(now, mood, side_effects, medication_ids))

    def clock_unsynchronized(self, now: datetime, minutes: int) -> Outcome:
        return self._decide(now, lambda: self.rules.clock_unsynchronized(now, minutes))

    def lid(self, now: datetime, opened: bool) -> Outcome:
        """The lid switch changed (docs/RULES.md, "The lid and the drop sensor")."""
        return self._decide(now, lambda: self.rules.lid(now, opened))

    def pill_outside_release(self, now: datetime, count: int) -> Outcome:
        """The drop sensor saw pills no release gave."""
        return self._decide(now, lambda: self.rules.pill_outside_release(now, count))

    def next_wakeup(self, now: datetime) -> datetime | None:
        """For the owning thread's loop: the next moment a tick would log something."""
        return self.rules.next_wakeup(now)

    def apply_schedule(self, now: datetime, document: object, source: ScheduleSource = ScheduleSource.LOCAL,
                       stock: Mapping[str, int] | None = None) -> Outcome:
        """Check a schedule document (parsed JSON) and apply it, or log why not.

        From MQTT the signature is checked first, so nothing unauthenticated reaches the parser;
        then the document must name this device, be unexpired and not from the future. Its
        version and issued_at are compared with the clinic's last schedule, never with a local
        one (docs/RULES.md, "Schedules"), so a local apply cannot lock the clinic out. The
        checks of the document alone read no state, so they run before the write lock is
        taken; the comparison with what the log holds runs under it. `stock` ({medication:
        count}) loads compartments in the same decision (the demo, a scenario's first fill).
        """
        version = document.get("version") if isinstance(document, dict) else None
        version = version if isinstance(version, int) and not isinstance(version, bool) else None
        checked, key_id = self._check_schedule(document, source, now)
        if not isinstance(checked, Schedule):
            return self._reject(now, version, source, *checked)

        def decide() -> Outcome:
            last_signed = None
            if source == ScheduleSource.MQTT:
                last = self.store.last_applied(ScheduleSource.MQTT)
                if last is not None:
                    last_signed = (last["version"], parse_utc(last["issued_at"]) if last.get("issued_at") else None)
            return self.rules.apply_schedule(now, checked, source, digest=document_digest(checked.document),
                                             key_id=key_id, last_signed=last_signed, stock=stock)
        return self._decide(now, decide)

    def _check_schedule(self, document: object, source: ScheduleSource,
                        now: datetime) -> tuple[Schedule | tuple[RejectReason, list[str]], str | None]:
        """(the parsed schedule, or (reason, problems) to refuse it with; the key_id that signed it)."""
        key_id = None
        if source == ScheduleSource.MQTT:
            refusal, key_id = self._signature_refusal(document)
            if refusal:
                return refusal, None
        unstorable = _unstorable(document)
        if unstorable:  # refused here, or the log would refuse its event and the apply would raise
            return (RejectReason.INVALID_SCHEMA, [unstorable]), None
        try:
            schedule = parse_schedule(document, self.default_timezone)
        except ScheduleError as error:
            return (RejectReason.INVALID_SCHEMA, error.problems), None
        except Exception as error:  # a bug in the validator refuses the document, never stops the device
            return (RejectReason.INVALID_SCHEMA, [f"(document): could not be checked ({type(error).__name__})"]), None
        if schedule.version > MAX_VERSION:  # the log could not store it: refuse it, do not raise
            return (RejectReason.INVALID_SCHEMA, [f"version: must be at most {MAX_VERSION}"]), None
        refusal = self._binding_refusal(schedule, source, now)
        if refusal:
            return refusal, None
        return schedule, key_id

    def _reject(self, now: datetime, version: int | None, source: ScheduleSource, reason: RejectReason,
                problems: list[str]) -> Outcome:
        return self._decide(now, lambda: self.rules.reject_schedule(now, version, source, reason, problems))

    def apply_schedule_payload(self, now: datetime, payload: bytes | bytearray | None,
                               source: ScheduleSource = ScheduleSource.MQTT,
                               size: int | None = None) -> Outcome:
        """The clinic's `schedule/set`: refused unparsed when too large (`payload` may then be
        None, `size` saying how large it was), then as a document."""
        size = len(payload) if size is None and payload is not None else size
        if payload is None or size is None or size > MAX_SCHEDULE_BYTES:
            return self._reject(now, None, source, RejectReason.TOO_LARGE, [f"payload: {size} bytes, more than 64 KiB"])
        try:
            document = docjson.loads(payload.decode("utf-8"))  # a duplicated key is invalid_json
        except RecursionError:  # `[[[[...`: 64 KiB of nesting must not stop the daemon
            return self._reject(now, None, source, RejectReason.INVALID_JSON, ["payload: nested too deeply"])
        except Exception as error:  # noqa: BLE001 - any parse failure (4,401 digits: ValueError) is a refusal
            return self._reject(now, None, source, RejectReason.INVALID_JSON, [f"payload: {str(error)[:200]}"])
        return self.apply_schedule(now, document, source)

    def _signature_refusal(self, document: object) -> tuple[tuple[RejectReason, list[str]] | None, str | None]:
        """(why it is refused, or None; the key_id that signed it)."""
        if not isinstance(document, dict):
            return (RejectReason.INVALID_SCHEMA, ["(document): must be a JSON object"]), None
        if not self.clinic_public_key and not self.clinic_keys:
            return (RejectReason.UNSIGNED,
                    ["signature: no clinic key is configured, so schedules from MQTT are refused"]), None
        from .signing import SignatureError, verify_with_keys  # cryptography costs 7 MB: load it when needed
        try:
            return None, verify_with_keys(document, self.clinic_keys, self.clinic_public_key)
        except SignatureError as error:
            return (error.reason, [f"signature: {error}"]), None
        except RecursionError:  # too deep for the canonical form, so it cannot have been signed
            return (RejectReason.BAD_SIGNATURE, ["signature: the document is nested too deeply to verify"]), None

    def _binding_refusal(self, schedule: Schedule, source: ScheduleSource,
                         now: datetime) -> tuple[RejectReason, list[str]] | None:
        """(v2) A document is for one device, may expire, and from the clinic is not from the future.

        Judged on the wall clock as given: a device whose clock is not yet set (behind) refuses
        a schedule issued after its clock's time as `from_the_future`; the clinic sends it again.
        """
        document, device = schedule.document, self.store.device_id
        named = document.get("device_id")
        if named is None and source == ScheduleSource.MQTT:
            return RejectReason.WRONG_DEVICE, [f"device_id: is required in a schedule from the clinic (this is {device})"]
        if named is not None and named != device:
            return RejectReason.WRONG_DEVICE, [f"device_id: {named[:64]!r} is not this device ({device})"]
        if "expires_at" in document and parse_utc(document["expires_at"]) <= now:
            return RejectReason.EXPIRED, [f"expires_at: {format_utc(parse_utc(document['expires_at']))} has passed "
                               f"(device clock {format_utc(now)})"]
        if source == ScheduleSource.MQTT and schedule.issued_at > now + CLOCK_SKEW:
            return RejectReason.FROM_THE_FUTURE, [f"issued_at: {format_utc(schedule.issued_at)} is more than "
                                       f"{CLOCK_SKEW.seconds // 60} minutes after the device clock ({format_utc(now)})"]
        return None


def _copy_state(state: State) -> State:
    """An independent copy of a folded state; the parsed schedule (immutable) is shared."""
    return copy_state(state)


@functools.lru_cache(maxsize=4)
def _parse_applied(text: str, default_timezone: str) -> Schedule:
    """A stored schedule document (its text) parsed as applied. The same text parses to the
    same schedule, so a few are kept for the engines built over one log (a restart, a command
    beside the daemon, a test); a parsed schedule is immutable, so engines may share it."""
    return parse_schedule(json.loads(text), default_timezone, applied=True)


def document_digest(document: dict) -> str:
    """sha256 (hex) of the document's RFC 8785 form without `signature`: what the clinic signs."""
    return docjson.digest(document)  # RFC 8785, as signed


def _unstorable(document: object) -> str | None:
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
