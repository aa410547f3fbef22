"""Pure: text fitted to the LCD's width, so nothing a person must read is cut by the glass.

A medication's `display` (schedule document, at most 16 characters) is shown as written;
without one, its `name` is shortened by the rule in docs/SCHEDULE.md ("The name on the
screen"), each step only when the one before does not fit:

    >>> fit_name("Multivitamin (demo)", 16)
    'Multivitamin'
    >>> fit_name("Quetiapine fumarate extended-release 300 mg", 16)
    'Quetiapine 300mg'
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

_BRACKETS = re.compile(r"\s*[\(\[][^\)\]]*[\)\]]")
_NUMBER_UNIT = re.compile(r"(\d)\s+(?=[A-Za-z%])")


def plain(text: str) -> str:
    """Spaces collapsed, accents dropped (é -> e) and µ written mc (µg -> mcg): the
    display's ROM draws neither accents nor a safe micro sign."""
    text = text.replace("\u00b5", "mc").replace("\u03bc", "mc")
    text = "".join(ch for ch in unicodedata.normalize("NFKD", text) if not unicodedata.combining(ch))
    return " ".join(text.split())


def name_steps(name: str, width: int) -> list[str]:
    """The rule's candidates for `name`, longest first; the last always fits `width`."""
    whole = plain(name)
    unbracketed = " ".join(_BRACKETS.sub("", whole).split()) or whole
    joined = _NUMBER_UNIT.sub(r"\1", unbracketed)
    words = joined.split() or [whole or "?"]
    first = words[0]
    strength = next((word for word in reversed(words[1:]) if word[0].isdigit()), None)
    steps = [*_spellings(name), unbracketed, joined]
    if strength is not None:
        steps.append(f"{first} {strength}")
    steps += [first, first[:max(width - 1, 1)] + "."]
    return steps


def fit_name(name: str, width: int) -> str:
    """The first step of the rule that fits `width` characters."""
    return first_fitting(name_steps(name, width), width)


def labelled(label: str, name: str, width: int) -> str:
    """`label` before the whole name when both fit, else the name alone, fitted: a label
    is left out before a name is shortened."""
    for spelling in _spellings(name):
        if len(label) + len(spelling) <= width:
            return label + spelling
    return fit_name(name, width)


def _spellings(name: str) -> list[str]:
    """The name as written when the display can draw all of it (a `display` always), then plain."""
    drawable = bool(name.strip()) and all(" " <= ch <= "~" for ch in name)
    return [name, plain(name)] if drawable else [plain(name)]


def first_fitting(candidates: Iterable[str], width: int) -> str:
    """The first candidate of at most `width` characters (the last one, cut, if none is)."""
    last = ""
    for candidate in candidates:
        if len(candidate) <= width:
            return candidate
        last = candidate
    return last[:width]
