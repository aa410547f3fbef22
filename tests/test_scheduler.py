"""scheduler.py: doses and windows from a Schedule, across DST, titration and counts."""
from __future__ import annotations

import json
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispenser.schedule import parse_schedule
from dispenser.scheduler import Dose, doses_between, occurrences
from dispenser.timeutil import UTC

DATA = Path(__file__).resolve().parents[1] / "dispenser" / "demo"  # the contract's example schedule
NY = ZoneInfo("America/New_York")
LONDON = ZoneInfo("Europe/London")
H = timedelta(hours=1)
M = timedelta(minutes=1)


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def local(tz: ZoneInfo | str, *args) -> datetime:
    """A local wall-clock time (fold=0) as aware UTC."""
    tz = ZoneInfo(tz) if isinstance(tz, str) else tz
    return datetime(*args, tzinfo=tz).astimezone(UTC)


def entry(repeat: dict, quantity: int = 1) -> dict:
    return {"timing": {"repeat": repeat}, "doseAndRate": [{"doseQuantity": {"value": quantity}}]}


def daily(*times: str, **extra) -> dict:
    return {"frequency": len(times), "period": 1, "periodUnit": "d", "timeOfDay": list(times),
            **extra}


def every_hours(hours, start: str, **extra) -> dict:
    return {"frequency": 1, "period": hours, "periodUnit": "h", "boundsPeriod": {"start": start},
            **extra}


def schedule_of(*dosage: dict, tz="America/New_York", window=None, medications=None):
    """A one-medication ("med", compartment 1) schedule, or the given medications."""
    if medications is None:
        medications = [{"id": "med", "name": "Med", "compartment": 1, "dosage": list(dosage)}]
        if window is not None:
            medications[0]["window"] = window
    return parse_schedule({
        "schema": "dispenser.schedule/1", "version": 1, "issued_at": "2026-01-01T00:00:00Z",
        "timezone": tz,
        "routine": {"MORN": "08:00", "CM": "08:00", "CV": "18:30", "HS": "22:00",
                    "ACM": "00:10", "PC": "23:50"},
        "medications": medications,
    })


def times_of(schedule, start: datetime, end: datetime) -> list[datetime]:
    return [dose.scheduled_at for dose in doses_between(schedule, start, end)]


def local_days(tz, first: date, days: int) -> tuple[datetime, datetime]:
    """[local midnight of first, local midnight `days` later) as UTC."""
    last = first + timedelta(days=days)
    return local(tz, first.year, first.month, first.day), local(tz, last.year, last.month, last.day)


# -- the contract example ---------------------------------------------------------


@pytest.fixture
def contract():
    return parse_schedule(json.loads((DATA / "schedule.json").read_text()))


def test_contract_sertraline_dose_and_window(contract):
    doses = doses_between(contract, utc(2026, 11, 24), utc(2026, 11, 25))
    sertraline = [d for d in doses if d.medication_id == "sertraline"]
    assert sertraline == [Dose(
        scheduled_at=utc(2026, 11, 24, 13), medication_id="sertraline", quantity=1,
        compartment=1, window_start=utc(2026, 11, 24, 12, 30), window_end=utc(2026, 11, 24, 15))]
    assert sertraline[0].key == ("sertraline", utc(2026, 11, 24, 13))


def test_contract_naltrexone_titration(contract):
    doses = doses_between(contract, utc(2026, 11, 18), utc(2026, 12, 1))
    naltrexone = [(d.scheduled_at, d.quantity) for d in doses if d.medication_id == "naltrexone"]
    # 09:00 New York (14:00 UTC), from 2026-11-20: one tablet until 11-27, then two.
    assert naltrexone == [(utc(2026, 11, day, 14), 1) for day in range(20, 27)] + [
        (utc(2026, 11, day, 14), 2) for day in range(27, 31)]


def test_contract_as_needed_has_no_doses(contract):
    doses = doses_between(contract, utc(2026, 11, 1), utc(2027, 1, 1))
    assert {d.medication_id for d in doses} == {"sertraline", "naltrexone"}
    assert {d.compartment for d in doses} == {1, 2}


