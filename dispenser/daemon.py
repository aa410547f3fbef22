"""The daemon: one loop that owns all state.

gpiozero callbacks, the MQTT thread and signal handlers only `put` an input on the
queue; the loop takes them one at a time, feeds them to the engine (which logs before
anything moves), drives the servos, the LCD, the buzzer and the LED, and then sleeps
until the next thing is due: a window opening or closing, a reminder, a timeout of
the screen, or the next minute of the clock on the display. No busy polling.

Time comes from a clock object, so tests move it and the simulator speeds it up.
"""
from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Protocol, assert_never
from zoneinfo import ZoneInfo

from .engine import Engine
from .inputs import (ChainCheckFailed, ConnectionChanged, Hold, Input, LidClosed, LidOpened, PillNotSeen, PillSeen,
                     Press, Refill, ScheduleMessage, Stop, Tick, UnknownInput, as_input)
from .store import StoreError
from .rules import Outcome
from .screens import MOODS, SIDE_EFFECTS, View, screen, screen_feedback, screen_name
from .timeutil import UTC
from .vocabulary import EventType, Feedback, ScheduleSource, ScreenMode

if TYPE_CHECKING:  # types only: the daemon does not import what it is given
    from .clocktrust import ClockTrust
    from .hardware import Hardware
    from .service import Notifier
    from .sync import Sync

log = logging.getLogger("dispenser")

FEEDBACK_FOR = timedelta(seconds=30)
MISSED_FOR = timedelta(minutes=10)
CHECKIN_SILENCE = timedelta(minutes=1)
MENU_SILENCE = timedelta(seconds=30)
SIGNAL_EVERY = timedelta(minutes=5)
MAX_BEEPS = 5
CLOCK_ALERT_AFTER_S = 30 * 60  # an untrusted clock holds doses: after this long, the clinic hears
REJECTIONS_BURST = 5                        # schedule.rejected events per reason logged at once...
REJECTION_EVERY = timedelta(minutes=1)      # ...then one a minute, the next saying how many were not
REJECTION_ALERT_EVERY = timedelta(hours=1)  # the caregiver hears of one cause once an hour
INPUT_FAULT_EVERY = timedelta(hours=1)      # an input that raises: one device.fault an hour per kind


class Clock(Protocol):
    """What the loop asks of time: the clock shown and decided with, and how long to sleep."""

    def now(self) -> datetime: ...

    def seconds_until(self, moment: datetime) -> float: ...


class SystemClock:
    """The wall clock, in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def seconds_until(self, moment: datetime) -> float:
        return (moment - self.now()).total_seconds()


class ScaledClock:
    """A clock that runs `speed` times faster than real time, from `start` (the simulator's)."""

    def __init__(self, start: datetime, speed: float):
        self.start, self.speed = start, speed
        self._began = time.monotonic()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=(time.monotonic() - self._began) * self.speed)

    def seconds_until(self, moment: datetime) -> float:
        return (moment - self.now()).total_seconds() / self.speed


class RejectionLimiter:
    """The engine's commit filter: a flood of bad `schedule/set` must not flood the log,
    the outbox and the caregiver's phone, nor keep the button waiting on fsyncs.

    Per rejection reason (from MQTT only): up to REJECTIONS_BURST `schedule.rejected`
    events at once, then one per REJECTION_EVERY; the next one logged carries
    `suppressed`, how many were refused without an event. Its caregiver alert goes
    at most once per REJECTION_ALERT_EVERY. Local applies are never limited.
    """

    def __init__(self) -> None:
        self.now: datetime | None = None
        self._tokens: dict[str, tuple[float, datetime]] = {}
        self._alerted: dict[str, datetime] = {}
        self.suppressed: dict[str, int] = {}

    def __call__(self, outcome: Outcome) -> Outcome:
        rejected = next((d for d in outcome.drafts if d.type == EventType.SCHEDULE_REJECTED
                         and d.data.get("source") == ScheduleSource.MQTT), None)
        if rejected is None or self.now is None:
            return outcome
        reason, now = str(rejected.data.get("reason")), self.now
        alerts = [d for d in outcome.drafts if d.type == EventType.ALERT_RAISED and rejected.event_id
                  and rejected.event_id in d.data.get("events", [])]
        tokens, since = self._tokens.get(reason, (float(REJECTIONS_BURST), now))
        tokens = min(float(REJECTIONS_BURST), tokens + max((now - since) / REJECTION_EVERY, 0.0))
        if tokens < 1.0:
            self._tokens[reason] = (tokens, now)
            self.suppressed[reason] = self.suppressed.get(reason, 0) + 1
            outcome.drafts = [d for d in outcome.drafts if d is not rejected and all(d is not a for a in alerts)]
            return outcome
        self._tokens[reason] = (tokens - 1.0, now)
        if self.suppressed.get(reason):
            rejected.data["suppressed"] = self.suppressed.pop(reason)
        last = self._alerted.get(reason)
        if last is not None and timedelta(0) <= now - last < REJECTION_ALERT_EVERY:
            outcome.drafts = [d for d in outcome.drafts if all(d is not a for a in alerts)]
        elif alerts:
            self._alerted[reason] = now
        return outcome


