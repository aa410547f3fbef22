"""The schedule document's v2 meanings (CONTRACT section 2): units, inclusive ends,
overlapping entries, FHIR time, sane dates. Each test fails on the v1 parser."""
from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from dispenser.schedule import MAX_UNITS_PER_DOSE, MAX_UNITS_PER_PERIOD, ScheduleError, parse_schedule
from dispenser.timeutil import UTC

D0 = "medications[0].dosage[0]"
Q0 = f"{D0}.doseAndRate[0].doseQuantity"
R0 = f"{D0}.timing.repeat"
LIMIT = f"{D0}.maxDosePerPeriod"


def document(*dosage: dict, strength: dict | None = None, **top) -> dict:
    medication = {"id": "med", "name": "Med 50 mg", "compartment": 1, "dosage": list(dosage)}
    if strength is not None:
        medication["strength"] = strength
    doc = {"schema": "dispenser.schedule/1", "version": 1, "issued_at": "2026-01-01T00:00:00Z",
           "timezone": "America/New_York", "routine": {"PC": "23:50", "ACM": "00:10", "HS": "22:00",
                                                       "CV": "20:00"},
           "medications": [medication]}
    doc.update(top)
    return doc


def daily(quantity: dict | None = None, times=("09:00:00",), **repeat) -> dict:
    return {"timing": {"repeat": {"frequency": len(times), "period": 1, "periodUnit": "d",
                                  "timeOfDay": list(times), **repeat}},
            "doseAndRate": [{"doseQuantity": quantity or {"value": 1}}]}


def as_needed(quantity: dict, numerator: dict) -> dict:
    return {"asNeededBoolean": True,
            "timing": {"repeat": {"frequency": 1, "period": 6, "periodUnit": "h"}},
            "maxDosePerPeriod": {"numerator": numerator, "denominator": {"value": 1, "unit": "d"}},
            "doseAndRate": [{"doseQuantity": quantity}]}


def problems(doc: dict) -> list[str]:
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(doc)
    return caught.value.problems


MG50 = {"value": 50, "unit": "mg"}


# -- units ------------------------------------------------------------------------------


