"""One word for each thing: the strings that several modules compare, as StrEnums.

A member *is* its string (`EventType.DOSE_TAKEN == "dose.taken"`, `json.dumps` and SQLite
write the bare value), so the log, the wire and the contract are unchanged; what changes
is that a misspelt word is a NameError at import or a mypy error, not a comparison that
is silently never true. Events read back from the log or a broker carry plain strings,
which compare equal to (and hash as) the members.

    >>> EventType.DOSE_TAKEN == "dose.taken", f"{Feedback.TOO_EARLY}"
    (True, 'too_early')
"""
from __future__ import annotations

from enum import StrEnum


class EventType(StrEnum):
    """The `type` of a logged event (CONTRACT section 3, and the ones the rules add)."""

    DEVICE_STARTED = "device.started"
    DEVICE_STOPPED = "device.stopped"
    DEVICE_FAULT = "device.fault"
    SCHEDULE_APPLIED = "schedule.applied"
    SCHEDULE_REJECTED = "schedule.rejected"
    DOSE_DUE = "dose.due"
    DOSE_REMINDER = "dose.reminder"
    DOSE_RELEASED = "dose.released"
    DOSE_TAKEN = "dose.taken"
    DOSE_UNCONFIRMED = "dose.unconfirmed"
    DOSE_MISSED = "dose.missed"
    DOSE_SKIPPED = "dose.skipped"
    DOSE_HELD = "dose.held"
    DOSE_RELEASE_FAILED = "dose.release_failed"
    DOSE_RELEASE_UNCERTAIN = "dose.release_uncertain"
    PRN_RELEASED = "prn.released"
    PRN_DENIED = "prn.denied"
    STOCK_LOW = "stock.low"
    STOCK_EMPTY = "stock.empty"
    STOCK_REFILLED = "stock.refilled"
    CHECKIN_RECORDED = "checkin.recorded"
    ALERT_RAISED = "alert.raised"
    CLOCK_SYNCHRONIZED = "clock.synchronized"
    CLOCK_UNSYNCHRONIZED = "clock.unsynchronized"
    CLOCK_BEHIND = "clock.behind"
    LID_OPENED = "lid.opened"
    LID_CLOSED = "lid.closed"
    PILL_UNEXPECTED = "pill.unexpected"


# The events that let pills out: a scheduled dose or an as-needed one.
RELEASE_TYPES = frozenset({EventType.DOSE_RELEASED, EventType.PRN_RELEASED})


class Feedback(StrEnum):
    """What one input led to, as the screen tells it (`Outcome.feedback`). NONE: nothing to show."""

    NONE = ""
    RELEASED = "released"
    CONFIRMED = "confirmed"
    TOO_EARLY = "too_early"
    NOTHING_DUE = "nothing_due"
    EMPTY = "empty"
    HELD = "held"
    DENIED = "denied"
    MENU = "menu"
    NO_AS_NEEDED = "no_as_needed"
    REFILLED = "refilled"
    APPLIED = "applied"
    REJECTED = "rejected"
    RELEASE_FAILED = "release_failed"
    # Shown by the daemon, not returned by the rules.
    MISSED = "missed"
    PRN_RELEASED = "prn_released"  # an as-needed release: nothing to confirm (screens.screen_feedback)
    CHECKIN_SAVED = "checkin_saved"


class DoseStatus(StrEnum):
    """Where a scheduled dose stands in the rules' state."""

    PENDING = "pending"
    RELEASED = "released"
    TAKEN = "taken"
    MISSED = "missed"
    SKIPPED = "skipped"
    FAILED = "failed"
    HELD = "held"


class ScreenMode(StrEnum):
    """What the LCD is doing: the daemon's screen state and the `View` it draws."""

    IDLE = "idle"
    FEEDBACK = "feedback"
    MENU = "menu"
    CHECKIN_MOOD = "checkin_mood"
    CHECKIN_SIDE = "checkin_side"
    STORAGE_ERROR = "storage_error"