def test_contract_doses_sorted_by_time_then_medication(contract):
    doses = doses_between(contract, utc(2026, 11, 20), utc(2026, 12, 20))
    assert doses == sorted(doses, key=lambda d: (d.scheduled_at, d.medication_id))
    assert doses == sorted(doses)  # Dose orders the same way
    assert all(d.scheduled_at.tzinfo is UTC and d.window_end.tzinfo is UTC for d in doses)


# -- the range ----------------------------------------------------------------------


def test_range_is_half_open():
    schedule = schedule_of(entry(daily("09:00:00")), tz="UTC")
    assert times_of(schedule, utc(2026, 5, 1, 9), utc(2026, 5, 3, 9)) == [
        utc(2026, 5, 1, 9), utc(2026, 5, 2, 9)]


@pytest.mark.parametrize("start, end", [
    (utc(2026, 5, 2), utc(2026, 5, 2)),
    (utc(2026, 5, 3), utc(2026, 5, 2)),
])
def test_empty_range(start, end):
    assert doses_between(schedule_of(entry(daily("09:00:00"))), start, end) == []


@pytest.mark.parametrize("start, end", [
    (datetime(2026, 5, 1), utc(2026, 5, 2)),
    (utc(2026, 5, 1), datetime(2026, 5, 2)),
])
def test_naive_range_is_a_programming_error(start, end):
    with pytest.raises(ValueError, match="aware"):
        doses_between(schedule_of(entry(daily("09:00:00"))), start, end)


def test_range_in_any_zone_gives_utc_doses():
    schedule = schedule_of(entry(daily("09:00:00")))
    start = datetime(2026, 5, 1, tzinfo=NY)
    assert times_of(schedule, start, start + timedelta(days=1)) == [utc(2026, 5, 1, 13)]


# -- daily, weekly, dayOfWeek, period ----------------------------------------------


def test_daily_times_each_day():
    schedule = schedule_of(entry(daily("21:00:00", "09:00:30")), tz="UTC")
    assert times_of(schedule, utc(2026, 5, 1), utc(2026, 5, 3)) == [
        utc(2026, 5, 1, 9, 0, 30), utc(2026, 5, 1, 21),
        utc(2026, 5, 2, 9, 0, 30), utc(2026, 5, 2, 21)]


def test_day_of_week():
    schedule = schedule_of(entry(daily("09:00:00", dayOfWeek=["mon", "wed", "fri"])), tz="UTC")
    days = [t.date() for t in times_of(schedule, utc(2026, 11, 16), utc(2026, 11, 30))]
    assert days == [date(2026, 11, d) for d in (16, 18, 20, 23, 25, 27)]
    assert {d.weekday() for d in days} == {0, 2, 4}


@pytest.mark.parametrize("period, start, query_from, expected_days", [
    (2, "2026-11-20", utc(2026, 11, 20), [20, 22, 24, 26, 28]),
    (3, "2026-11-20", utc(2026, 11, 20), [20, 23, 26, 29]),
    # counted from the start, not from the query
    (3, "2026-11-20", utc(2026, 11, 24), [26, 29]),
    (2, "2026-11-15", utc(2026, 11, 20), [21, 23, 25, 27, 29]),
])
def test_every_n_days_counts_from_bounds_start(period, start, query_from, expected_days):
    schedule = schedule_of(entry(daily("09:00:00", period=period, boundsPeriod={"start": start})),
                           tz="UTC")
    assert times_of(schedule, query_from, utc(2026, 11, 30)) == [
        utc(2026, 11, d, 9) for d in expected_days]


@pytest.mark.parametrize("period, expected_days", [(1, [18, 25, 2, 9]), (2, [18, 2])])
def test_weekly_on_the_weekday_of_start(period, expected_days):
    repeat = {"frequency": 1, "period": period, "periodUnit": "wk", "timeOfDay": ["10:00:00"],
              "boundsPeriod": {"start": "2026-11-18"}}  # a Wednesday
    found = times_of(schedule_of(entry(repeat)), utc(2026, 11, 1), utc(2026, 12, 15))
    assert [t.day for t in found] == expected_days
    assert all(t.astimezone(NY).weekday() == 2 and t.astimezone(NY).time() == time(10)
               for t in found)