@dataclass
class Screen:
    """The daemon's own display state: a mode, and what the last input led to."""

    mode: ScreenMode = ScreenMode.IDLE
    feedback: Feedback = Feedback.NONE
    detail: dict | None = None
    until: datetime | None = None
    choice: int = 0
    choices: tuple = ()
    mood: int | None = None
    checkin_about: tuple = ()


class Daemon:
    """Feeds inputs and time to the engine and shows the outcome on the hardware.

        >>> import json
        >>> from importlib.resources import files
        >>> from dispenser.hardware import build_sim_hardware
        >>> from dispenser.store import Store
        >>> contract_example = json.loads(files("dispenser").joinpath("demo", "schedule.json").read_text())
        >>> engine = Engine(Store.open(":memory:", "disp-0001"), 8)
        >>> hardware = build_sim_hardware(lambda item: None, sleep=lambda s: None)   # the simulated device
        >>> now = datetime(2026, 11, 24, 12, 45, tzinfo=UTC)     # 07:45 in New York
        >>> engine.apply_schedule(now, contract_example, stock={"sertraline": 10}).feedback
        <Feedback.APPLIED: 'applied'>
        >>> daemon = Daemon(engine, hardware, timezone_name="America/New_York")
        >>> daemon.start(now); daemon.handle(Press(), now)    # what the loop does
        >>> hardware.lcd.emulator.lines()
        ['Take your pill  ', 'Press when taken']
        >>> hardware.close()
    """

    def __init__(self, engine: Engine, hardware: Hardware, *, timezone_name: str = "UTC", checkin: bool = False,
                 sleep: Callable[[float], None] = time.sleep, notifier: Notifier | None = None,
                 sync: Sync | None = None, clock_display: bool = True, clock_trust: ClockTrust | None = None):
        self.engine = engine
        self.hardware = hardware
        self.default_tz = ZoneInfo(timezone_name)
        self.checkin_enabled = checkin
        self.sleep = sleep
        self.notifier = notifier
        self.sync = sync
        self.clock_display = clock_display  # headless scenarios need no minute-by-minute redraw
        self.clock_trust = clock_trust  # a ClockTrust (clocktrust.py), or None: the clock is believed
        self._clock_alerted = False
        self.inputs: queue.SimpleQueue = queue.SimpleQueue()
        self.screen_state = Screen()
        self._signal_at: datetime | None = None
        self._signal_level = -1
        self._faulty: set[str] = set()
        self._shown: list[str] = []
        self._input_faults: dict[str, datetime] = {}
        self.limiter = RejectionLimiter()
        engine.commit_filter = self.limiter
        engine.mover = self._move
        engine.listeners.append(self._on_events)

    # -- the queue ------------------------------------------------------------------------

    def put(self, item: Input | str | tuple) -> None:
        """Thread-safe: the only thing callbacks from other threads may do. An `Input`
        (dispenser/inputs.py); the older strings and tuples are turned into one here."""
        try:
            self.inputs.put(as_input(item))
        except UnknownInput as error:
            log.warning("%s", error)  # a caller's bug: said, never the end of the loop

    # -- the loop -------------------------------------------------------------------------

    def run(self, clock: Clock | None = None, stop_after: Callable[[], bool] = lambda: False) -> None:
        """The daemon's life: start, then wait for inputs or the next due moment, until "stop"."""
        clock = clock or SystemClock()
        self.start(clock.now())
        if self.notifier:
            self.notifier.ready()
        self._check_chain()
        while not stop_after():
            now = clock.now()
            self.on_time(now)
            timeout = self._timeout(clock, now)
            try:
                item = self.inputs.get(timeout=timeout)
            except queue.Empty:
                continue
            if isinstance(item, Stop):
                break
            self.handle(item, clock.now())
        self.stop(clock.now())

    chain_check = None

    def _check_chain(self) -> None:
        """After READY: the whole file (once a boot) and the whole hash chain on a thread of
        their own (chaincheck.py); the start read only what it folds."""
        store = self.engine.store
        if store.name != ":memory:":
            from .chaincheck import ChainCheck
            self.chain_check = ChainCheck(store.name, store.device_id, self.put, whole_file=True)
            self.chain_check.start()

    def _timeout(self, clock: Clock, now: datetime) -> float:
        if self.notifier:
            self.notifier.watchdog()
        wakeup = self.wakeup_at(now)
        seconds = clock.seconds_until(wakeup) if wakeup else 60.0
        watchdog = self.notifier.watchdog_interval() if self.notifier else None
        return max(0.0, min(seconds, watchdog or 60.0, 60.0))

    # -- what the loop does -------------------------------------------------------------------

    def start(self, now: datetime) -> None:
        self._last_now = now
        self._started = self._logging(lambda: self.engine.start(now))
        lid = getattr(self.hardware, "lid", None)
        if lid is not None:  # the lid as it is now: shut while the device was off is logged shut
            self._logging(lambda: self.engine.lid(now, opened=not lid.is_active))
        self.on_time(now)

    _started = False
    storage_error: str | None = None

    def _logging(self, action: Callable[[], object]) -> bool:
        """Run an engine step; a log that cannot be written (disk full) stops nothing else.

        The engine never moves a servo for what it could not log, so the step simply did
        not happen: the screen says so, the system log gets the reason, and the next
        input or tick tries again.
        """
        written = self.engine.last_seq
        try:
            action()
        except StoreError as error:
            if self.storage_error is None:
                log.error("the log cannot be written: %s", error)
            self.storage_error = str(error)
            return False
        if self.engine.last_seq != written:
            self.storage_error = None  # the log took a write again
        return True

    def stop(self, now: datetime) -> None:
        self._logging(lambda: self.engine.stop(now))
        self._safely("led", self.hardware.led.off, now)
        self._safely("buzzer", self.hardware.buzzer.off, now)

    def wakeup_at(self, now: datetime) -> datetime:
        """The next moment something is due; at the latest the next minute, for the clock shown."""
        next_minute = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
        moments = [next_minute if self.clock_display else now + timedelta(days=1)]
        for moment in (self.engine.next_wakeup(now), self.screen_state.until, self._signal_at, self._state_stale_at):
            if moment is not None and moment > now:
                moments.append(moment)
        return min(moments)

    def on_time(self, now: datetime) -> None:
        """Time passed: let the rules tick, end timed-out screens, signal, and redraw."""
        if not self._started:
            self._started = self._logging(lambda: self.engine.start(now))
        self._logging(lambda: self.engine.tick(now))
        self._watch_clock(now)
        state = self.screen_state
        if state.until is not None and now >= state.until:
            if state.mode in (ScreenMode.CHECKIN_MOOD, ScreenMode.CHECKIN_SIDE) and state.mood is not None:
                self._save_checkin(now, state.mood, None)  # a mood given, the side effects skipped
            self.screen_state = Screen()
        self._signal(now)
        self.render(now)
        self._publish(now)

    def _watch_clock(self, now: datetime) -> None:
        """Doses held for long by an untrusted clock (no NTP, no RTC): alert once per episode."""
        step = self.clock_trust.take_step_report() if self.clock_trust is not None else None
        if step:  # a step after the first synchronisation, not believed: the clinic hears once
            log.warning("clock: %s", step)
            self._logging(lambda: self.engine.fault(now, "clock", step))
        if self.clock_trust is None or self.engine.view.clock_trusted:
            self._clock_alerted = False
            return
        waited = self.clock_trust.untrusted_for()
        if not self._clock_alerted and waited >= CLOCK_ALERT_AFTER_S:
            log.warning("the clock has not been trusted for %d minutes: doses are held", waited // 60)
            self._clock_alerted = self._logging(lambda: self.engine.clock_unsynchronized(now, int(waited // 60)))

    def advance(self, to: datetime) -> None:
        """Tests and scenarios: live through every due moment up to `to`, then arrive there."""
        now = self._last_now if self._last_now is not None else to
        while True:
            wakeup = self.wakeup_at(now)
            if wakeup > to:
                break
            now = wakeup
            self.on_time(now)
        self.on_time(to)
        self._last_now = to

    _last_now: datetime | None = None

    def handle(self, item: Input | str | tuple, now: datetime) -> None:
        """One input (dispenser/inputs.py): Press(), Hold(medication), ScheduleMessage(payload), ..."""
        self._last_now = now
        self.limiter.now = now
        try:
            item = as_input(item)
        except UnknownInput as error:
            log.warning("%s", error)
            return
        logged = self._logging(lambda: self._handle_safely(item, now))
        if self._uncounted:
            self._logging(lambda: self._stray_pills(now))
        if isinstance(item, ScheduleMessage) and hasattr(item.payload, "done"):
            try:  # its answer is in the log now: the broker may forget it (contract 4, v2)
                item.payload.done(logged=logged)
            except Exception:  # noqa: BLE001
                log.exception("acknowledging a schedule/set failed")
        self._signal(now)
        self.render(now)
        self._publish(now)

    def _handle_safely(self, item: Input, now: datetime) -> None:
        """Any exception from one input is a fault to log, never the end of the daemon."""
        try:
            self._handle(item, now)
        except StoreError:
            raise  # the log cannot be written: _logging says so, and nothing is acknowledged
        except Exception as error:  # noqa: BLE001
            kind = "schedule" if isinstance(item, ScheduleMessage) else type(item).__name__.lower()
            log.exception("handling the input %s failed", kind)  # the engine rebuilt its rules from the log
            last = self._input_faults.get(kind)
            if last is None or not timedelta(0) <= now - last < INPUT_FAULT_EVERY:
                self._input_faults[kind] = now
                message = " ".join(f"{kind}: {type(error).__name__}: {error}".split())[:300]
                self.engine.fault(now, "daemon", message)

    def _handle(self, item: Input, now: datetime) -> None:
        """Every kind of input has its case: `assert_never` makes mypy refuse a forgotten one."""
        mode = self.screen_state.mode
        match item:
            case Press():
                self._press(now) if mode not in (ScreenMode.MENU, ScreenMode.CHECKIN_MOOD, ScreenMode.CHECKIN_SIDE) else self._cycle(now)
            case Hold(medication=medication):
                if mode == ScreenMode.MENU:
                    self._show(self.engine.hold(now, self.screen_state.choices[self.screen_state.choice]), now)
                elif mode == ScreenMode.CHECKIN_MOOD:
                    self._ask_side_effects(now)
                elif mode == ScreenMode.CHECKIN_SIDE:
                    self._save_checkin(now, self.screen_state.mood, SIDE_EFFECTS[self.screen_state.choice])
                else:
                    self._show(self.engine.hold(now, medication), now)
            case ScheduleMessage(payload=inbound):
                if hasattr(inbound, "done"):  # sync.Inbound: bytes, or only the size when too large
                    self.engine.apply_schedule_payload(now, inbound.payload, ScheduleSource.MQTT, size=inbound.size)
                else:
                    self.engine.apply_schedule_payload(now, inbound, ScheduleSource.MQTT)
            case Refill(medication=medication, count=count):
                self.engine.refill(now, medication, count)
            case LidOpened():
                self.engine.lid(now, opened=True)
            case LidClosed():
                self.engine.lid(now, opened=False)
            case PillSeen():
                self._stray_pills(now)
            case ChainCheckFailed(seq=seq, reason=reason):  # the background check (chaincheck.py): the clinic must know
                problem = reason if seq is None else f"hash chain broken at seq {seq}: {reason}"  # None: the file
                self.engine.fault(now, "log", problem[:300])
            case ConnectionChanged() | Tick():
                pass  # the sync's state changed, or only time passed: the redraw below shows it
            case Stop():
                pass  # the loop ends on it; handled here it changes nothing
            case _:
                assert_never(item)

    # -- the button -----------------------------------------------------------------------------

    def _press(self, now: datetime) -> None:
        outcome = self.engine.press(now)
        self._show(outcome, now)
        if outcome.feedback == Feedback.CONFIRMED and self.checkin_enabled:
            self.screen_state = Screen(mode=ScreenMode.CHECKIN_MOOD, choice=2, until=now + CHECKIN_SILENCE,
                                       checkin_about=tuple(outcome.detail.get("medications", [])))

    def _cycle(self, now: datetime) -> None:
        state = self.screen_state
        count = {ScreenMode.MENU: len(state.choices), ScreenMode.CHECKIN_MOOD: len(MOODS),
                 ScreenMode.CHECKIN_SIDE: len(SIDE_EFFECTS)}
        state.choice = (state.choice + 1) % count[state.mode]
        state.until = now + (MENU_SILENCE if state.mode == ScreenMode.MENU else CHECKIN_SILENCE)

    def _ask_side_effects(self, now: datetime) -> None:
        state = self.screen_state
        self.screen_state = Screen(mode=ScreenMode.CHECKIN_SIDE, choice=0, until=now + CHECKIN_SILENCE,
                                   mood=state.choice + 1, checkin_about=state.checkin_about)

    def _save_checkin(self, now: datetime, mood: int | None, side_effects: str | None) -> None:
        about = list(self.screen_state.checkin_about)
        self.engine.checkin(now, mood, side_effects, about)
        self.screen_state = Screen(mode=ScreenMode.FEEDBACK, feedback=Feedback.CHECKIN_SAVED, until=now + FEEDBACK_FOR)

    def _show(self, outcome: Outcome, now: datetime) -> None:
        if outcome.feedback == Feedback.MENU:
            names = tuple(outcome.detail["medications"])
            self.screen_state = Screen(mode=ScreenMode.MENU, choices=names, until=now + MENU_SILENCE)
        elif outcome.feedback:
            self.screen_state = Screen(mode=ScreenMode.FEEDBACK, feedback=screen_feedback(outcome), detail=outcome.detail,
                                       until=now + FEEDBACK_FOR)

    # -- carrying out ---------------------------------------------------------------------------

    def _move(self, compartment: int, quantity: int) -> None:
        """The engine's mover: the intent is already logged when this runs.

        With a drop sensor, the release counts its pills: those seen during its cycles,
        and up to `drop_timeout_s` after the last one. Fewer than it gave raises
        `PillNotSeen`, which the engine hands to the rules (jam or empty). Without one,
        a release is as it always was: the servo's word.
        """
        drop = getattr(self.hardware, "drop", None)
        before = drop.count if drop is not None else 0
        if drop is not None:
            self._uncounted += max(0, before - self._pills_counted)  # fell before this release began
        self.hardware.compartments.release(compartment, quantity, sleep=self.sleep)
        if drop is None:
            return
        seen = drop.count - before
        if seen < quantity and self.drop_waits:
            seen = drop.wait_for(before + quantity, getattr(self.hardware, "drop_timeout_s", 1.0)) - before
        self._pills_counted = drop.count
        if seen < quantity:
            raise PillNotSeen(compartment, quantity, seen)
        self._uncounted += seen - quantity  # more fell than were given: told after this input

    drop_waits = True  # a headless scenario's chute drops at once: no real time to wait for a pill
    _pills_counted = 0  # the drop sensor's count that releases and reports have accounted for
    _uncounted = 0  # pills seen beyond what releases gave, not yet told

    def _stray_pills(self, now: datetime) -> None:
        """Pills the releases did not account for (one falling late from a jam, two for one
        release, a hand in the chute): told to the rules, which log them for the clinic."""
        drop = getattr(self.hardware, "drop", None)
        if drop is None:
            return
        stray = self._uncounted + max(0, drop.count - self._pills_counted)
        self._uncounted, self._pills_counted = 0, max(self._pills_counted, drop.count)
        if stray:
            log.warning("the drop sensor saw %d pill(s) that no release gave", stray)
            self.engine.pill_outside_release(now, stray)

    def _on_events(self, events: list[dict]) -> None:
        self._state_dirty = True
        for event in events:
            if event["type"] == EventType.DOSE_MISSED:
                scheduled = datetime.fromisoformat(event["data"]["scheduled_at"].replace("Z", "+00:00"))
                self.screen_state = Screen(mode=ScreenMode.FEEDBACK, feedback=Feedback.MISSED,
                                           detail={"scheduled_at": scheduled},
                                           until=datetime.fromisoformat(event["at"].replace("Z", "+00:00"))
                                           + MISSED_FOR)
        if self.sync is not None:
            self.sync.notify()

    _state_dirty = True
    _state_stale_at: datetime | None = None   # when the published `alerts_open` falls; published again then
    _broker_connected: bool | None = None

    def _publish(self, now: datetime) -> None:
        """Keep the clinic's retained `state` and the log's note of the broker link current."""
        if self.sync is None:
            return
        unusable = getattr(self.sync, "unusable", None)
        if unusable and "mqtt" not in self._faulty:  # bad TLS files: dispense offline, say why once
            self._faulty.add("mqtt")
            if not self._logging(lambda: self.engine.fault(now, "mqtt", unusable)):
                self._faulty.discard("mqtt")
        connected = self.sync.connected
        if connected != self._broker_connected:
            self._broker_connected = connected
            note = f"connected since {now:%Y-%m-%dT%H:%M:%SZ}" if connected else \
                f"disconnected ({self.sync.last_error or 'no connection yet'})"
            try:
                self.engine.store.meta_set("broker", note)
            except StoreError:
                pass  # only a note for `dispenser status`; the disk-full screen says the rest
        if self._state_stale_at is not None and now >= self._state_stale_at:
            self._state_dirty = True   # an alert's day ended: `alerts_open` falls (homeassistant.alerts_open)
        if self._state_dirty:
            self._state_dirty = False
            state = device_state(self.engine, now)
            until = state.get("alerts_open_until")
            self._state_stale_at = datetime.fromisoformat(until.replace("Z", "+00:00")) if until else None
            self.sync.publish_state(state)

    def _signal(self, now: datetime) -> None:
        """Buzzer and LED: a pattern that repeats every 5 minutes and grows while a dose waits.

        Due and waiting doses come from the engine's read model, computed once per input.
        """
        model = self.engine.view
        due, waiting = model.due, model.awaiting
        if not due:
            self._signal_at, self._signal_level = None, -1
            self._safely("buzzer", self.hardware.buzzer.off, now)
            self._safely("led", self.hardware.led.on if waiting else self.hardware.led.off, now)
            return
        level = max(dose.reminders for dose in due)
        if self._signal_at is not None and now < self._signal_at and level == self._signal_level:
            return
        self._signal_at, self._signal_level = now + SIGNAL_EVERY, level
        if level == 0:
            self._safely("led", self.hardware.led.on, now)  # the window is open: a quiet light
            return
        self._safely("led", lambda: self.hardware.led.pattern(500, 500, times=None), now)
        self._safely("buzzer", lambda: self.hardware.buzzer.pattern(150, 150, times=min(level, MAX_BEEPS)), now)

    # -- the screen -------------------------------------------------------------------------------

    def timezone(self) -> tzinfo:
        """The schedule's time zone, or the config's: safe from any thread."""
        return self.engine.view.timezone or self.default_tz

    def view(self, now: datetime) -> View:
        """What the screen shows at `now`, from the engine's read model (never the rules' state)."""
        model = self.engine.view
        tz = model.timezone or self.default_tz
        upcoming = model.next_dose
        low = sorted({item.compartment for item in model.stock if item.low or item.empty})
        state = self.screen_state
        detail = {key: value.astimezone(tz) if isinstance(value, datetime) else value
                  for key, value in (state.detail or {}).items()}
        return View(
            now=now.astimezone(tz), mode=ScreenMode.STORAGE_ERROR if self.storage_error else state.mode,
            feedback=state.feedback, detail=detail,
            due=[screen_name(model, dose.medication_id) for dose in model.due],
            waiting=[screen_name(model, dose.medication_id) for dose in model.awaiting],
            next_name=screen_name(model, upcoming.medication_id) if upcoming else None,
            next_at=upcoming.scheduled_at.astimezone(tz) if upcoming else None,
            low=low, offline=self.sync is not None and not self.sync.connected,
            clock_unknown=not model.clock_trusted,
            choice=state.choice, choices=[screen_name(model, c) for c in state.choices],
        )

    def render(self, now: datetime) -> None:
        lcd = self.hardware.lcd
        lines = screen(self.view(now), rows=getattr(lcd, "rows", 2), cols=getattr(lcd, "cols", 16))
        self._shown = lines
        self._safely("lcd", lambda: lcd.show(lines), now)

    def _safely(self, component: str, action: Callable[[], object], now: datetime) -> None:
        """A failing part must not stop the device: log `device.fault` once, keep going."""
        try:
            action()
        except Exception as error:  # noqa: BLE001 - any driver error is a fault to report
            if component not in self._faulty:
                self._faulty.add(component)
                message = f"{type(error).__name__}: {error}"
                log.warning("%s failed: %s", component, message)
                self._logging(lambda: self.engine.fault(now, component, message))
            return
        self._faulty.discard(component)


def device_state(engine: Engine, now: datetime) -> dict:
    """The retained `state` snapshot for the clinic: next dose, stock, 7-day adherence, backlog."""
    from .report import adherence, window_events
    from .timeutil import format_utc
    model = engine.view
    upcoming = model.next_dose
    week = now - timedelta(days=7)
    events = window_events(engine.store, week)  # the week's part of the log, whatever its age
    reports = adherence(events, week, now, model.timezone or UTC)
    return {
        "device_id": engine.store.device_id,
        "at": format_utc(now),
        "schedule_version": model.schedule_version,
        "next_dose": None if upcoming is None else {
            "medication_id": upcoming.medication_id, "scheduled_at": format_utc(upcoming.scheduled_at),
            "quantity": upcoming.quantity},
        "stock": {item.medication_id: {"compartment": item.compartment, "count": item.count}
                  for item in model.stock},
        "adherence_7d": {r.medication_id: {"on_time": r.on_time, "late": r.late, "missed": r.missed,
                                           "missed_unavailable": r.missed_unavailable,
                                           "confirmed_late": r.confirmed_late,
                                           "unconfirmed": r.unconfirmed, "days_all_taken": r.days_all_taken}
                         for r in reports.values()},
        "backlog": engine.store.backlog(),
        "clock_trusted": model.clock_trusted,  # False: doses are held until NTP sets the clock
        **state_extras(engine, now, events, reports),  # (v2) for Home Assistant (docs/MQTT.md)
    }


def state_extras(engine: Engine, now: datetime, events: list[dict], reports: dict) -> dict:
    """By compartment (no medication ids): count, display name, days of stock; the last
    event; alerts raised in the last day (homeassistant.alerts_open) and when that count next
    falls; the week's share of scheduled doses taken."""
    from .homeassistant import alerts_open
    from .report import OUTCOMES, TAKEN
    from .stock_days import days_of_stock
    from .timeutil import format_utc
    model = engine.view
    pace = _daily_use(engine, model.schedule_version, now)
    due = sum(getattr(r, name) for r in reports.values() for name in OUTCOMES)
    taken = sum(getattr(r, name) for r in reports.values() for name in TAKEN)
    open_count, falls_at = alerts_open(events, now)
    return {
        "compartments": {str(item.compartment): {
            "count": item.count, "display": item.display,
            "days_of_stock": None if item.as_needed else days_of_stock(item.count, pace.get(item.medication_id))}
            for item in model.stock},
        "last_event": None if model.last_event is None else {
            "type": model.last_event,
            "at": None if model.last_event_at is None else format_utc(model.last_event_at)},
        "alerts_open": open_count,
        "alerts_open_until": None if falls_at is None else format_utc(falls_at),
        "adherence_7d_percent": round(100 * taken / due, 1) if due else None,
    }


_PARSED: dict[str, object] = {}  # the document's text -> its Schedule: parsed once, not per publish


def _daily_use(engine: Engine, version: int | None, now: datetime) -> dict[str, float]:
    """The schedule in force's tablets per day, from its stored document (none: no pace)."""
    import json
    from .schedule import Schedule, ScheduleError, parse_schedule
    from .stock_days import daily_use
    document = engine.store.schedule_document(version) if version is not None else None
    if document is None:
        return {}
    zone = getattr(engine.view.timezone, "key", None)
    key = f"{zone}|{json.dumps(document, sort_keys=True)}"
    schedule = _PARSED.get(key)
    if not isinstance(schedule, Schedule):
        try:
            schedule = parse_schedule(document, default_timezone=zone, applied=True)
        except ScheduleError:
            return {}
        if len(_PARSED) >= 8:
            _PARSED.clear()
        _PARSED[key] = schedule
    return daily_use(schedule, now)
