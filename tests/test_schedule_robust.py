"""No document crashes the parser, and no document that parses crashes the expander.

Random documents of the right shape, with values at and past every limit: years near 1
and 9999, huge counts, weekly periods near the limit, `h` intervals with far bounds,
zones with 30-minute DST and a missing midnight. `parse_schedule` returns or raises
ScheduleError; `doses_between` answers for any window, also at the edges of time.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispenser.schedule import ScheduleError, parse_schedule
from dispenser.scheduler import EARLIEST, LATEST, doses_between
from dispenser.timeutil import UTC
from depth import size

ZONES = ["UTC", "America/New_York", "Europe/London", "Australia/Lord_Howe", "America/Santiago",
         "Pacific/Kiritimati", "Pacific/Pago_Pago", "Asia/Kathmandu", "Antarctica/Troll"]
CODES = ["MORN", "CM", "CV", "HS", "ACM", "PC", "WAKE"]


def pick(tame: list, wild: list, is_wild: bool):
    """Values a document may hold (at their edges); in a wild document also past them."""
    return st.sampled_from(tame + wild if is_wild else tame)


def clock():
    return st.builds(lambda h, m, s: f"{h:02d}:{m:02d}:{s:02d}",
                     st.integers(0, 23), st.sampled_from([0, 1, 15, 30, 59]), st.sampled_from([0, 59]))


def moment_text(wild: bool):
    day = st.builds(lambda y, m, d: f"{y:04d}-{m:02d}-{d:02d}",
                    pick([2000, 2026, 2199], [1, 1999, 2200, 9999], wild),
                    st.sampled_from([1, 3, 9, 10, 12]), st.sampled_from([1, 5, 6, 29, 31]))
    return st.one_of(day, st.builds(lambda d, c, z: f"{d}T{c}{z}", day, clock(),
                                    st.sampled_from(["", "Z", "+14:00", "-12:00", "+05:45"])))


def number(wild: bool):
    return pick([1, 1, 2, 3, 8, 24, 52, 2.0],
                [0, 53, 366, 367, 8784, 10_000, 10**9, 10**30, 0.5, 1.5, 1e-9, 1e300], wild)


def quantity(wild: bool):
    if not wild:
        return st.fixed_dictionaries({"value": st.sampled_from([1, 2, 10])},
                                     optional={"unit": st.just("tablet"), "code": st.just("{tbl}")})
    return st.fixed_dictionaries(
        {"value": st.sampled_from([1, 2, 10, 11, 50, 75, 100, 1000, 0.5, 1e300])},
        optional={"unit": st.sampled_from(["tablet", "mg", "mL", "g"]),
                  "code": st.sampled_from(["mg", "{tbl}", "{capsule}"])})


@st.composite
def repeats(draw, wild: bool) -> dict:
    unit = draw(st.sampled_from(["h", "d", "wk"]))
    repeat = {"periodUnit": unit, "period": draw(number(wild)),
              "frequency": draw(st.sampled_from([1, 2, 3, 60]))}
    if unit != "h":
        if draw(st.booleans()):
            repeat["timeOfDay"] = draw(st.lists(clock(), min_size=1, max_size=4, unique=True))
        else:
            repeat["when"] = draw(st.lists(st.sampled_from(CODES), min_size=1, max_size=3, unique=True))
            repeat["offset"] = draw(st.sampled_from([0, 10, 30, 730, 1440]))
        repeat["frequency"] = len(repeat.get("timeOfDay", repeat.get("when")))
        if unit == "d" and (repeat["period"] == 1 or wild) and draw(st.booleans()):
            repeat["dayOfWeek"] = draw(st.lists(st.sampled_from(["mon", "wed", "sun"]), min_size=1,
                                                unique=True))
    bounds = draw(st.fixed_dictionaries({}, optional={"start": moment_text(wild),
                                                      "end": moment_text(wild)}))
    if bounds.get("end", "~") < bounds.get("start", ""):
        bounds["start"], bounds["end"] = bounds["end"], bounds["start"]
    if bounds or unit != "d" or draw(st.booleans()):
        bounds.setdefault("start", draw(moment_text(wild)))
        repeat["boundsPeriod"] = bounds
    if draw(st.booleans()):
        repeat["count"] = draw(pick([1, 2, 500, 10_000], [10_001, 10**9], wild))
    return repeat


@st.composite
def medications(draw, index: int, wild: bool) -> dict:
    medication = {"id": f"m{index}", "name": f"M{index}", "compartment": index,
                  "window": {"before_min": draw(st.sampled_from([0, 30, 1440])),
                             "after_min": draw(st.sampled_from([1, 120, 1440]))}}
    if draw(st.booleans()):
        medication["strength"] = {"value": draw(st.sampled_from([25, 50, 0.5])), "unit": "mg"}
    if draw(st.integers(0, 4)) == 0:
        repeat = {"frequency": 1, "period": draw(number(wild)), "periodUnit": "h"}
        if draw(st.booleans()):
            repeat["boundsPeriod"] = {"start": draw(moment_text(wild))}
        medication["dosage"] = [{
            "asNeededBoolean": True, "timing": {"repeat": repeat},
            "maxDosePerPeriod": {"numerator": draw(quantity(wild)),
                                 "denominator": {"value": draw(number(wild)), "unit": "d"}},
            "doseAndRate": [{"doseQuantity": draw(quantity(wild))}]}]
    else:
        medication["dosage"] = [{"timing": {"repeat": draw(repeats(wild))},
                                 "doseAndRate": [{"doseQuantity": draw(quantity(wild))}]}
                                for _ in range(draw(st.sampled_from([1, 1, 2, 3])))]
    return medication


@st.composite
def documents(draw) -> dict:
    wild = draw(st.booleans())
    return {"schema": "dispenser.schedule/1", "version": 1,
            "issued_at": draw(pick(["2026-01-01T00:00:00Z", "2199-12-31T23:59:59Z"],
                                   ["9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+01:00"], wild)),
            "timezone": draw(st.sampled_from(ZONES)),
            "routine": {"MORN": "08:00", "CM": "08:00", "CV": "18:30", "HS": "22:00", "ACM": "00:10",
                        "PC": "23:50", "WAKE": "00:00"},
            "medications": [draw(medications(n, wild)) for n in range(1, draw(st.integers(1, 3)) + 1)]}


def windows(schedule) -> list[tuple[datetime, datetime]]:
    """A few days near every bound the schedule names, at the edges of time, and now."""
    far_past = datetime.min.replace(tzinfo=timezone(timedelta(hours=14)))
    far_future = datetime.max.replace(tzinfo=timezone(timedelta(hours=-12)))
    marks = [EARLIEST, LATEST, datetime(2026, 3, 8, tzinfo=UTC)]
    for medication in schedule.medications:
        entries = list(medication.dosages) + ([medication.as_needed] if medication.as_needed else [])
        marks += [t for e in entries for t in (e.bounds_start, e.bounds_end) if t is not None]
    result = [(far_past, far_future.replace(year=1)), (far_past, EARLIEST + timedelta(days=1)),
              (LATEST - timedelta(days=1), far_future), (far_future - timedelta(days=1), far_future)]
    for mark in marks:
        result += [(mark - timedelta(days=2), mark + timedelta(hours=1)),
                   (mark - timedelta(seconds=1), mark + timedelta(days=2))]
    return result


# 50 examples (300 with --deep, tests/depth.py): with the expander's clamp to LATEST or the
# date-time parser's OverflowError planted away, 50 failed 6 random-seed runs in 6 (25: 6 in 6).
@settings(deadline=None, max_examples=size(quick=50, deep_size=300),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(doc=documents())
def test_any_document_parses_or_is_refused_and_never_crashes_the_expander(doc):
    try:
        schedule = parse_schedule(doc)
    except ScheduleError as error:
        assert error.problems and all(": " in p and "\n" not in p for p in error.problems)
        return
    for start, end in windows(schedule):
        doses = doses_between(schedule, start, end)
        assert all(start <= d.scheduled_at < end for d in doses)
        assert len({d.key for d in doses}) == len(doses)
        assert all(1 <= d.quantity <= 10 for d in doses)