def test_weekly_with_two_times_on_that_day():
    repeat = {"frequency": 2, "period": 1, "periodUnit": "wk", "timeOfDay": ["08:00:00", "20:00:00"],
              "boundsPeriod": {"start": "2026-11-18"}}
    found = times_of(schedule_of(entry(repeat), tz="UTC"), utc(2026, 11, 18), utc(2026, 11, 26))
    assert found == [utc(2026, 11, 18, 8), utc(2026, 11, 18, 20), utc(2026, 11, 25, 8),
                     utc(2026, 11, 25, 20)]


# -- bounds -----------------------------------------------------------------------


@pytest.mark.parametrize("bounds, expected_days", [
    # FHIR's end is inclusive: a date covers its whole local day, a dateTime its instant.
    ({"start": "2026-11-20", "end": "2026-11-22"}, [20, 21, 22]),
    ({"start": "2026-11-20", "end": "2026-11-20"}, [20]),
    ({"start": "2026-11-20", "end": "2026-11-22T08:59:59"}, [20, 21]),
    ({"start": "2026-11-20", "end": "2026-11-22T09:00:00"}, [20, 21, 22]),
    ({"start": "2026-11-20T09:00:01"}, [21, 22, 23, 24]),
    ({"start": "2026-11-20T09:00:00"}, [20, 21, 22, 23, 24]),
    ({"end": "2026-11-21"}, [18, 19, 20, 21]),
    ({"start": "2026-11-20T14:00:00Z", "end": "2026-11-22T13:59:59Z"}, [20, 21]),
    ({"start": "2026-11-20T14:00:00Z", "end": "2026-11-22T14:00:00Z"}, [20, 21, 22]),
    ({"start": "2026-11-22T09:00:00", "end": "2026-11-22T09:00:00"}, [22]),  # one instant
])
def test_bounds_period(bounds, expected_days):
    schedule = schedule_of(entry(daily("09:00:00", boundsPeriod=bounds)))
    assert times_of(schedule, utc(2026, 11, 18), utc(2026, 11, 25)) == [
        utc(2026, 11, d, 14) for d in expected_days]


# -- when + offset --------------------------------------------------------------------


@pytest.mark.parametrize("when, offset, expected_local", [
    (["MORN"], None, [time(8)]),
    (["CM", "CV"], 15, [time(8, 15), time(18, 45)]),  # meals: after
    (["HS"], 30, [time(21, 30)]),  # bedtime: before
])
def test_when_with_offset(when, offset, expected_local):
    repeat = {"frequency": len(when), "period": 1, "periodUnit": "d", "when": when}
    if offset is not None:
        repeat["offset"] = offset
    found = times_of(schedule_of(entry(repeat)), utc(2026, 11, 20, 5), utc(2026, 11, 21, 5))
    assert [t.astimezone(NY).time() for t in found] == expected_local


@pytest.mark.parametrize("code, expected", [
    # ACM 00:10 less 20 minutes is 23:50 of the day before; the first day's dose would fall
    # before the start (local midnight of 11-20) and is not given.
    ("ACM", [(20, time(23, 50)), (21, time(23, 50)), (22, time(23, 50))]),
    # PC 23:50 plus 20 minutes is 00:10 of the day after. Bounds hold instants, so the
    # dose of 11-19's evening (00:10 on 11-20) is inside them, 11-22's (on 11-23) is not.
    ("PC", [(20, time(0, 10)), (21, time(0, 10)), (22, time(0, 10))]),
])
def test_offset_across_midnight_moves_to_the_neighbouring_day(code, expected):
    repeat = {"frequency": 1, "period": 1, "periodUnit": "d", "when": [code], "offset": 20,
              "boundsPeriod": {"start": "2026-11-20", "end": "2026-11-22"}}
    found = times_of(schedule_of(entry(repeat)), utc(2026, 11, 18), utc(2026, 11, 26))
    assert [(t.astimezone(NY).day, t.astimezone(NY).time()) for t in found] == expected


# -- DST ------------------------------------------------------------------------------

DST = [
    # zone, spring-forward day, a time in its gap, fall-back day, a time in its overlap
    ("America/New_York", date(2026, 3, 8), "02:30", date(2026, 11, 1), "01:30"),
    ("Europe/London", date(2026, 3, 29), "01:30", date(2026, 10, 25), "01:30"),
]


