"""Every screen state, through the real charlcd library onto the emulated HD44780, read back
from its DDRAM at 16x2, 20x2 and 20x4: nothing a person must read is cut (times, counts,
names by the rule of docs/SCHEDULE.md, instructions). At 16x1, the one row a person must read."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from dispenser.hardware.lcd import sim_lcd
from dispenser.lcd_fit import fit_name
from dispenser.screens import FEEDBACKS, MODES, View, screen
from dispenser.vocabulary import Feedback
from support import NY

NOW = datetime(2026, 11, 24, 23, 58, tzinfo=NY)  # late: "tomorrow" times and widest hours
LONG = "Quetiapine fumarate extended-release 300 mg"   # no display: fitted by the rule
DISPLAY = "Quetiapine XR300"                              # a `display` of the full 16 characters
SIZES = [(16, 2), (20, 2), (20, 4)]


@dataclass
class State:
    """One screen state: the view, and what a person must be able to read on the glass."""

    view: View
    must: list[str] = field(default_factory=list)   # each whole, within one row
    names: list[str] = field(default_factory=list)  # names to be shown fitted to the full width


def at(**delta: float) -> datetime:
    return NOW + timedelta(**delta)


STATES: dict[str, State] = {
    "idle next dose": State(View(NOW, next_name=LONG, next_at=at(minutes=1)), ["23:58", "Next 23:59"], [LONG]),
    "idle next dose, display name": State(View(NOW, next_name=DISPLAY, next_at=at(hours=8)),
                                          ["23:58", "Next 07:58"], [DISPLAY]),
    "idle next dose in days": State(View(NOW, next_name="Lithium 300 mg", next_at=at(days=3)),
                                    ["Next Fri 23:58"], ["Lithium 300 mg"]),
    "idle next dose in weeks": State(View(NOW, next_name="Depot", next_at=at(days=20)), ["Next 14 Dec"], ["Depot"]),
    "idle, nothing planned": State(View(NOW), ["23:58", "No doses planned"]),
    "idle offline": State(View(NOW, offline=True), ["23:58", "offline"]),
    "refill needed": State(View(NOW, next_name=LONG, next_at=at(hours=1), low=[3]), ["Next 00:58", "Refill box 3"]),
    "refill needed, many boxes": State(View(NOW, low=[1, 2, 3, 4, 5, 6, 7, 8]), ["Refill 8 boxes"]),
    "refill needed, several": State(View(NOW, low=[2, 7]), ["Refill box 2,7"]),
    "due": State(View(NOW, due=[LONG]), ["Press to release"], [LONG]),
    "due, display name": State(View(NOW, due=[DISPLAY]), ["Press to release", DISPLAY]),
    "due, several": State(View(NOW, due=[LONG, DISPLAY, "x"]), ["3 medicines due", "Press to release"]),
    "released, awaiting confirmation": State(View(NOW, waiting=[LONG]), ["Take your pill", "Press when taken"]),
    "released, several awaiting": State(View(NOW, waiting=[LONG, "x"]), ["Take your pills", "Press when taken"]),
    "clock unsynchronized": State(View(NOW, clock_unknown=True, due=[]), ["Setting clock...", "Doses on hold"]),
    "storage error": State(View(NOW, mode="storage_error"), ["Storage problem", "Call your clinic"]),
    "menu (as needed)": State(View(NOW, mode="menu", choices=[LONG, DISPLAY], choice=0), [], [LONG]),
    "menu, display name": State(View(NOW, mode="menu", choices=[LONG, DISPLAY], choice=1), [DISPLAY]),
    "check-in mood": State(View(NOW, mode="checkin_mood", choice=4), ["How do you feel?", "5 very good"]),
    "check-in side effects": State(View(NOW, mode="checkin_side", choice=2), ["Side effects?", "strong"]),
}


def feedback(kind: str, must: list[str], **detail) -> State:
    return State(View(NOW, mode="feedback", feedback=kind, detail=detail, next_at=at(hours=8), next_name=LONG),
                 must)


STATES.update({
    "fb released": feedback("released", ["Take your pill", "Press when taken"], medications=["a"]),
    "fb released several": feedback("released", ["Take your pills", "Press when taken"], medications=["a", "b"]),
    "fb as needed released": feedback("prn_released", ["Take your pill", "No need to press"]),
    "fb confirmed": feedback("confirmed", ["Thank you!", "Dose recorded"]),
    "fb too early": feedback("too_early", ["Too early", "Opens at 23:59"], opens_at=at(minutes=1)),
    "fb too early, days ahead": feedback("too_early", ["Too early", "Opens", "Thu 07:28"], opens_at=at(days=1, hours=7.5)),
    "fb nothing due": feedback("nothing_due", ["Nothing due now", "Next 07:58"]),
    "fb empty": feedback("empty", ["Box is empty", "Ask for a refill"]),
    "fb held with wait-until": feedback("held", ["Dose on hold", "Wait until 03:58"], allowed_at=at(hours=4)),
    "fb held, until another day": feedback("held", ["Dose on hold", "ntil Thu 08:00"],
                                           allowed_at=datetime(2026, 11, 26, 8, 0, tzinfo=NY)),
    "fb held, no time": feedback("held", ["Dose on hold", "Clinic informed"], allowed_at=None),
    "fb unloaded": feedback("held", ["Box needs refill", "Clinic informed"], reason="unloaded"),
    "fb denied": feedback("denied", ["As-needed locked", "until 05:58"], reason="interval", allowed_at=at(hours=6)),
    "fb denied, max per period": feedback("denied", ["As-needed locked", "until Sat 23:58"],
                                          reason="max_per_period", allowed_at=at(days=4)),
    "fb denied, empty": feedback("denied", ["As-needed box", "is empty"], reason="empty"),
    "fb denied, no time": feedback("denied", ["As-needed locked", "Ask your clinic"], reason="separation"),
    "fb clock set back": feedback("too_early", ["Clock was reset", "Please wait"], reason="clock_behind"),
    "fb clock unsynchronized": feedback("denied", ["Setting clock...", "Please wait"], reason="clock_unsynchronized"),
    "fb no as-needed": feedback("no_as_needed", ["No as-needed", "medicine set"]),
    "fb missed": feedback("missed", ["Missed: 20:00", "Clinic informed"], scheduled_at=at(hours=-3, minutes=-58)),
    "fb missed yesterday": feedback("missed", ["Missed", "Mon 08:00", "Clinic informed"],
                                    scheduled_at=datetime(2026, 11, 23, 8, 0, tzinfo=NY)),
    "fb fault (release failed)": feedback("release_failed", ["Dispenser fault", "Help is informed"]),
    "fb check-in saved": feedback("checkin_saved", ["Thank you!", "Answer saved"]),
})


def glass(lines: list[str], cols: int, rows: int) -> list[str]:
    """`lines` written by charlcd into the emulated controller, read back from its DDRAM."""
    lcd = sim_lcd(cols, rows)
    lcd.show(lines)
    return lcd.emulator.lines()


@pytest.mark.parametrize("cols, rows", SIZES)
@pytest.mark.parametrize("name", list(STATES))
def test_every_screen_state_is_read_whole_on_the_glass(name, cols, rows):
    state = STATES[name]
    lines = screen(state.view, rows=rows, cols=cols)
    shown = glass(lines, cols, rows)
    # Nothing cut by the glass: every line fits, and the DDRAM holds exactly it.
    assert all(len(line) <= cols for line in lines), lines
    assert shown[:len(lines)] == [line.ljust(cols) for line in lines][:rows]
    assert all(re.fullmatch(r"[ -~]*", row) for row in shown), shown  # nothing the ROM draws as "?"
    what = state.must + [fit_name(n, cols) for n in state.names]
    for text in what:
        assert any(text in row for row in shown[:rows]), f"{text!r} is not whole on {shown}"
    if state.view.mode not in ("menu", "checkin_mood", "checkin_side", "storage_error") and rows >= 4:
        assert any("Tue 24 Nov 23:58" in row or "Time not set yet" in row for row in shown)


# A 16x1 display: one row, so each screen shows what to do now when it asks something of the
# person, else what happened (docs/HARDWARE.md). Every state has its row here.
ONE_ROW = {
    "idle next dose": "23:58 Next 23:59", "idle next dose, display name": "23:58 Next 07:58",
    "idle next dose in days": "Next Fri 23:58", "idle next dose in weeks": "Next 14 Dec",
    "idle, nothing planned": "No doses planned", "idle offline": "No doses planned",
    "refill needed": "23:58 Next 00:58", "refill needed, many boxes": "Refill 8 boxes",
    "refill needed, several": "Refill box 2,7",
    "due": "Press to release", "due, display name": "Press to release", "due, several": "Press to release",
    "released, awaiting confirmation": "Press when taken", "released, several awaiting": "Press when taken",
    "clock unsynchronized": "Doses on hold", "storage error": "Call your clinic",
    "menu (as needed)": "Quetiapine 300mg", "menu, display name": DISPLAY,
    "check-in mood": "Mood 5 very good", "check-in side effects": "Side eff: strong",
    "fb released": "Press when taken", "fb released several": "Press when taken",
    "fb as needed released": "Take your pill", "fb confirmed": "Thank you!",
    "fb too early": "Opens at 23:59", "fb too early, days ahead": "Opens Thu 07:28",
    "fb nothing due": "Nothing due now", "fb empty": "Ask for a refill",
    "fb held with wait-until": "Wait until 03:58", "fb held, until another day": "Until Thu 08:00",
    "fb held, no time": "Dose on hold", "fb unloaded": "Box needs refill",
    "fb denied": "Wait until 05:58", "fb denied, max per period": "Until Sat 23:58",
    "fb denied, empty": "As-needed empty", "fb denied, no time": "As-needed locked",
    "fb clock set back": "Please wait", "fb clock unsynchronized": "Please wait",
    "fb no as-needed": "No as-needed med", "fb missed": "Missed: 20:00", "fb missed yesterday": "Missed Mon 08:00",
    "fb fault (release failed)": "Dispenser fault", "fb check-in saved": "Thank you!",
}


@pytest.mark.parametrize("name", list(STATES))
def test_a_one_row_display_shows_what_to_do_now(name):
    lines = screen(STATES[name].view, rows=1, cols=16)
    assert glass(lines, 16, 1) == [ONE_ROW[name].ljust(16)]


def test_every_state_has_its_one_row_and_a_press_is_always_asked_for_on_it():
    assert set(ONE_ROW) == set(STATES)
    for name, state in STATES.items():
        two = screen(state.view, rows=2, cols=16)
        if any(line.startswith("Press ") for line in two[1:]):  # the 16x1 once showed only the name
            assert glass(screen(state.view, rows=1, cols=16), 16, 1)[0].startswith("Press "), name
    for choice, mood in enumerate(["Mood: 1 very bad", "Mood: 2 bad", "Mood: 3 okay", "Mood: 4 good"]):
        assert glass(screen(View(NOW, mode="checkin_mood", choice=choice), rows=1), 16, 1) == [mood.ljust(16)]


def test_names_get_the_full_width_and_display_names_are_never_shortened():
    assert glass(screen(View(NOW, due=[LONG]), cols=16), 16, 2)[0] == "Quetiapine 300mg"
    assert glass(screen(View(NOW, next_name="Multivitamin (demo)", next_at=at(hours=1)), cols=16), 16, 2) \
        == ["23:58 Next 00:58", "Multivitamin    "]  # the newcomer saw "Next 20:00 Multi"
    for cols, rows in SIZES:
        for view in (View(NOW, due=[DISPLAY]), View(NOW, next_name=DISPLAY, next_at=at(hours=1)),
                     View(NOW, mode="menu", choices=[DISPLAY])):
            assert any(DISPLAY in row for row in glass(screen(view, rows, cols), cols, rows))


def test_the_4_row_display_adds_the_date_and_a_status_row():
    view = View(NOW, next_name=LONG, next_at=at(hours=1), low=[2], offline=True)
    assert glass(screen(view, rows=4, cols=20), 20, 4) == [
        "23:58 Next 00:58".ljust(20), "Refill box 2".ljust(20), "Tue 24 Nov 23:58".ljust(20), "offline".ljust(20)]
    menu = View(NOW, mode="menu", choices=[LONG])
    assert glass(screen(menu, rows=4, cols=20), 20, 4)[2:] == ["Press: next one".ljust(20), "Hold: ask for it".ljust(20)]


ROOT = Path(__file__).resolve().parents[1]


def test_every_mode_and_feedback_is_in_the_table():
    """The table above is the list of screens: a mode or feedback added without a row fails here."""
    covered_modes = {state.view.mode for state in STATES.values()}
    covered_feedback = {state.view.feedback for state in STATES.values() if state.view.feedback}
    assert set(MODES) <= covered_modes
    assert set(FEEDBACKS) <= covered_feedback
    # Every feedback the rules, the engine and the daemon give is either a screen or says nothing new.
    said = set()
    for module in ("rules.py", "engine.py", "daemon.py", "screens.py"):
        text = (ROOT / "dispenser" / module).read_text()
        said |= set(re.findall(r'feedback(?:, outcome\.detail)? = "(\w+)"', text))
        said |= set(re.findall(r'feedback="(\w+)"', text))
        # The vocabulary's members (dispenser/vocabulary.py), as the code now spells them.
        members = re.findall(r'feedback(?:, outcome\.detail)? = Feedback\.(\w+)', text)
        members += re.findall(r'feedback=Feedback\.(\w+)', text)
        members += re.findall(r'return Feedback\.(\w+)', text)
        said |= {Feedback[name].value for name in members if Feedback[name].value}
    silent = {"menu", "refilled", "applied", "rejected"}  # a menu is a mode; the rest change no screen
    assert said, "no feedback found: the pattern above is out of date"
    assert said - silent <= set(FEEDBACKS), said - silent - set(FEEDBACKS)
