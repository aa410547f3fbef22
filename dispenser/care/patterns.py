"""Pure: patterns a clinician should hear of, which no single event shows.

- a run of `missed_run` missed doses of one medication in a row (the seeds' "stopping
  too soon"; the device has no "declined" event: a dose not taken in its window is missed);
- side effects (mild or strong) reported in `side_effects_repeat` check-ins within
  `side_effects_days`;
- mood falling over `mood_days`: the mean of the later half of the check-ins at least
  `mood_drop` (1-5 scale) below the mean of the earlier half, two check-ins in each at least.

Each finding carries its evidence (the event ids behind it) and a `key` that is the same
for the same run or window, so the caller raises one alert per pattern, not one per event.

    >>> missed = [Outcome("e1", "m", "dose.missed", 1), Outcome("e2", "m", "dose.missed", 2)]
    >>> [f.kind for f in missed_run(missed, 2)]
    ['pattern_missed_run']
"""
from __future__ import annotations

from dataclasses import dataclass

from ..vocabulary import EventType
from .config import PatternSettings

# Plain strings: they are SQL parameters (a database driver may write an enum by its name).
OUTCOMES = tuple(t.value for t in (EventType.DOSE_TAKEN, EventType.DOSE_MISSED, EventType.DOSE_UNCONFIRMED))


@dataclass(frozen=True)
class Outcome:
    """How one scheduled dose ended: its event, medication, event type and a sort key (seq)."""

    event_id: str
    medication_id: str
    type: str
    seq: int


@dataclass(frozen=True)
class Checkin:
    """One `checkin.recorded`: mood 1-5 (or None) and side effects none/mild/strong."""

    event_id: str
    day: int          # days since the epoch, local to nothing: the event's UTC date
    mood: int | None
    side_effects: str | None
    seq: int


@dataclass(frozen=True)
class PatternFinding:
    kind: str
    key: str
    detail: str
    evidence: tuple[str, ...]


def missed_run(outcomes: list[Outcome], length: int) -> list[PatternFinding]:
    """Per medication, the latest run of missed doses when it is at least `length` long."""
    findings = []
    by_medication: dict[str, list[Outcome]] = {}
    for outcome in sorted(outcomes, key=lambda o: o.seq):
        by_medication.setdefault(outcome.medication_id, []).append(outcome)
    for medication, ended in sorted(by_medication.items()):
        run: list[Outcome] = []
        for outcome in reversed(ended):
            if outcome.type != EventType.DOSE_MISSED:
                break
            run.append(outcome)
        if len(run) >= length:
            run.reverse()
            findings.append(PatternFinding(
                "pattern_missed_run", f"missed_run:{medication}:{run[0].event_id}",
                f"{len(run)} doses of {medication} missed in a row", tuple(o.event_id for o in run)))
    return findings


def repeated_side_effects(checkins: list[Checkin], settings: PatternSettings) -> list[PatternFinding]:
    """Side effects in `side_effects_repeat` check-ins of the last `side_effects_days` days."""
    if not checkins:
        return []
    last_day = max(c.day for c in checkins)
    window = [c for c in sorted(checkins, key=lambda c: c.seq)
              if c.day > last_day - settings.side_effects_days and c.side_effects in ("mild", "strong")]
    if len(window) < settings.side_effects_repeat:
        return []
    period = last_day // settings.side_effects_days
    return [PatternFinding(
        "pattern_side_effects", f"side_effects:{period}",
        f"side effects reported in {len(window)} check-ins within {settings.side_effects_days} days",
        tuple(c.event_id for c in window))]


def falling_mood(checkins: list[Checkin], settings: PatternSettings) -> list[PatternFinding]:
    """The later half of the last `mood_days` days' moods below the earlier half by `mood_drop`."""
    moods = [c for c in sorted(checkins, key=lambda c: c.seq) if c.mood is not None]
    if not moods:
        return []
    last_day = max(c.day for c in moods)
    window = [c for c in moods if c.day > last_day - settings.mood_days]
    half = len(window) // 2
    if half < 2:
        return []
    earlier, later = window[:half], window[-half:]
    before = sum(c.mood for c in earlier if c.mood is not None) / half
    after = sum(c.mood for c in later if c.mood is not None) / half
    if before - after < settings.mood_drop:
        return []
    period = last_day // settings.mood_days
    return [PatternFinding(
        "pattern_mood_falling", f"mood_falling:{period}",
        f"mood fell from {before:.1f} to {after:.1f} (of 5) over {settings.mood_days} days",
        tuple(c.event_id for c in window))]