@pytest.mark.parametrize("zone, spring, gap, fall, overlap", DST)
@pytest.mark.parametrize("which", ["spring", "fall"])
def test_daily_time_is_the_same_local_time_on_both_sides(zone, spring, gap, fall, overlap, which):
    tz = ZoneInfo(zone)
    day = spring if which == "spring" else fall
    schedule = schedule_of(entry(daily("09:00:00")), tz=zone)
    found = times_of(schedule, *local_days(tz, day - timedelta(days=2), 5))
    assert [t.astimezone(tz).time() for t in found] == [time(9)] * 5
    offsets = [t.astimezone(tz).utcoffset() for t in found]
    assert offsets[0] != offsets[-1]  # the test really crosses the change
    assert [b - a for a, b in zip(found, found[1:])].count(timedelta(hours=24)) == 3


@pytest.mark.parametrize("zone, spring, gap, fall, overlap", DST)
def test_time_in_the_spring_gap_moves_forward_by_the_gap(zone, spring, gap, fall, overlap):
    tz = ZoneInfo(zone)
    hour, minute = map(int, gap.split(":"))
    found = times_of(schedule_of(entry(daily(gap + ":00")), tz=zone), *local_days(tz, spring, 1))
    assert len(found) == 1
    # e.g. 02:30 in New York, which does not exist, is given at 03:30 EDT.
    assert found[0].astimezone(tz).time() == time(hour + 1, minute)
    assert found[0] == datetime.combine(spring, time(hour, minute), tzinfo=tz).astimezone(UTC)
    # one elapsed hour after the same minute of the hour before the gap
    assert found[0] == local(tz, spring.year, spring.month, spring.day, hour - 1, minute) + H


@pytest.mark.parametrize("zone, spring, gap, fall, overlap", DST)
def test_time_in_the_fall_overlap_is_given_once_at_the_first(zone, spring, gap, fall, overlap):
    tz = ZoneInfo(zone)
    hour, minute = map(int, overlap.split(":"))
    found = times_of(schedule_of(entry(daily(overlap + ":00")), tz=zone), *local_days(tz, fall, 1))
    first = datetime.combine(fall, time(hour, minute), tzinfo=tz).astimezone(UTC)
    second = datetime.combine(fall, time(hour, minute, fold=1), tzinfo=tz).astimezone(UTC)
    assert second - first == H  # the time really happens twice
    assert found == [first]


@pytest.mark.parametrize("zone, spring, gap, fall, overlap", DST)
@pytest.mark.parametrize("which, wall_step", [("spring", 9 * H), ("fall", 7 * H)])
def test_every_8_hours_is_elapsed_time_across_dst(zone, spring, gap, fall, overlap, which,
                                                   wall_step):
    tz = ZoneInfo(zone)
    day = (spring if which == "spring" else fall) - timedelta(days=1)
    repeat = every_hours(8, f"{day.isoformat()}T22:00:00")
    found = times_of(schedule_of(entry(repeat), tz=zone), *local_days(tz, day, 3))
    assert [b - a for a, b in zip(found, found[1:])] == [8 * H] * (len(found) - 1)
    assert len(found) >= 6
    # On the wall clock the step across the change is 9 h (spring) or 7 h (fall).
    walls = [t.astimezone(tz).replace(tzinfo=None) for t in found]
    assert wall_step in [b - a for a, b in zip(walls, walls[1:])]


def test_a_time_moved_by_the_gap_onto_another_is_not_given_again():
    # 02:30 does not exist on 8 March: moved forward it is 03:30, where the 03:30 dose
    # already is. One dose of one tablet, never a two-tablet release.
    schedule = schedule_of(entry(daily("02:30:00", "03:30:00")))
    doses = doses_between(schedule, *local_days(NY, date(2026, 3, 7), 3))
    assert [(d.scheduled_at, d.quantity) for d in doses] == [
        (local(NY, 2026, 3, 7, 2, 30), 1), (local(NY, 2026, 3, 7, 3, 30), 1),
        (local(NY, 2026, 3, 8, 3, 30), 1),
        (local(NY, 2026, 3, 9, 2, 30), 1), (local(NY, 2026, 3, 9, 3, 30), 1)]