class AlertKind(StrEnum):
    """The `kind` of an `alert.raised` event."""

    DOSE_HELD = "dose_held"
    DOSE_MISSED = "dose_missed"
    DOSES_MISSED_WHILE_UNAVAILABLE = "doses_missed_while_unavailable"
    DOSE_UNCONFIRMED = "dose_unconfirmed"
    DOSE_WITHDRAWN = "dose_withdrawn"
    PRN_DENIED_REPEATEDLY = "prn_denied_repeatedly"
    STOCK_LOW = "stock_low"
    STOCK_EMPTY = "stock_empty"
    SCHEDULE_APPLIED_LOCALLY = "schedule_applied_locally"
    SCHEDULE_REJECTED = "schedule_rejected"
    RELEASE_FAILED = "release_failed"
    RELEASE_UNCERTAIN = "release_uncertain"
    DEVICE_FAULT = "device_fault"
    CLOCK_UNSYNCHRONIZED = "clock_unsynchronized"
    SIDE_EFFECTS_REPORTED = "side_effects_reported"
    LOW_MOOD_REPORTED = "low_mood_reported"
    LID_OPENED = "lid_opened"
    PILL_UNEXPECTED = "pill_unexpected"


class Severity(StrEnum):
    """The `severity` of an alert."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class HoldReason(StrEnum):
    """Why section 6 holds a scheduled dose back (`dose.held`'s `reason`)."""

    ALREADY_GIVEN = "already_given"
    DAY_LIMIT = "day_limit"
    MIN_GAP = "min_gap"
    SEPARATION = "separation"
    UNLOADED = "unloaded"


class FailReason(StrEnum):
    """Why the drop sensor says a release failed (`dose.release_failed`'s `reason`; the
    servo's own failure has none): it saw no pill, with pills left (JAM) or none (EMPTY)."""

    JAM = "jam"
    EMPTY = "empty"


class LidDuring(StrEnum):
    """What explains a lid opening (`lid.opened`'s `during`); absent when nothing does."""

    RELEASE = "release"
    REFILL = "refill"


class PrnRefusal(StrEnum):
    """Why an as-needed dose is refused, besides a `HoldReason` (`prn.denied`'s `reason`)."""

    INTERVAL = "interval"
    MAX_PER_PERIOD = "max_per_period"
    EMPTY = "empty"


class Unavailable(StrEnum):
    """Why the device could not give a dose (`dose.missed`'s `while`), or why the time is unknown."""

    DEVICE_OFF = "device_off"
    CLOCK_UNSYNCHRONIZED = "clock_unsynchronized"
    CLOCK_BEHIND = "clock_behind"


class ScheduleSource(StrEnum):
    """Where a schedule came from: a person at the device, or the clinic over MQTT (signed)."""

    LOCAL = "local"
    MQTT = "mqtt"


class RejectReason(StrEnum):
    """Why a schedule was refused (`schedule.rejected`'s `reason`, CONTRACT section 4)."""

    TOO_LARGE = "too_large"
    INVALID_JSON = "invalid_json"
    INVALID_SCHEMA = "invalid_schema"
    UNSIGNED = "unsigned"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_KEY = "unknown_key"
    WRONG_DEVICE = "wrong_device"
    EXPIRED = "expired"
    FROM_THE_FUTURE = "from_the_future"
    STALE_VERSION = "stale_version"
    UNKNOWN_COMPARTMENT = "unknown_compartment"


class ReleaseOutcome(StrEnum):
    """How a release intent in the store ended (its `outcome` column)."""

    DONE = "done"
    FAILED = "failed"
    UNCERTAIN = "uncertain"


class AdherenceOutcome(StrEnum):
    """What became of one scheduled dose, as the adherence report counts it (its columns)."""

    ON_TIME = "on_time"
    LATE = "late"
    CONFIRMED_LATE = "confirmed_late"
    UNCONFIRMED = "unconfirmed"
    MISSED = "missed"
    SKIPPED = "skipped"
    FAILED = "failed"
    PENDING = "pending"  # not judged yet: never a column


class SideEffects(StrEnum):
    """The check-in's answer to "Side effects?"."""

    NONE = "none"
    MILD = "mild"
    STRONG = "strong"


class ClockTrustMode(StrEnum):
    """When the wall clock is believed (`[clock] trust`, clocktrust.py)."""

    SYNCHRONIZED = "synchronized"
    ALWAYS = "always"
