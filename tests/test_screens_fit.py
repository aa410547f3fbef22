"""The rule that fits a medication's name to the LCD (docs/SCHEDULE.md, "The name on the screen")."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispenser.lcd_fit import first_fitting, fit_name, labelled, name_steps, plain


@pytest.mark.parametrize("name, width, shown", [
    ("Sertraline 50 mg", 16, "Sertraline 50 mg"),                       # fits: as written
    ("Multivitamin (demo)", 16, "Multivitamin"),                         # brackets go first
    ("Hydroxyzine 25 mg", 16, "Hydroxyzine 25mg"),                       # then the space before a unit
    ("Quetiapine fumarate extended-release 300 mg", 16, "Quetiapine 300mg"),  # first word and strength
    ("Quetiapine fumarate extended-release 300 mg", 20, "Quetiapine 300mg"),
    ("Lisdexamfetamine dimesylate 70 mg", 16, "Lisdexamfetamine"),        # the first word alone
    ("Hydroxychloroquine sulfate 200 mg", 16, "Hydroxychloroqu."),       # the first word, abbreviated
    ("Hydroxychloroquine sulfate 200 mg", 20, "Hydroxychloroquine"),
    (" Lithium  carbonate ", 16, "Lithium"),                              # spaces collapsed, then first word
    ("Lithium \t carbonate", 20, "Lithium carbonate"),
    ("Ibuprofène 400 mg", 16, "Ibuprofene 400mg"),         # accents dropped
    ("Cyanocobalamin 1 \u00b5g", 20, "Cyanocobalamin 1 mcg"),              # µg is mcg
    ("Venlafaxine XR (Effexor) 75 mg", 16, "Venlafaxine 75mg"),
])
def test_names_are_fitted_by_the_documented_steps(name, width, shown):
    assert fit_name(name, width) == shown
    assert len(shown) <= width


def test_a_label_is_left_out_before_a_name_is_shortened():
    assert labelled("Due: ", "Lithium 300 mg", 20) == "Due: Lithium 300 mg"
    assert labelled("Due: ", "Lithium 300 mg", 16) == "Lithium 300 mg"
    assert labelled("Due: ", "Multivitamin (demo)", 16) == "Multivitamin"
    assert labelled("> ", "QXR", 16) == "> QXR"


def test_first_fitting_takes_the_first_that_fits():
    assert first_fitting(["Wait until Wed 08:00", "Until Wed 08:00"], 16) == "Until Wed 08:00"
    assert first_fitting(["short"], 16) == "short"


names = st.text(st.characters(min_codepoint=32, max_codepoint=0x17F), min_size=1, max_size=60)


@given(names, st.sampled_from([16, 20]))
def test_any_name_fits_and_only_shortens_when_it_must(name, width):
    shown = fit_name(name, width)
    assert len(shown) <= width
    if len(plain(name)) <= width:
        assert shown in (name, plain(name))  # a name that fits is never shortened
    steps = name_steps(name, width)
    assert shown == next(step for step in steps if len(step) <= width)  # the first step that fits


@given(st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=16))
def test_a_display_name_of_up_to_16_characters_is_shown_as_written(display):
    assert fit_name(display, 16) == display and fit_name(display, 20) == display