@pytest.mark.parametrize("zone, day, gap_time, landing", [
    ("America/New_York", date(2026, 3, 8), "02:30:00", "03:30:00"),
    ("Europe/London", date(2026, 3, 29), "01:15:00", "02:15:00"),
    ("Australia/Lord_Howe", date(2026, 10, 4), "02:10:00", "02:40:00"),  # a 30-minute gap
    ("America/Santiago", date(2026, 9, 6), "00:30:00", "01:30:00"),  # midnight does not exist
])
def test_dst_never_merges_two_doses_into_one_release(zone, day, gap_time, landing):
    tz = ZoneInfo(zone)
    schedule = schedule_of(entry(daily(gap_time, landing), quantity=2), tz=zone)
    doses = doses_between(schedule, *local_days(tz, day, 1))
    moved = datetime.combine(day, time.fromisoformat(gap_time), tzinfo=tz).astimezone(UTC)
    assert moved.astimezone(tz).time() == time.fromisoformat(landing)  # it really lands there
    assert [(d.scheduled_at, d.quantity) for d in doses] == [(moved, 2)]
    # and the days around keep both doses
    before = doses_between(schedule, *local_days(tz, day - timedelta(days=1), 1))
    assert [d.quantity for d in before] == [2, 2]


def test_when_with_offset_crossing_midnight_in_a_gap_is_not_doubled():
    # PC 23:50 + 40 min is 00:30 of the next day; Santiago's clocks skip 00:00-01:00 on
    # 6 September 2026, moving it to 01:30, where MORN 00:50 + 40 min has its dose.
    schedule = parse_schedule({
        "schema": "dispenser.schedule/1", "version": 1, "issued_at": "2026-01-01T00:00:00Z",
        "timezone": "America/Santiago", "routine": {"PC": "23:50", "MORN": "00:50"},
        "medications": [{"id": "med", "name": "Med", "compartment": 1, "dosage": [entry(
            {"frequency": 2, "period": 1, "periodUnit": "d", "when": ["PC", "MORN"],
             "offset": 40})]}]})
    tz = ZoneInfo("America/Santiago")
    doses = doses_between(schedule, *local_days(tz, date(2026, 9, 4), 4))
    by_day = {}
    for dose in doses:
        by_day.setdefault(dose.scheduled_at.astimezone(tz).date().day, []).append(
            (dose.scheduled_at.astimezone(tz).time(), dose.quantity))
    assert by_day[5] == [(time(0, 30), 1), (time(1, 30), 1)]
    assert by_day[6] == [(time(1, 30), 1)]  # one release of one tablet, not two
    assert by_day[7] == [(time(0, 30), 1), (time(1, 30), 1)]


# -- every N hours --------------------------------------------------------------------


@pytest.mark.parametrize("hours, frequency, step", [(8, 1, 8 * H), (24, 3, 8 * H),
                                                    (1.5, 1, 90 * M), (1, 3, 20 * M)])
def test_every_period_over_frequency(hours, frequency, step):
    repeat = every_hours(hours, "2026-05-01T06:00:00Z", frequency=frequency)
    found = times_of(schedule_of(entry(repeat)), utc(2026, 5, 1, 12), utc(2026, 5, 2, 12))
    assert found[0] >= utc(2026, 5, 1, 12)
    assert (found[0] - utc(2026, 5, 1, 6)) % step == timedelta(0)  # counted from the start
    assert [b - a for a, b in zip(found, found[1:])] == [step] * (len(found) - 1)
    assert len(found) == timedelta(hours=24) // step


def test_every_hours_nothing_before_start():
    repeat = every_hours(6, "2026-05-01T06:00:00Z")
    found = times_of(schedule_of(entry(repeat)), utc(2026, 4, 30), utc(2026, 5, 2, 0, 1))
    assert found == [utc(2026, 5, 1, h) for h in (6, 12, 18)] + [utc(2026, 5, 2, 0)]


# -- count ------------------------------------------------------------------------------


