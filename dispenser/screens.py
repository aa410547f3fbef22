"""What the LCD says. Pure: a `View` of the moment in, text lines out.

Short words a tired person reads at a glance; the second line always says what the
button does now. Written for 16 columns; a 20x4 display gets the clock and status on
its extra rows.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from .vocabulary import Feedback, HoldReason, PrnRefusal, ScreenMode, SideEffects, Unavailable

MOODS = ["1 very bad", "2 bad", "3 okay", "4 good", "5 very good"]
SIDE_EFFECTS = list(SideEffects)


@dataclass
class View:
    """Everything a screen may show, gathered by the daemon at one moment (local times)."""

    now: datetime
    mode: ScreenMode = ScreenMode.IDLE
    feedback: Feedback = Feedback.NONE  # the last outcome's feedback while it is shown
    detail: dict = field(default_factory=dict)
    due: list[str] = field(default_factory=list)        # names of doses a press would release
    waiting: list[str] = field(default_factory=list)    # released, waiting for confirmation
    next_name: str | None = None
    next_at: datetime | None = None
    low: list[int] = field(default_factory=list)        # compartments running low or empty
    offline: bool = False
    clock_unknown: bool = False  # the clock is not trusted yet: doses are held (clocktrust.py)
    choice: int = 0
    choices: list[str] = field(default_factory=list)


def hhmm(moment: datetime | None) -> str:
    return moment.strftime("%H:%M") if moment else "--:--"


def screen(view: View, rows: int = 2) -> list[str]:
    """The lines to show, most important state first."""
    lines = _main(view)
    if rows >= 4:
        status = "offline" if view.offline else ""
        when = "Time not set yet" if view.clock_unknown else f"{view.now:%a %d %b %H:%M}"
        lines += [when, status or _refill_line(view)]
    return lines


def _main(view: View) -> list[str]:
    if view.mode == ScreenMode.STORAGE_ERROR:  # nothing can be logged, so nothing is given out
        return ["Storage problem", "Call your clinic"]
    if view.mode == ScreenMode.CHECKIN_MOOD:
        return ["How do you feel?", f"< {MOODS[view.choice]} >"]
    if view.mode == ScreenMode.CHECKIN_SIDE:
        return ["Side effects?", f"< {SIDE_EFFECTS[view.choice]} >"]
    if view.mode == ScreenMode.MENU:
        return ["As needed: hold", f"> {view.choices[view.choice]}"]
    if view.mode == ScreenMode.FEEDBACK:
        lines = _feedback(view)
        if lines:
            return lines
    if view.waiting:
        return ["Take your pill" if len(view.waiting) == 1 else "Take your pills", "Press when taken"]
    if view.due:
        what = view.due[0] if len(view.due) == 1 else f"{len(view.due)} medicines"
        return [f"Due: {what}", "Press to release"]
    if view.clock_unknown:  # its clock may be wrong, so the device shows no time and gives nothing
        return ["Setting clock...", "Doses on hold"]
    top = f"{view.now:%H:%M}" + (" offline" if view.offline else "")
    if view.low:
        return [top, _refill_line(view)]
    if view.next_at is not None:
        return [top, f"Next {hhmm(view.next_at)} {view.next_name or ''}".rstrip()]
    return [top, "No doses planned"]


def _refill_line(view: View) -> str:
    return f"Refill box {','.join(str(c) for c in view.low)}" if view.low else ""


def _feedback(view: View) -> list[str] | None:
    detail = view.detail
    kind = view.feedback
    if kind == Feedback.RELEASED:
        count = len(detail.get("medications", []))
        return ["Take your pills" if count > 1 else "Take your pill", "Press when taken"]
    if kind == Feedback.CONFIRMED:
        return ["Thank you!", "Dose recorded"]
    if detail.get("reason") == Unavailable.CLOCK_BEHIND:  # the clock was set back: wait until it passes the log
        return ["Clock was reset", "Please wait"]
    if detail.get("reason") == Unavailable.CLOCK_UNSYNCHRONIZED:
        return ["Setting clock...", "Please wait"]
    if kind == Feedback.TOO_EARLY:
        return ["Too early", f"Opens at {hhmm(detail.get('opens_at'))}"]
    if kind == Feedback.NOTHING_DUE:
        return ["Nothing due now", f"Next {hhmm(view.next_at)}" if view.next_at else ""]
    if kind == Feedback.EMPTY:
        return ["Box is empty", "Ask for a refill"]
    if detail.get("reason") == HoldReason.UNLOADED:  # the schedule changed what the box holds
        return ["Box needs refill", "Clinic informed"]
    if kind == Feedback.HELD:  # section 6: too soon after the last dose, or kept apart from another
        allowed = detail.get("allowed_at")
        return ["Dose on hold", f"Wait until {hhmm(allowed)}" if allowed else "Clinic informed"]
    if kind == Feedback.DENIED:
        if detail.get("reason") == PrnRefusal.EMPTY:
            return ["As-needed box", "is empty"]
        return ["As-needed locked", f"until {hhmm(detail.get('allowed_at'))}"]
    if kind == Feedback.NO_AS_NEEDED:
        return ["No as-needed", "medicine set"]
    if kind == Feedback.MISSED:
        return [f"Missed: {hhmm(detail.get('scheduled_at'))}", "Clinic informed"]
    if kind == Feedback.RELEASE_FAILED:
        return ["Dispenser fault", "Help is informed"]
    if kind == Feedback.CHECKIN_SAVED:
        return ["Thank you!", "Answer saved"]
    return None
