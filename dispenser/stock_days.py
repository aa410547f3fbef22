"""How many days a compartment's tablets last at the schedule's pace: pure.

For the retained `state` document's `compartments` (and Home Assistant's days of stock):
the scheduled tablets of the coming 7 days, per day, divide the count. An as-needed
medication has no pace, so no figure (None).

    >>> days_of_stock(10, 2.0)
    5.0
"""
from __future__ import annotations

from datetime import datetime, timedelta

from .schedule import Schedule
from .scheduler import doses_between

PACE_DAYS = 7


def daily_use(schedule: Schedule, now: datetime) -> dict[str, float]:
    """medication id -> scheduled tablets per day over the coming PACE_DAYS days."""
    used: dict[str, float] = {}
    for dose in doses_between(schedule, now, now + timedelta(days=PACE_DAYS)):
        used[dose.medication_id] = used.get(dose.medication_id, 0) + dose.quantity
    return {medication: total / PACE_DAYS for medication, total in used.items()}


def days_of_stock(count: int, per_day: float | None) -> float | None:
    """Days the count lasts, to one decimal; None without a pace (as-needed, or nothing due)."""
    if not per_day:
        return None
    return round(max(count, 0) / per_day, 1)