@pytest.mark.parametrize("repeat, expected", [
    (daily("09:00:00", count=3, boundsPeriod={"start": "2026-11-20"}),
     [utc(2026, 11, d, 14) for d in (20, 21, 22)]),
    # counted from a start mid-day: the first morning is not a dose
    (daily("08:00:00", "20:00:00", count=3, boundsPeriod={"start": "2026-11-20T12:00:00"}),
     [utc(2026, 11, 21, 1), utc(2026, 11, 21, 13), utc(2026, 11, 22, 1)]),
    (daily("09:00:00", period=2, count=2, boundsPeriod={"start": "2026-11-20"}),
     [utc(2026, 11, 20, 14), utc(2026, 11, 22, 14)]),
    (daily("09:00:00", dayOfWeek=["mon"], count=2, boundsPeriod={"start": "2026-11-20"}),
     [utc(2026, 11, 23, 14), utc(2026, 11, 30, 14)]),
    ({"frequency": 1, "period": 1, "periodUnit": "wk", "timeOfDay": ["09:00:00"], "count": 2,
      "boundsPeriod": {"start": "2026-11-20"}}, [utc(2026, 11, 20, 14), utc(2026, 11, 27, 14)]),
    (every_hours(12, "2026-11-20T09:00:00", count=4),
     [utc(2026, 11, 20, 14), utc(2026, 11, 21, 2), utc(2026, 11, 21, 14), utc(2026, 11, 22, 2)]),
    # the end comes first
    (daily("09:00:00", count=10, boundsPeriod={"start": "2026-11-20", "end": "2026-11-21"}),
     [utc(2026, 11, 20, 14), utc(2026, 11, 21, 14)]),
    (every_hours(12, "2026-11-20T09:00:00", count=10,
                 boundsPeriod={"start": "2026-11-20T09:00:00", "end": "2026-11-21T08:59:59"}),
     [utc(2026, 11, 20, 14), utc(2026, 11, 21, 2)]),
])
def test_count(repeat, expected):
    schedule = schedule_of(entry(repeat))
    assert times_of(schedule, utc(2026, 11, 1), utc(2027, 1, 1)) == expected
    # a range starting after the first doses still counts from the start
    later = expected[1] + timedelta(seconds=1)
    assert times_of(schedule, later, utc(2027, 1, 1)) == expected[2:]


def test_count_spanning_many_years_is_still_counted():
    repeat = daily("09:00:00", count=10_000, boundsPeriod={"start": "2026-01-01"})
    schedule = schedule_of(entry(repeat), tz="UTC")
    last = datetime(2026, 1, 1, 9, tzinfo=UTC) + timedelta(days=9_999)
    assert times_of(schedule, last - timedelta(days=2), last + timedelta(days=5)) == [
        last - timedelta(days=2), last - timedelta(days=1), last]


# -- titration and merging --------------------------------------------------------------


def test_titration_with_an_inclusive_end_hands_over_at_midnight():
    schedule = schedule_of(
        entry(daily("09:00:00", boundsPeriod={"start": "2026-11-20", "end": "2026-11-22"}), 1),
        entry(daily("09:00:00", boundsPeriod={"start": "2026-11-23"}), 2),
    )
    doses = doses_between(schedule, utc(2026, 11, 20), utc(2026, 11, 25))
    assert [(d.scheduled_at.day, d.quantity) for d in doses] == [(20, 1), (21, 1), (22, 1), (23, 2),
                                                                 (24, 2)]


def test_titration_at_an_instant_hands_over_the_second_after():
    schedule = schedule_of(
        entry(daily("09:00:00", "21:00:00", boundsPeriod={"end": "2026-11-21T12:00:00"}), 1),
        entry(daily("09:00:00", "21:00:00", boundsPeriod={"start": "2026-11-21T12:00:01"}), 2),
    )
    doses = doses_between(schedule, *local_days(NY, date(2026, 11, 21), 1))
    assert [(d.scheduled_at.astimezone(NY).hour, d.quantity) for d in doses] == [(9, 1), (21, 2)]


def test_a_count_ends_its_entry_at_its_last_dose():
    # Three daily doses from the 20th (20, 21, 22); the next entry may start the second
    # after the last one.
    schedule = schedule_of(
        entry(daily("09:00:00", count=3, boundsPeriod={"start": "2026-11-20"}), 1),
        entry(daily("09:00:00", boundsPeriod={"start": "2026-11-22T09:00:01"}), 2),
    )
    doses = doses_between(schedule, utc(2026, 11, 19), utc(2026, 11, 25))
    assert [(d.scheduled_at.day, d.quantity) for d in doses] == [(20, 1), (21, 1), (22, 1), (23, 2),
                                                                 (24, 2)]


