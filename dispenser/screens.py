"""What the LCD says. Pure: a `View` of the moment in, text lines out.

Short words a tired person reads at a glance; the second line says what the button does
now, or that nothing needs pressing. Every line is written for the glass it goes to,
16 or 20 columns: times, counts and instructions always fit whole, and a medication's
name is its `display` or its `name` shortened by the rule in `lcd_fit` (docs/SCHEDULE.md),
so the display never cuts what a person must read. A 4-row display adds the date and
time and a status row; a one-row display (16x1) shows the one line a person must read.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from typing import TYPE_CHECKING

from .lcd_fit import first_fitting, fit_name, labelled
from .vocabulary import EventType, Feedback, HoldReason, PrnRefusal, ScreenMode, SideEffects, Unavailable

if TYPE_CHECKING:
    from .readmodel import ReadModel
    from .rules import Outcome

from .vocabulary import Feedback, HoldReason, PrnRefusal, ScreenMode, SideEffects, Unavailable

MOODS = ["1 very bad", "2 bad", "3 okay", "4 good", "5 very good"]
SIDE_EFFECTS = list(SideEffects)

# Every mode and feedback the daemon can put on the screen (tests render each of them).
MODES = tuple(ScreenMode)
FEEDBACKS = (Feedback.RELEASED, Feedback.PRN_RELEASED, Feedback.CONFIRMED, Feedback.TOO_EARLY, Feedback.NOTHING_DUE,
             Feedback.EMPTY, Feedback.HELD, Feedback.DENIED, Feedback.NO_AS_NEEDED, Feedback.MISSED,
             Feedback.RELEASE_FAILED, Feedback.CHECKIN_SAVED)


@dataclass
class View:
    """Everything a screen may show, gathered by the daemon at one moment (local times).

    Names are what the screen should call a medication: its `display`, else its `name`.
    """

    now: datetime
    mode: ScreenMode = ScreenMode.IDLE  # one of MODES
    feedback: Feedback = Feedback.NONE  # the last outcome's feedback while it is shown (FEEDBACKS)
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


def when(moment: datetime | None, now: datetime) -> str:
    """A moment as short as it can be read without doubt: "20:00" within a day of now,
    "Wed 08:00" within a week, else the date "03 Jan"."""
    if moment is None:
        return "--:--"
    apart = abs(moment - now)
    if apart < timedelta(hours=24):
        return f"{moment:%H:%M}"
    if apart < timedelta(days=7):
        return f"{moment:%a %H:%M}"
    return f"{moment:%d %b}"


def screen(view: View, rows: int = 2, cols: int = 16) -> list[str]:
    """The lines to show, most important state first; none longer than `cols`."""
    lines = _main(view, cols)
    if rows == 1:
        return [_one_row(view, lines, cols)]
    if rows >= 4:
        if view.mode == ScreenMode.MENU:
            return lines + ["Press: next one", "Hold: ask for it"]
        when_line = "Time not set yet" if view.clock_unknown else f"{view.now:%a %d %b %H:%M}"
        lines = lines + [when_line, "offline" if view.offline else _refill_line(view, cols)]
    return lines


# The second line's openings that tell a person what to do now (press, wait, ask): on a
# one-row display such a line is the one shown, since the first only names the situation.
_INSTRUCTIONS = ("Press ", "Wait until ", "Until ", "Opens ", "Ask for ", "Call your ", "Doses on hold",
                 "Please wait")

# Two lines that are one sentence, said on one row.
_ONE_ROW_SENTENCES = {"As-needed box": "As-needed empty", "No as-needed": "No as-needed med"}


def _one_row(view: View, lines: list[str], cols: int) -> str:
    """A 16x1 display's one line: what to do now when the screen asks something of the
    person, else what happened (or the time and the next dose); a check-in's question and
    answer together. docs/HARDWARE.md has the table."""
    if view.mode == ScreenMode.CHECKIN_MOOD:
        mood = MOODS[view.choice]
        return first_fitting([f"Mood: {mood}", f"Mood {mood}", f"< {mood} >"], cols)
    if view.mode == ScreenMode.CHECKIN_SIDE:
        side = SIDE_EFFECTS[view.choice]
        return first_fitting([f"Side effects: {side}", f"Side effects {side}", f"Side eff: {side}"], cols)
    if lines[0] in (f"{view.now:%H:%M}", f"{view.now:%H:%M} offline"):  # idle, nothing planned
        return lines[1]  # "No doses planned", or the refill the boxes need
    second = lines[1] if len(lines) > 1 else ""
    if second.startswith("until "):  # an as-needed dose locked until then: a wait, said as one
        second = first_fitting([f"Wait {second}", "U" + second[1:]], cols)
    if second.startswith(_INSTRUCTIONS):
        return second
    return _ONE_ROW_SENTENCES.get(lines[0], lines[0])


def _main(view: View, cols: int) -> list[str]:
    if view.mode == ScreenMode.STORAGE_ERROR:  # nothing can be logged, so nothing is given out
        return ["Storage problem", "Call your clinic"]
    if view.mode == ScreenMode.CHECKIN_MOOD:
        return ["How do you feel?", f"< {MOODS[view.choice]} >"]
    if view.mode == ScreenMode.CHECKIN_SIDE:
        return ["Side effects?", f"< {SIDE_EFFECTS[view.choice]} >"]
    if view.mode == ScreenMode.MENU:
        name = view.choices[view.choice] if view.choices else "?"
        return [labelled("> ", name, cols), first_fitting(["Press=next Hold=yes", "Hold to choose"], cols)]
    if view.mode == ScreenMode.FEEDBACK:
        lines = _feedback(view, cols)
        if lines:
            return lines
    if view.waiting:
        return ["Take your pill" if len(view.waiting) == 1 else "Take your pills", "Press when taken"]
    if view.due:
        if len(view.due) == 1:
            return [labelled("Due: ", view.due[0], cols), "Press to release"]
        return [f"{len(view.due)} medicines due", "Press to release"]
    if view.clock_unknown:  # its clock may be wrong, so the device shows no time and gives nothing
        return ["Setting clock...", "Doses on hold"]
    clock = f"{view.now:%H:%M}"
    if view.next_at is None:
        top = first_fitting([f"{clock} offline" if view.offline else clock, clock], cols)
        return [top, _refill_line(view, cols) or "No doses planned"]
    at = when(view.next_at, view.now)
    top = first_fitting([f"{clock} Next {at}", f"Next {at}"], cols)
    return [top, _refill_line(view, cols) or fit_name(view.next_name or "", cols)]


def _refill_line(view: View, cols: int) -> str:
    if not view.low:
        return ""
    boxes = ",".join(str(c) for c in view.low)
    return first_fitting([f"Refill box {boxes}", f"Refill {boxes}", f"Refill {len(view.low)} boxes"], cols)


def _feedback(view: View, cols: int) -> list[str] | None:
    detail = view.detail
    kind = view.feedback

    def at(key: str) -> str:
        return when(detail.get(key), view.now)

    if kind == Feedback.RELEASED:
        count = len(detail.get("medications", []))
        return ["Take your pills" if count > 1 else "Take your pill", "Press when taken"]
    if kind == Feedback.PRN_RELEASED:  # an as-needed dose is logged as given: no confirmation is asked
        return ["Take your pill", "No need to press"]
    if kind == Feedback.CONFIRMED:
        return ["Thank you!", "Dose recorded"]
    if detail.get("reason") == Unavailable.CLOCK_BEHIND:  # the clock was set back: wait until it passes the log
        return ["Clock was reset", "Please wait"]
    if detail.get("reason") == Unavailable.CLOCK_UNSYNCHRONIZED:
        return ["Setting clock...", "Please wait"]
    if kind == Feedback.TOO_EARLY:
        return ["Too early", first_fitting([f"Opens at {at('opens_at')}", f"Opens {at('opens_at')}"], cols)]
    if kind == Feedback.NOTHING_DUE:
        return ["Nothing due now", f"Next {when(view.next_at, view.now)}" if view.next_at else ""]
    if kind == Feedback.EMPTY:
        return ["Box is empty", "Ask for a refill"]
    if detail.get("reason") == HoldReason.UNLOADED:  # the schedule changed what the box holds
        return ["Box needs refill", "Clinic informed"]
    if kind == Feedback.HELD:  # section 6: too soon after the last dose, or kept apart from another
        if not detail.get("allowed_at"):
            return ["Dose on hold", "Clinic informed"]
        return ["Dose on hold", first_fitting([f"Wait until {at('allowed_at')}", f"Until {at('allowed_at')}"], cols)]
    if kind == Feedback.DENIED:
        if detail.get("reason") == PrnRefusal.EMPTY:
            return ["As-needed box", "is empty"]
        if not detail.get("allowed_at"):
            return ["As-needed locked", "Ask your clinic"]
        return ["As-needed locked", f"until {at('allowed_at')}"]
    if kind == Feedback.NO_AS_NEEDED:
        return ["No as-needed", "medicine set"]
    if kind == Feedback.MISSED:
        return [first_fitting([f"Missed: {at('scheduled_at')}", f"Missed {at('scheduled_at')}"], cols),
                "Clinic informed"]
    if kind == Feedback.RELEASE_FAILED:
        return ["Dispenser fault", "Help is informed"]
    if kind == Feedback.CHECKIN_SAVED:
        return ["Thank you!", "Answer saved"]
    return None


# -- from the daemon's world to the screen's ----------------------------------------------------

def screen_name(model: ReadModel, medication_id: str) -> str:
    """What the screen calls a medication: its `display` when the schedule gives one."""
    item = model.medication(medication_id)
    if item is None:
        return medication_id
    return item.display or item.name


def screen_feedback(outcome: Outcome) -> Feedback:
    """The feedback to show for an outcome: an as-needed release needs no confirming press,
    so it is not the scheduled dose's "Press when taken"."""
    if outcome.feedback == Feedback.RELEASED and any(d.type == EventType.PRN_RELEASED for d in outcome.drafts) \
            and not any(d.type == EventType.DOSE_RELEASED for d in outcome.drafts):
        return Feedback.PRN_RELEASED
    return outcome.feedback
