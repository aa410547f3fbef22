"""Pure: what the lid switch and the pill-drop sensor mean for the dose rules.

The drop sensor: a release whose pills were not all seen is `dose.release_failed` with
`reason` jam or empty (UNSEEN_REASONS); rules.py opens its dose again, keeps counting the
release for section 6 and empties the compartment until a refill. docs/RULES.md, "The
lid and the drop sensor".

The lid:
A lid opened during a release (within RELEASE_GRACE of one) or around a refill
(within REFILL_GRACE before it, or a refill logged within REFILL_GRACE after the lid
shut) is a person doing what the device asked. Any other opening becomes a
`lid_opened` alert REFILL_GRACE after the lid shut (or after it opened, while it stays
open): a caregiver refilling runs `dispenser refill` after shutting the lid, and
must not be reported for it. docs/RULES.md, "The lid and the drop sensor".
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from .vocabulary import AlertKind, EventType, FailReason, LidDuring, RELEASE_TYPES


RELEASE_GRACE = timedelta(minutes=2)
REFILL_GRACE = timedelta(minutes=15)
TAMPER_ALERT = AlertKind.LID_OPENED
# `dose.release_failed` reasons that come from the drop sensor (the servo's own failure has none).
UNSEEN_REASONS = frozenset(FailReason)


@dataclass
class LidState:
    """What the log says about the lid, releases and refills, as far as tamper needs it."""

    open: bool = False
    last_release_at: datetime | None = None
    last_refill_at: datetime | None = None
    # An opening not yet explained: (its lid.opened event_id, opened at, shut at or None).
    unexplained: tuple[str, datetime, datetime | None] | None = None


def fold_lid(lid: LidState, kind: str, data: dict, at: datetime, event_id: str | None) -> None:
    """One logged event, as far as the lid is concerned."""
    if kind in RELEASE_TYPES:
        lid.last_release_at = at
    elif kind == EventType.STOCK_REFILLED:
        lid.last_refill_at = at
        lid.unexplained = None  # the opening was a refill
    elif kind == EventType.LID_OPENED:
        lid.open = True
        if data.get("during") is None and event_id is not None:
            lid.unexplained = (event_id, at, None)
    elif kind == EventType.LID_CLOSED:
        lid.open = False
        if lid.unexplained is not None:
            lid.unexplained = (lid.unexplained[0], lid.unexplained[1], at)
    elif kind == EventType.ALERT_RAISED and data.get("kind") == TAMPER_ALERT:
        lid.unexplained = None


def opened_during(lid: LidState, now: datetime) -> LidDuring | None:
    """Why a lid opening now is expected: a release, a refill, or None (it is not)."""
    if lid.last_release_at is not None and timedelta(0) <= now - lid.last_release_at <= RELEASE_GRACE:
        return LidDuring.RELEASE
    if lid.last_refill_at is not None and timedelta(0) <= now - lid.last_refill_at <= REFILL_GRACE:
        return LidDuring.REFILL
    return None


def tamper_due_at(lid: LidState) -> datetime | None:
    """When the unexplained opening becomes an alert: REFILL_GRACE after the lid shut, or after
    it opened while it stays open; None when nothing waits."""
    if lid.unexplained is None:
        return None
    _, opened, shut = lid.unexplained
    return (shut or opened) + REFILL_GRACE