def test_titration_changing_times():
    schedule = schedule_of(
        entry(daily("09:00:00", boundsPeriod={"end": "2026-11-21"})),
        entry(daily("09:00:00", "21:00:00", boundsPeriod={"start": "2026-11-22"})),
    )
    found = times_of(schedule, *local_days(NY, date(2026, 11, 20), 4))
    assert [t.astimezone(NY).replace(tzinfo=None) for t in found] == [
        datetime(2026, 11, 20, 9), datetime(2026, 11, 21, 9), datetime(2026, 11, 22, 9),
        datetime(2026, 11, 22, 21), datetime(2026, 11, 23, 9), datetime(2026, 11, 23, 21)]


def test_occurrences_keeps_one_entry_apart():
    schedule = schedule_of(entry(daily("09:00:00", "21:00:00")), tz="UTC")
    (dosage,) = schedule.medications[0].dosages
    assert occurrences(dosage, schedule.tz, utc(2026, 1, 1), utc(2026, 1, 2)) == [
        utc(2026, 1, 1, 9), utc(2026, 1, 1, 21)]


# -- windows ---------------------------------------------------------------------------


@pytest.mark.parametrize("window, start, end", [
    (None, -30 * M, 120 * M),
    ({"before_min": 0, "after_min": 60}, timedelta(0), 60 * M),
    ({"before_min": 15, "after_min": 0}, -15 * M, timedelta(0)),
    ({"before_min": 1440, "after_min": 1440}, -24 * H, 12 * H - 1440 * M + 12 * H),
])
def test_window_from_the_medication(window, start, end):
    schedule = schedule_of(entry(daily("09:00:00", "21:00:00")), tz="UTC", window=window)
    dose = doses_between(schedule, utc(2026, 5, 1, 8), utc(2026, 5, 1, 10))[0]
    assert (dose.window_start, dose.window_end) == (utc(2026, 5, 1, 9) + start,
                                                    min(utc(2026, 5, 1, 9) + end,
                                                        utc(2026, 5, 1, 21) + start))


def test_windows_of_one_medication_are_clipped_where_they_would_overlap():
    # Every hour with the default window (30 before, 120 after): each window closes
    # when the next opens, 30 minutes after its dose.
    schedule = schedule_of(entry(every_hours(1, "2026-05-01T00:00:00Z")))
    doses = doses_between(schedule, utc(2026, 5, 1, 6), utc(2026, 5, 1, 9))
    assert [(d.window_start, d.window_end) for d in doses] == [
        (utc(2026, 5, 1, h, 0) - 30 * M, utc(2026, 5, 1, h, 30)) for h in (6, 7, 8)]


def test_clipping_also_against_a_dose_outside_the_range():
    schedule = schedule_of(entry(every_hours(1, "2026-05-01T00:00:00Z")))
    (dose,) = doses_between(schedule, utc(2026, 5, 1, 6), utc(2026, 5, 1, 6, 1))
    assert dose.window_end == utc(2026, 5, 1, 6, 30)


def test_last_dose_of_a_course_keeps_its_full_window():
    schedule = schedule_of(entry(every_hours(1, "2026-05-01T00:00:00Z", count=3)))
    doses = doses_between(schedule, utc(2026, 5, 1), utc(2026, 5, 2))
    assert [d.window_end for d in doses] == [utc(2026, 5, 1, 0, 30), utc(2026, 5, 1, 1, 30),
                                             utc(2026, 5, 1, 4)]


def test_windows_of_different_medications_may_overlap():
    meds = [{"id": name, "name": name, "compartment": number, "dosage": [entry(daily("09:00:00"))]}
            for number, name in ((1, "a"), (2, "b"))]
    doses = doses_between(schedule_of(medications=meds, tz="UTC"), utc(2026, 5, 1), utc(2026, 5, 2))
    assert [(d.medication_id, d.window_start, d.window_end) for d in doses] == [
        ("a", utc(2026, 5, 1, 8, 30), utc(2026, 5, 1, 11)),
        ("b", utc(2026, 5, 1, 8, 30), utc(2026, 5, 1, 11))]


def test_extreme_spacing_can_close_a_window_before_its_dose():
    schedule = schedule_of(entry(daily("09:00:00", "09:10:00")), tz="UTC")
    first, second = doses_between(schedule, utc(2026, 5, 1), utc(2026, 5, 2))
    assert first.window_start == utc(2026, 5, 1, 8, 30)
    assert first.window_end == second.window_start == utc(2026, 5, 1, 8, 40)
    assert first.window_start < first.window_end


# -- properties over random daily schedules ---------------------------------------------