@pytest.mark.parametrize("quantity, strength, tablets", [
    ({"value": 2}, None, 2),
    ({"value": 2, "unit": "tablet"}, None, 2),
    ({"value": 2, "unit": "Tablets"}, None, 2),
    ({"value": 1, "unit": "TAB"}, None, 1),
    ({"value": 2, "system": "http://unitsofmeasure.org", "code": "{tbl}"}, None, 2),
    ({"value": 2, "unit": "capsules", "code": "{capsule}"}, None, 2),
    ({"value": 1, "code": "1"}, None, 1),
    ({"value": 50, "unit": "mg"}, MG50, 1),
    ({"value": 100, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"}, MG50, 2),
    ({"value": 100.0, "code": "mg"}, MG50, 2),
    ({"value": 2, "unit": "tablet"}, MG50, 2),
    ({"value": 5, "unit": "mL"}, {"value": 2.5, "unit": "mL"}, 2),
])
def test_dose_units(quantity, strength, tablets):
    doc = document(daily(quantity), strength=strength)
    assert parse_schedule(doc).medications[0].dosages[0].quantity == tablets


@pytest.mark.parametrize("quantity, strength, problem", [
    # v1 ignored every unit: 75 mg became 75 tablets.
    ({"value": 75, "unit": "mg"}, MG50, f"{Q0}.value: 75 mg is not a whole number of tablets of 50 mg"),
    ({"value": 25, "unit": "mg"}, MG50, f"{Q0}.value: 25 mg is not a whole number of tablets of 50 mg"),
    ({"value": 50, "unit": "mg"}, None,
     f'{Q0}.unit: "mg" is neither a count unit (tablet, capsule, {{tbl}}) nor the unit of the '
     "medication's strength (none is given)"),
    ({"value": 1, "unit": "g"}, MG50,
     f'{Q0}.unit: "g" is neither a count unit (tablet, capsule, {{tbl}}) nor the unit of the '
     'medication\'s strength ("mg")'),
    ({"value": 50, "unit": "MG"}, MG50,  # UCUM is case-sensitive: MG is not mg
     f'{Q0}.unit: "MG" is neither a count unit (tablet, capsule, {{tbl}}) nor the unit of the '
     'medication\'s strength ("mg")'),
    ({"value": 1, "unit": "capsule", "system": "http://snomed.info/sct", "code": "732937005"}, None,
     f'{Q0}.code: "732937005" is neither a count unit (tablet, capsule, {{tbl}}) nor the unit of the '
     "medication's strength (none is given)"),
    ({"value": 1, "unit": "puff"}, None,
     f'{Q0}.unit: "puff" is neither a count unit (tablet, capsule, {{tbl}}) nor the unit of the '
     "medication's strength (none is given)"),
    ({"value": 50, "unit": "tablet", "code": "mg"}, MG50, f'{Q0}.unit: "tablet" does not mean the same as code "mg"'),
    ({"value": 1, "unit": ""}, None, f'{Q0}.unit: must be a non-empty string, not ""'),
    ({"value": 1, "code": 7}, None, f"{Q0}.code: must be a non-empty string, not 7"),
    ({"value": 0.5, "unit": "tablet"}, None, f"{Q0}.value: must be a whole number of tablets, not 0.5"),
    ({"value": 1000}, None, f"{Q0}.value: 1000 tablets a dose is more than the most a dispenser gives "
                            f"({MAX_UNITS_PER_DOSE})"),
    ({"value": 1e300}, None, None),
    ({"value": 5000, "unit": "mg"}, MG50, f"{Q0}.value: 100 tablets a dose is more than the most a "
                                          f"dispenser gives ({MAX_UNITS_PER_DOSE})"),
])
def test_dose_units_refused(quantity, strength, problem):
    found = problems(document(daily(quantity), strength=strength))
    if problem is None:
        assert len(found) == 1 and found[0].startswith(f"{Q0}.value: ") and "more than" in found[0]
    else:
        assert found == [problem]


def test_the_most_tablets_a_dose_may_count():
    doc = document(daily({"value": MAX_UNITS_PER_DOSE}))
    assert parse_schedule(doc).medications[0].dosages[0].quantity == MAX_UNITS_PER_DOSE
    assert problems(document(daily({"value": MAX_UNITS_PER_DOSE + 1})))


def test_as_needed_limit_in_milligrams_is_kept_in_tablets():
    doc = document(as_needed({"value": 50, "unit": "mg"}, {"value": 150, "unit": "mg"}), strength=MG50)
    prn = parse_schedule(doc).medications[0].as_needed
    assert (prn.quantity, prn.max_units) == (1, 3)


@pytest.mark.parametrize("numerator, problem", [
    ({"value": 125, "unit": "mg"}, f"{LIMIT}.numerator.value: 125 mg is not a whole number of tablets of 50 mg"),
    ({"value": 3, "unit": "puff"}, f'{LIMIT}.numerator.unit: "puff" is neither a count unit (tablet, '
                                   "capsule, {tbl}) nor the unit of the medication's strength (\"mg\")"),
    ({"value": 2.5}, f"{LIMIT}.numerator.value: must be a whole number of tablets, not 2.5"),
    ({"value": 0}, f"{LIMIT}.numerator.value: must be a positive whole number of tablets, not 0"),
    ({"value": 1000}, f"{LIMIT}.numerator.value: 1000 tablets in one period is more than the most a "
                      f"dispenser gives ({MAX_UNITS_PER_PERIOD})"),
])
def test_as_needed_limit_units_refused(numerator, problem):
    assert problems(document(as_needed({"value": 1}, numerator), strength=MG50)) == [problem]


def test_strength_is_read_before_the_dosages_whatever_the_key_order():
    medication = {"dosage": [daily({"value": 100, "unit": "mg"})], "strength": MG50,
                  "id": "med", "name": "Med", "compartment": 1}
    doc = document(daily(), medications=[medication])
    assert parse_schedule(doc).medications[0].dosages[0].quantity == 2


# -- boundsPeriod.end is inclusive ------------------------------------------------------------


def bounds(**period) -> dict:
    return document(daily(boundsPeriod=period))


@pytest.mark.parametrize("period, start, end", [
    # a date alone covers its whole local day: kept as the next local midnight (EST: 05:00 UTC)
    ({"start": "2026-11-20", "end": "2026-11-26"}, datetime(2026, 11, 20, 5), datetime(2026, 11, 27, 5)),
    ({"start": "2026-11-20", "end": "2026-11-20"}, datetime(2026, 11, 20, 5), datetime(2026, 11, 21, 5)),
    # a dateTime covers up to and including that second
    ({"end": "2026-11-26T09:00:00"}, None, datetime(2026, 11, 26, 14, 0, 1)),
    ({"end": "2026-11-26T09:00:00Z"}, None, datetime(2026, 11, 26, 9, 0, 1)),
    ({"start": "2026-11-26T09:00:00", "end": "2026-11-26T09:00:00"},
     datetime(2026, 11, 26, 14), datetime(2026, 11, 26, 14, 0, 1)),
    # the day the clocks go back is 25 hours long; the end is still the next midnight
    ({"end": "2026-11-01"}, None, datetime(2026, 11, 2, 5)),
    ({"end": "2026-03-07"}, None, datetime(2026, 3, 8, 5)),
    ({"end": "2199-12-31T23:59:59"}, None, datetime(2200, 1, 1, 5)),
])
def test_bounds_end_is_inclusive(period, start, end):
    dosage = parse_schedule(bounds(**period)).medications[0].dosages[0]
    assert dosage.bounds_start == (start and start.replace(tzinfo=UTC))
    assert dosage.bounds_end == end.replace(tzinfo=UTC)


def test_a_date_end_in_a_zone_whose_midnight_does_not_exist():
    # Santiago skips 00:00-01:00 on 6 September 2026: the 5th ends at 01:00 of the 6th.
    doc = document(daily(boundsPeriod={"end": "2026-09-05"}), timezone="America/Santiago")
    dosage = parse_schedule(doc).medications[0].dosages[0]
    assert dosage.bounds_end == datetime(2026, 9, 6, 4, tzinfo=UTC)


@pytest.mark.parametrize("period", [
    {"start": "2026-11-20", "end": "2026-11-19"},
    {"start": "2026-11-20T09:00:00", "end": "2026-11-20T08:59:59"},
    {"start": "2026-11-20T09:00:00Z", "end": "2026-11-20T08:00:00-00:30"},
])
def test_an_end_before_the_start_is_refused(period):
    assert problems(bounds(**period)) == [f"{R0}.boundsPeriod.end: is before start"]


# -- two entries of one medication never overlap ------------------------------------------


def entries(*periods: dict, **repeat) -> dict:
    return document(*[daily(boundsPeriod=p, **repeat) if p else daily(**repeat) for p in periods])


@pytest.mark.parametrize("first, second, words", [
    # the contract's v1 titration: end and next start on one date share that whole day
    ({"start": "2026-11-20", "end": "2026-11-27"}, {"start": "2026-11-27"}, "2026-11-27"),
    ({"end": "2026-11-30"}, {"start": "2026-11-27"}, "2026-11-27 to 2026-11-30"),
    ({"start": "2026-11-27"}, {"end": "2026-11-30"}, "2026-11-27 to 2026-11-30"),
    ({}, {"start": "2026-11-27"}, "from 2026-11-27"),
    ({}, {"end": "2026-11-30"}, "until 2026-11-30"),
    ({}, {}, "neither has a boundsPeriod"),
    ({"end": "2026-11-27T09:00:00"}, {"start": "2026-11-27T09:00:00"}, "2026-11-27"),
])
def test_overlapping_entries_are_refused_naming_both(first, second, words):
    assert problems(entries(first, second)) == [
        f"medications[0].dosage[1].timing.repeat.boundsPeriod: overlaps medications[0].dosage[0] ({words})"]


@pytest.mark.parametrize("first, second", [
    ({"start": "2026-11-20", "end": "2026-11-26"}, {"start": "2026-11-27"}),
    ({"end": "2026-11-27T08:59:59"}, {"start": "2026-11-27T09:00:00"}),
    ({"start": "2026-11-27"}, {"end": "2026-11-26"}),  # order in the list does not matter
])
def test_entries_that_hand_over_are_accepted(first, second):
    assert len(parse_schedule(entries(first, second)).medications[0].dosages) == 2


def test_every_overlapping_pair_is_named():
    found = problems(entries({"end": "2026-11-27"}, {"start": "2026-11-27", "end": "2026-11-28"},
                             {"start": "2026-11-28"}))
    assert found == [
        "medications[0].dosage[1].timing.repeat.boundsPeriod: overlaps medications[0].dosage[0] (2026-11-27)",
        "medications[0].dosage[2].timing.repeat.boundsPeriod: overlaps medications[0].dosage[1] (2026-11-28)"]


def test_a_count_ends_the_entry_at_its_last_dose():
    counted = daily(count=3, boundsPeriod={"start": "2026-11-20"})  # 20, 21, 22 at 09:00
    after = daily(boundsPeriod={"start": "2026-11-22T09:00:01"})
    assert len(parse_schedule(document(counted, after)).medications[0].dosages) == 2
    at_the_last = daily(boundsPeriod={"start": "2026-11-22T09:00:00"})
    assert problems(document(counted, at_the_last)) == [
        "medications[0].dosage[1].timing.repeat.boundsPeriod: overlaps medications[0].dosage[0] (2026-11-22)"]


def test_an_hourly_count_ends_at_its_last_dose_too():
    counted = {"timing": {"repeat": {"frequency": 1, "period": 8, "periodUnit": "h", "count": 3,
                                     "boundsPeriod": {"start": "2026-11-20T06:00:00"}}},
               "doseAndRate": [{"doseQuantity": {"value": 1}}]}
    after = daily(boundsPeriod={"start": "2026-11-20T22:00:01"})  # last dose 22:00
    assert len(parse_schedule(document(counted, after)).medications[0].dosages) == 2


def test_different_medications_may_overlap():
    doc = entries({})
    other = copy.deepcopy(doc["medications"][0])
    other.update(id="other", compartment=2)
    doc["medications"].append(other)
    assert len(parse_schedule(doc).medications) == 2


# -- times on one instant -------------------------------------------------------------------


@pytest.mark.parametrize("routine, offset, problem", [
    # ACM is "before" its event, PC "after": 00:10 - 10 is 00:00 of the day, 23:50 + 10
    # 00:00 of the next, where the next day's ACM dose is: one instant, two doses (v1
    # summed them into one release of two tablets).
    ({"ACM": "00:10", "PC": "23:50"}, 10,
     "when[1]: gives 00:00 (day after), the clock time when[0] gives (00:00): two doses at one instant"),
    ({"ACM": "00:10", "PC": "23:50"}, 730,
     "when[1]: gives 12:00 (day after), the clock time when[0] gives (12:00 (day before)): "
     "two doses at one instant"),
    ({"ACM": "23:30", "PC": "22:30"}, 30, "when[1]: gives 23:00, already given by when[0]"),
    ({"ACM": "00:10", "PC": "23:50"}, 20, None),  # 23:50 (day before) and 00:10 (day after)
])
def test_when_with_offset_naming_one_instant_twice_is_refused(routine, offset, problem):
    repeat = {"frequency": 2, "period": 1, "periodUnit": "d", "when": ["ACM", "PC"], "offset": offset}
    doc = document({"timing": {"repeat": repeat}, "doseAndRate": [{"doseQuantity": {"value": 1}}]},
                   routine=routine)
    if problem is None:
        assert len(parse_schedule(doc).medications[0].dosages[0].times) == 2
    else:
        assert problems(doc) == [f"{R0}.{problem}"]


# -- dates: a sane range, never a crash ------------------------------------------------------


@pytest.mark.parametrize("field, text", [
    ("end", "9999-12-31T23:59:59"),  # crashed v1 (datetime overflow)
    ("end", "9999-12-31"),
    ("start", "0001-01-01"),
    ("start", "0001-01-01T00:00:00+14:00"),
    ("end", "2200-01-01"),
    ("start", "1999-12-31T23:59:59Z"),
])
def test_dates_outside_the_years_a_schedule_may_name_are_refused(field, text):
    found = problems(bounds(**{field: text}))
    assert found == [f'{R0}.boundsPeriod.{field}: must be in the years 2000..2199, not "{text}"']


@pytest.mark.parametrize("text", ["9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+01:00",
                                  "1970-01-01T00:00:00Z", "2200-01-01T00:00:00Z"])
def test_issued_at_outside_the_sane_years_is_refused(text):
    found = problems(document(daily(), issued_at=text))
    assert len(found) == 1 and found[0].startswith("issued_at: "), found


@pytest.mark.parametrize("text", ["2000-01-01T00:00:00Z", "2199-12-31T23:59:59Z"])
def test_issued_at_at_the_edges_is_accepted(text):
    assert parse_schedule(document(daily(), issued_at=text)).issued_at.year == int(text[:4])


# Spellings datetime.fromisoformat reads that the contract's one form (RFC 3339) does not.
OTHER_SPELLINGS = ["2026-12-01", "20261201T0900Z", "20261201T090000Z", "2026-12-01 09:00:00Z",
                   "2026-W48-2T09:00:00Z", "2026-12-01T09:00Z", "2026-12-01T09Z", "2026-12-01T09:00:00+0000",
                   "2026-12-01T09:00:00,5Z", "2026-12-01T09:00:00+01:00:30", "2026-12-01T09:00:00+00:60",
                   "2026-12-01t09:00:00z", "2026-12-01T09:00:00Z\n", "\uff12026-12-01T09:00:00Z"]


@pytest.mark.parametrize("field", ["issued_at", "expires_at"])
@pytest.mark.parametrize("text", OTHER_SPELLINGS)
def test_other_iso_spellings_of_the_documents_times_are_refused(field, text):
    found = problems(document(daily(), **{field: text}))
    assert found == [f"{field}: must be an ISO date-time in RFC 3339 form, YYYY-MM-DDTHH:MM:SS "
                     f"with Z or an offset +HH:MM, not {json.dumps(text, ensure_ascii=False)}"], found


@pytest.mark.parametrize("text, utc", [
    ("2026-12-01T09:00:00Z", datetime(2026, 12, 1, 9, tzinfo=UTC)),
    ("2026-12-01T09:00:00.250Z", datetime(2026, 12, 1, 9, 0, 0, 250000, tzinfo=UTC)),
    ("2026-12-01T04:00:00-05:00", datetime(2026, 12, 1, 9, tzinfo=UTC)),
    ("2026-12-01T09:00:00-00:00", datetime(2026, 12, 1, 9, tzinfo=UTC)),
])
def test_rfc_3339_times_are_read(text, utc):
    assert parse_schedule(document(daily(), issued_at=text, expires_at=text)).issued_at == utc


def test_a_time_of_the_right_shape_that_is_no_time_is_named():
    assert problems(document(daily(), issued_at="2026-02-30T09:00:00Z")) == [
        'issued_at: "2026-02-30T09:00:00Z" is not a real date and time']


def test_the_last_day_a_schedule_may_name_is_a_whole_day():
    doc = bounds(start="2199-12-31", end="2199-12-31")
    dosage = parse_schedule(doc).medications[0].dosages[0]
    assert dosage.bounds_end - dosage.bounds_start == timedelta(days=1)


def test_a_split_dose_is_two_entries_that_never_name_one_time():
    """1 tablet in the morning, 2 at night: FHIR's way, accepted; a shared time is still refused."""
    from dispenser.schedule import ScheduleError, parse_schedule
    from dispenser.scheduler import doses_between
    from support import local

    def entry(times, quantity):
        return {"timing": {"repeat": {"frequency": len(times), "period": 1, "periodUnit": "d",
                                      "timeOfDay": times}},
                "doseAndRate": [{"doseQuantity": {"value": quantity}}]}

    doc = {"schema": "dispenser.schedule/1", "version": 1, "issued_at": "2026-11-20T09:00:00Z",
           "timezone": "America/New_York",
           "medications": [{"id": "lithium", "name": "Lithium", "compartment": 1,
                            "dosage": [entry(["08:00:00"], 1), entry(["21:00:00"], 2)]}]}
    schedule = parse_schedule(doc)
    doses = doses_between(schedule, local("2026-11-24T00:00:00"), local("2026-11-25T00:00:00"))
    assert [(d.scheduled_at.isoformat(), d.quantity) for d in doses] == \
        [("2026-11-24T13:00:00+00:00", 1), ("2026-11-25T02:00:00+00:00", 2)]
    doc["medications"][0]["dosage"][1] = entry(["21:00:00", "08:00:00"], 2)
    try:
        parse_schedule(doc)
    except ScheduleError as error:
        assert any("overlaps medications[0].dosage[0]" in p for p in error.problems)
    else:
        raise AssertionError("two entries naming 08:00 were accepted")


@pytest.mark.parametrize("path, value", [
    (("medications", 0, "id"), "sertraline\n"),
    (("routine", "MORN"), "08:00\n"),
    (("medications", 1, "dosage", 0, "timing", "repeat", "timeOfDay", 0), "09:00:00\n"),
    (("medications", 1, "dosage", 0, "timing", "repeat", "boundsPeriod", "start"), "2026-11-20\n"),
])
def test_a_trailing_newline_is_no_id_time_or_date(path, value):
    """`$` in a Python pattern also matches before a final newline: the patterns end in \\Z."""
    document = json.loads((Path(__file__).resolve().parents[1] / "dispenser" / "demo" / "schedule.json").read_text())
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ScheduleError):
        parse_schedule(document)


@pytest.mark.parametrize("path, where, value", [
    (("routine", "MORN"), "routine.MORN", "0\uff18:00"),                                     # fullwidth 8
    (("medications", 1, "dosage", 0, "timing", "repeat", "timeOfDay", 0),
     "medications[1].dosage[0].timing.repeat.timeOfDay[0]", "0\u0669:00:00"),               # Arabic-Indic 9
    (("medications", 1, "dosage", 0, "timing", "repeat", "boundsPeriod", "start"),
     "medications[1].dosage[0].timing.repeat.boundsPeriod.start", "2026-11-2\u0660"),
])
def test_only_ascii_digits_make_a_time_or_date(path, where, value):
    """`\\d` in a Python pattern takes any script's digits, and int() reads them: "0\uff18:00" was 08:00."""
    document = json.loads((Path(__file__).resolve().parents[1] / "dispenser" / "demo" / "schedule.json").read_text())
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(document)
    assert [p for p in caught.value.problems if p.startswith(f"{where}: ") and "must be" in p], caught.value.problems


def test_the_demo_schedule_is_valid_as_it_stands():
    """The document the newline test alters is valid before it is altered."""
    parse_schedule(json.loads((Path(__file__).resolve().parents[1] / "dispenser" / "demo" / "schedule.json").read_text()))
