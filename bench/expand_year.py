"""Time a year's expansion of a 10-medication schedule (goal: under 50 ms).

    .venv/bin/python bench/expand_year.py [--repeat N]

Prints figures; it is not a test. "cold" clears the scheduler's per-day caches before
each run (a fresh process, or a schedule never seen); "warm" reuses them, as the daemon
does when it asks for the same days again.
"""
from __future__ import annotations

import argparse
import statistics
import time
from datetime import datetime

from dispenser import scheduler
from dispenser.schedule import parse_schedule
from dispenser.scheduler import doses_between
from dispenser.timeutil import UTC


def _entry(repeat: dict, quantity: int = 1) -> dict:
    return {"timing": {"repeat": repeat}, "doseAndRate": [{"doseQuantity": {"value": quantity}}]}


def _daily(times: list[str], **extra) -> dict:
    return {"frequency": len(times), "period": 1, "periodUnit": "d", "timeOfDay": times, **extra}


def _medication(number: int, dosage: list[dict], **extra) -> dict:
    return {"id": f"med{number:02d}", "name": f"Medication {number}", "compartment": number,
            "dosage": dosage, **extra}


DOCUMENT = {
    "schema": "dispenser.schedule/1",
    "version": 1,
    "issued_at": "2026-01-01T00:00:00Z",
    "timezone": "America/New_York",
    "routine": {"MORN": "08:00", "CM": "08:00", "CV": "18:30", "HS": "22:00"},
    "medications": [
        _medication(1, [_entry(_daily(["09:00:00"]))]),
        _medication(2, [_entry({"frequency": 2, "period": 1, "periodUnit": "d",
                                "when": ["CM", "CV"], "offset": 15})]),
        _medication(3, [_entry({"frequency": 1, "period": 1, "periodUnit": "wk",
                                "timeOfDay": ["10:00:00"], "boundsPeriod": {"start": "2026-01-05"}})]),
        _medication(4, [_entry({"frequency": 1, "period": 1, "periodUnit": "d",
                                "when": ["HS"], "offset": 30})]),
        _medication(5, [_entry({"frequency": 3, "period": 24, "periodUnit": "h",
                                "boundsPeriod": {"start": "2026-01-01T06:00:00"}})]),
        _medication(6, [
            _entry(_daily(["08:30:00"], boundsPeriod={"start": "2026-01-01", "end": "2026-01-31"})),
            _entry(_daily(["08:30:00"], boundsPeriod={"start": "2026-02-01", "end": "2026-02-28"}), 2),
            _entry(_daily(["08:30:00"], boundsPeriod={"start": "2026-03-01"}), 3),
        ]),
        _medication(7, [_entry(_daily(["07:30:00", "19:30:00"], dayOfWeek=["mon", "wed", "fri"]))]),
        _medication(8, [_entry(_daily(["02:30:00"]))], window={"before_min": 15, "after_min": 60}),
        _medication(9, [_entry({"frequency": 1, "period": 2, "periodUnit": "d",
                                "timeOfDay": ["12:00:00"], "count": 120,
                                "boundsPeriod": {"start": "2026-01-01"}})]),
        _medication(10, [{"asNeededBoolean": True,
                          "timing": {"repeat": {"frequency": 1, "period": 6, "periodUnit": "h"}},
                          "maxDosePerPeriod": {"numerator": {"value": 3},
                                               "denominator": {"value": 1, "unit": "d"}},
                          "doseAndRate": [{"doseQuantity": {"value": 1}}]}]),
    ],
}


def _clear_caches() -> None:
    scheduler._localised_day.cache_clear()
    scheduler._entry_end.cache_clear()


def _time_ms(schedule, start, end, cold: bool) -> float:
    if cold:
        _clear_caches()
    began = time.perf_counter()
    doses_between(schedule, start, end)
    return (time.perf_counter() - began) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()

    began = time.perf_counter()
    schedule = parse_schedule(DOCUMENT)
    parse_ms = (time.perf_counter() - began) * 1000
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)
    doses = doses_between(schedule, start, end)

    cold = [_time_ms(schedule, start, end, cold=True) for _ in range(args.repeat)]
    warm = [_time_ms(schedule, start, end, cold=False) for _ in range(args.repeat)]
    print(f"parse: {parse_ms:.2f} ms")
    print(f"expand one year, 10 medications: {len(doses)} doses")
    for name, runs in (("cold", cold), ("warm", warm)):
        print(f"  {name}: median {statistics.median(runs):.1f} ms, "
              f"min {min(runs):.1f} ms, max {max(runs):.1f} ms over {len(runs)} runs")
    print("goal: < 50 ms", "OK" if statistics.median(cold) < 50 else "MISSED")


if __name__ == "__main__":
    main()