ZONES = ["America/New_York", "Europe/London", "Australia/Lord_Howe", "UTC", "Asia/Kolkata"]
clock = st.builds(lambda h, m: f"{h:02d}:{m:02d}:00",
                  st.integers(0, 23), st.sampled_from([0, 1, 30, 59]))


@st.composite
def medications(draw):
    count = draw(st.integers(1, 4))
    result = []
    for number in range(1, count + 1):
        times = draw(st.lists(clock, min_size=1, max_size=4, unique=True))
        kind = draw(st.sampled_from(["daily", "days", "period", "hours"]))
        if kind == "daily":
            repeat = daily(*times)
        elif kind == "days":
            repeat = daily(*times, dayOfWeek=draw(st.lists(st.sampled_from(
                ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]), min_size=1, unique=True)))
        elif kind == "period":
            repeat = daily(*times, period=draw(st.integers(2, 4)),
                           boundsPeriod={"start": "2026-01-0" + str(draw(st.integers(1, 9)))})
        else:
            repeat = every_hours(draw(st.sampled_from([1, 2, 4.5, 8, 12, 36])),
                                 f"2026-01-01T{draw(clock)}")
        before, after = draw(st.integers(0, 1440)), draw(st.integers(1, 1440))
        result.append({"id": f"m{number}", "name": f"M{number}", "compartment": number,
                       "window": {"before_min": before, "after_min": after},
                       "dosage": [entry(repeat, draw(st.integers(1, 3)))]})
    return result


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # examples: tests/depth.py
@given(meds=medications(), zone=st.sampled_from(ZONES),
       start=st.datetimes(datetime(2026, 1, 1), datetime(2026, 12, 31)),
       days=st.integers(0, 12), split=st.floats(0, 1))
def test_doses_are_sorted_unique_and_windows_never_overlap(meds, zone, start, days, split):
    schedule = schedule_of(medications=meds, tz=zone)
    start = start.replace(tzinfo=UTC)
    end = start + timedelta(days=days, hours=7)
    doses = doses_between(schedule, start, end)

    assert doses == sorted(doses, key=lambda d: (d.scheduled_at, d.medication_id))
    assert len({d.key for d in doses}) == len(doses)
    for dose in doses:
        medication = schedule.medication(dose.medication_id)
        assert start <= dose.scheduled_at < end
        assert dose.compartment == medication.compartment
        assert dose.window_start == dose.scheduled_at - medication.window_before
        assert dose.window_start < dose.window_end <= dose.scheduled_at + medication.window_after
    for medication in schedule.medications:
        own = [d for d in doses if d.medication_id == medication.id]
        assert all(a.window_end <= b.window_start for a, b in zip(own, own[1:]))

    # Splitting the range changes nothing: neighbours outside it are seen.
    middle = start + (end - start) * split
    assert doses_between(schedule, start, middle) + doses_between(schedule, middle, end) == doses


@settings(deadline=None)  # examples: tests/depth.py (100, 300 with --deep)
@given(times=st.lists(clock, min_size=1, max_size=4, unique=True), zone=st.sampled_from(ZONES),
       first=st.dates(date(2026, 1, 1), date(2026, 12, 20)))
def test_daily_doses_are_the_named_local_times(times, zone, first):
    tz = ZoneInfo(zone)
    schedule = schedule_of(entry(daily(*times)), tz=zone)
    found = times_of(schedule, *local_days(tz, first, 7))
    expected = sorted({
        datetime.combine(first + timedelta(days=n), time.fromisoformat(t), tzinfo=tz)
        .astimezone(UTC)
        for n in range(7) for t in times})
    assert found == [t for t in expected if local_days(tz, first, 7)[0] <= t]


def test_spring_forward_collision_is_one_release_of_one_tablet():
    """End to end on the engine: v1 released two tablets at 03:30 on 8 March."""
    from support import Rig
    from support import daily as daily_medication
    from support import schedule as document

    rig = Rig(document(daily_medication("a", 1, ["02:30", "03:30"])), "2026-03-07T12:00:00",
              stock={"a": 10})
    rig.press("2026-03-08T03:31:00")
    assert [(e["data"]["scheduled_at"], e["data"]["quantity"]) for e in rig.events("dose.released")] == [
        ("2026-03-08T07:30:00Z", 1)]
    assert rig.moves == [(1, 1)]
