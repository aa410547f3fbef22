"""schedule.py: the document is parsed into plain values, or every problem is named."""
from __future__ import annotations

import copy
import json
import math
import re
from datetime import date, datetime, time, timedelta
from pathlib import Path

import pytest

from dispenser.schedule import (
    AsNeeded,
    ClockDosage,
    IntervalDosage,
    Medication,
    Schedule,
    ScheduledDosage,
    ScheduleError,
    load_schedule_file,
    parse_schedule,
)
from dispenser.timeutil import UTC

DATA = Path(__file__).resolve().parents[1] / "dispenser" / "demo"  # the contract's example schedule
DELETE = object()


def example() -> dict:
    return json.loads((DATA / "schedule.json").read_text())


def set_path(doc: dict, path: str, value) -> dict:
    """Set (or with DELETE remove) `a.b[0].c` in doc; returns doc for chaining."""
    parts = [int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", path)]
    target = doc
    for part in parts[:-1]:
        target = target[part]
    if value is DELETE:
        del target[parts[-1]]
    elif isinstance(target, list) and parts[-1] == len(target):
        target.append(value)
    else:
        target[parts[-1]] = value
    return doc


def entry(repeat: dict | None = None, quantity=1, **extra) -> dict:
    result = {"doseAndRate": [{"doseQuantity": {"value": quantity}}], **extra}
    if repeat is not None:
        result["timing"] = {"repeat": repeat}
    return result


def daily(*times: str, **extra) -> dict:
    return {"frequency": len(times), "period": 1, "periodUnit": "d", "timeOfDay": list(times),
            **extra}


def doc_with(*dosage: dict, window: dict | None = None, **top) -> dict:
    """A one-medication document around the given dosage entries."""
    medication = {"id": "med", "name": "Med", "compartment": 1, "dosage": list(dosage)}
    if window is not None:
        medication["window"] = window
    doc = {"schema": "dispenser.schedule/1", "version": 1, "issued_at": "2026-01-01T00:00:00Z",
           "timezone": "America/New_York",
           "routine": {"MORN": "08:00", "CM": "08:00", "CV": "18:30", "HS": "22:00",
                       "ACM": "00:10", "PC": "23:50"},
           "medications": [medication]}
    doc.update(top)
    return doc


def problems_of(doc, **kwargs) -> list[str]:
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(doc, **kwargs)
    return caught.value.problems


def only_dosage(doc: dict, **kwargs) -> ScheduledDosage:
    (dosage,) = parse_schedule(doc, **kwargs).medications[0].dosages
    return dosage


# -- the contract example ---------------------------------------------------------


def test_the_contracts_v1_titration_is_refused_as_an_overlap():
    # The contract's text (v1) ends the first entry on the day the second starts; with
    # FHIR's inclusive end both would give a dose on 2026-11-27. The copy kept with the
    # tests ends it the day before, and that is the only difference.
    v1 = set_path(example(), f"{N}[0].timing.repeat.boundsPeriod.end", "2026-11-27")
    assert problems_of(v1) == [f"{N}[1].timing.repeat.boundsPeriod: overlaps {N}[0] (2026-11-27)"]


def test_contract_example_parses():
    doc = example()
    doc["signature"] = {"alg": "ed25519", "key_id": "clinic-2026", "value": "base64"}
    schedule = parse_schedule(doc)

    assert isinstance(schedule, Schedule)
    assert schedule.version == 12
    assert schedule.issued_at == datetime(2026, 11, 20, 9, tzinfo=UTC)
    assert schedule.timezone == "America/New_York"
    assert schedule.tz.key == "America/New_York"
    assert schedule.routine["MORN"] == time(8, 0)
    assert schedule.routine["HS"] == time(22, 0)
    assert [m.id for m in schedule.medications] == ["sertraline", "naltrexone", "hydroxyzine"]
    assert schedule.compartments == {1, 2, 3}
    assert schedule.document == doc and schedule.document["signature"]["key_id"] == "clinic-2026"
    assert schedule.medication("nope") is None


def test_contract_example_medications():
    schedule = parse_schedule(example())
    sertraline = schedule.medication("sertraline")
    assert isinstance(sertraline, Medication)
    assert (sertraline.compartment, sertraline.name) == (1, "Sertraline 50 mg")
    assert (sertraline.window_before, sertraline.window_after) == (
        timedelta(minutes=30), timedelta(minutes=120))
    assert sertraline.as_needed is None and not sertraline.is_as_needed
    (morning,) = sertraline.dosages
    assert morning.times == (timedelta(hours=8),) and morning.quantity == 1

    first, second = schedule.medication("naltrexone").dosages
    assert (first.quantity, second.quantity) == (1, 2)
    # A date alone is local midnight: 05:00 UTC in New York in November.
    assert first.bounds_start == datetime(2026, 11, 20, 5, tzinfo=UTC)
    assert first.bounds_end == second.bounds_start == datetime(2026, 11, 27, 5, tzinfo=UTC)
    assert second.bounds_end is None


def test_contract_example_as_needed():
    hydroxyzine = parse_schedule(example()).medication("hydroxyzine")
    assert hydroxyzine.dosages == () and hydroxyzine.is_as_needed
    assert hydroxyzine.as_needed == AsNeeded(
        quantity=1, min_interval=timedelta(hours=6), max_units=3,
        max_period=timedelta(hours=24), bounds_start=None, bounds_end=None)


def test_document_is_a_copy():
    doc = example()
    schedule = parse_schedule(doc)
    doc["version"] = 99
    assert schedule.document["version"] == 12


# -- files and errors -------------------------------------------------------------


def test_load_schedule_file(tmp_path):
    path = tmp_path / "schedule.json"
    path.write_text(json.dumps(example()))
    assert load_schedule_file(path).version == 12
    assert load_schedule_file(str(path)).version == 12


def test_load_bad_json_names_line_and_column(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("schedule.json").write_text('{\n  "schema": "x",\n    "version" 1\n}')
    with pytest.raises(ScheduleError) as caught:
        load_schedule_file("schedule.json")
    assert caught.value.problems == [
        "schedule.json: not valid JSON (line 3 column 15: Expecting ':' delimiter)"]


def test_load_bad_json_delimiter(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("schedule.json").write_text('{"schema": "x",\n "version": 1\n    "timezone": 1}')
    with pytest.raises(ScheduleError) as caught:
        load_schedule_file("schedule.json")
    assert str(caught.value) == (
        "schedule.json: not valid JSON (line 3 column 5: Expecting ',' delimiter)")


@pytest.mark.parametrize("name, content, expected", [
    ("missing.json", None, "missing.json: no such file"),
    ("folder", "a directory", "folder: cannot be read"),
    ("latin1.json", b'{"name": "\xe9"}', "latin1.json: not UTF-8 text"),
])
def test_load_unreadable_files(tmp_path, name, content, expected):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.mkdir()
    with pytest.raises(ScheduleError) as caught:
        load_schedule_file(path)
    (problem,) = caught.value.problems
    assert problem.startswith(str(tmp_path)) and expected in problem


def test_load_reports_schema_problems(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps(set_path(example(), "version", 0)))
    with pytest.raises(ScheduleError) as caught:
        load_schedule_file(path)
    assert caught.value.problems == ["version: must be an integer >= 1, not 0"]


def test_every_problem_is_collected_and_str_joins_them():
    doc = example()
    set_path(doc, "version", True)
    set_path(doc, "medications[1].dosage[0].timing.repeat.periodUnit", "mo")
    set_path(doc, "medications[2].compartment", 1)
    set_path(doc, "medications[0].dosage[0].doseAndRate[0].doseQuantity.value", 0.5)
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(doc)
    problems = caught.value.problems
    assert problems == [
        "version: must be an integer >= 1, not true",
        "medications[0].dosage[0].doseAndRate[0].doseQuantity.value: "
        "must be a whole number of tablets, not 0.5",
        'medications[1].dosage[0].timing.repeat.periodUnit: "mo" is not supported (use h, d, wk)',
        "medications[2].compartment: 1 is already used by medications[0]",
    ]
    assert str(caught.value) == "\n".join(problems)


@pytest.mark.parametrize("doc", [None, [], "schedule", 12])
def test_document_must_be_an_object(doc):
    assert problems_of(doc) == [f"(document): must be a JSON object, not {_kind(doc)}"]


def _kind(value) -> str:
    return {type(None): "null", list: "a list", str: "a string", int: "a number"}[type(value)]


# -- timezone ---------------------------------------------------------------------


def test_default_timezone_used_when_document_names_none():
    doc = set_path(example(), "timezone", DELETE)
    schedule = parse_schedule(doc, default_timezone="Europe/London")
    assert schedule.timezone == "Europe/London"
    # boundsPeriod dates are midnight in the default zone then.
    first = schedule.medication("naltrexone").dosages[0]
    assert first.bounds_start == datetime(2026, 11, 20, 0, tzinfo=UTC)


def test_document_timezone_wins_over_default():
    schedule = parse_schedule(example(), default_timezone="Europe/London")
    assert schedule.timezone == "America/New_York"


def test_timezone_required_without_default():
    doc = set_path(example(), "timezone", DELETE)
    assert problems_of(doc) == ["timezone: is required (no default timezone is configured)"]


def test_bad_default_timezone_is_reported():
    doc = set_path(example(), "timezone", DELETE)
    assert problems_of(doc, default_timezone="Mars/Olympus") == [
        'timezone: "Mars/Olympus" is not an IANA time zone name (the configured default)']


# -- the table of broken documents --------------------------------------------------

M0 = "medications[0]"
D0 = "medications[0].dosage[0]"
R0 = "medications[0].dosage[0].timing.repeat"
N = "medications[1].dosage"  # naltrexone's titration
P = "medications[2].dosage[0]"  # hydroxyzine, as needed
PR = f"{P}.timing.repeat"

BROKEN = [
    # (field to set, value (DELETE removes it), expected path, expected words in the message)
    ("schema", "dispenser.schedule/2", "schema", 'must be "dispenser.schedule/1"'),
    ("schema", DELETE, "schema", "is required"),
    ("version", 0, "version", "integer >= 1"),
    ("version", "12", "version", "integer >= 1"),
    ("version", True, "version", "integer >= 1"),
    ("version", 1.5, "version", "integer >= 1"),
    ("version", DELETE, "version", "is required"),
    ("issued_at", "2026-11-20T09:00:00", "issued_at", "with Z or an offset"),
    ("issued_at", "yesterday", "issued_at", "ISO date-time"),
    ("issued_at", 1700000000, "issued_at", "ISO date-time"),
    ("issued_at", DELETE, "issued_at", "is required"),
    ("timezone", "Mars/Olympus", "timezone", "not an IANA time zone name"),
    ("timezone", "America", "timezone", "not an IANA time zone name"),
    ("timezone", "../etc/passwd", "timezone", "not an IANA time zone name"),
    ("timezone", "localtime", "timezone", "not an IANA time zone name"),
    ("timezone", 5, "timezone", "not an IANA time zone name"),
    ("routine", ["MORN"], "routine", "must be an object"),
    ("routine.BREAKFAST", "08:00", "routine.BREAKFAST", "not a FHIR EventTiming code"),
    ("routine.MORN", "8am", "routine.MORN", "must be a time HH:MM"),
    ("routine.MORN", "24:00", "routine.MORN", "must be a time HH:MM"),
    ("comment", "hello", "comment", "unknown field"),
    ("signature", "base64", "signature", "must be an object"),
    ("medications", DELETE, "medications", "is required"),
    ("medications", {"id": "x"}, "medications", "must be a list"),
    ("medications[0]", "sertraline", M0, "must be an object"),
    (f"{M0}.id", "Sertraline", f"{M0}.id", "must match"),
    (f"{M0}.id", "-x", f"{M0}.id", "must match"),
    (f"{M0}.id", "a" * 65, f"{M0}.id", "must match"),
    (f"{M0}.id", 7, f"{M0}.id", "must match"),
    (f"{M0}.id", DELETE, f"{M0}.id", "is required"),
    ("medications[1].id", "sertraline", "medications[1].id", "already used by medications[0]"),
    (f"{M0}.name", "", f"{M0}.name", "non-empty string"),
    (f"{M0}.name", DELETE, f"{M0}.name", "is required"),
    (f"{M0}.compartment", 0, f"{M0}.compartment", "integer >= 1"),
    (f"{M0}.compartment", "1", f"{M0}.compartment", "integer >= 1"),
    (f"{M0}.compartment", True, f"{M0}.compartment", "integer >= 1"),
    (f"{M0}.compartment", DELETE, f"{M0}.compartment", "is required"),
    ("medications[1].compartment", 1, "medications[1].compartment", "already used"),
    (f"{M0}.notes", "with food", f"{M0}.notes", "unknown field"),
    (f"{M0}.window.before_min", -1, f"{M0}.window.before_min", "0..1440"),
    (f"{M0}.window.after_min", 1441, f"{M0}.window.after_min", "0..1440"),
    (f"{M0}.window.after_min", "120", f"{M0}.window.after_min", "0..1440"),
    (f"{M0}.window", {"before_min": 0, "after_min": 0}, f"{M0}.window", "cannot both be 0"),
    (f"{M0}.window", {"before": 30}, f"{M0}.window.before", "unknown field"),
    (f"{M0}.window", 30, f"{M0}.window", "must be an object"),
    (f"{M0}.dosage", [], f"{M0}.dosage", "non-empty list"),
    (f"{M0}.dosage", DELETE, f"{M0}.dosage", "is required"),
    (f"{M0}.dosage[0]", "once a day", D0, "must be an object"),
    # dosage entry keys that would change dosing
    (f"{D0}.asNeededCodeableConcept", {"text": "pain"}, f"{D0}.asNeededCodeableConcept",
     "not supported"),
    (f"{D0}.maxDosePerAdministration", {"value": 1}, f"{D0}.maxDosePerAdministration",
     "not supported"),
    (f"{D0}.modifierExtension", [{"url": "http://x"}], f"{D0}.modifierExtension",
     "changes what the element means"),
    (f"{D0}.maxDosePerPeriod",
     {"numerator": {"value": 1}, "denominator": {"value": 1, "unit": "d"}},
     f"{D0}.maxDosePerPeriod", "only allowed with asNeededBoolean true"),
    (f"{D0}.asNeededBoolean", "yes", f"{D0}.asNeededBoolean", "true or false"),
    # doseAndRate
    (f"{D0}.doseAndRate", DELETE, f"{D0}.doseAndRate", "is required"),
    (f"{D0}.doseAndRate", [{"doseQuantity": {"value": 1}}] * 2, f"{D0}.doseAndRate",
     "exactly one entry"),
    (f"{D0}.doseAndRate[0].doseQuantity", DELETE, f"{D0}.doseAndRate[0].doseQuantity",
     "is required"),
    (f"{D0}.doseAndRate[0].doseRange", {}, f"{D0}.doseAndRate[0].doseRange", "not supported"),
    (f"{D0}.doseAndRate[0].doseQuantity.value", 0.5, f"{D0}.doseAndRate[0].doseQuantity.value",
     "whole number of tablets, not 0.5"),
    (f"{D0}.doseAndRate[0].doseQuantity.value", 0, f"{D0}.doseAndRate[0].doseQuantity.value",
     "positive whole number"),
    (f"{D0}.doseAndRate[0].doseQuantity.value", -2, f"{D0}.doseAndRate[0].doseQuantity.value",
     "positive whole number"),
    (f"{D0}.doseAndRate[0].doseQuantity.value", "1", f"{D0}.doseAndRate[0].doseQuantity.value",
     "positive whole number"),
    (f"{D0}.doseAndRate[0].doseQuantity.value", True, f"{D0}.doseAndRate[0].doseQuantity.value",
     "positive whole number"),
    (f"{D0}.doseAndRate[0].doseQuantity.value", DELETE,
     f"{D0}.doseAndRate[0].doseQuantity.value", "is required"),
    (f"{D0}.doseAndRate[0].doseQuantity.comparator", "<",
     f"{D0}.doseAndRate[0].doseQuantity.comparator", "not supported"),
    # timing
    (f"{D0}.timing", DELETE, f"{D0}.timing", "is required"),
    (f"{D0}.timing.event", ["2026-11-21T09:00:00Z"], f"{D0}.timing.event", "not supported"),
    (f"{D0}.timing.code", {"text": "BID"}, f"{D0}.timing.code", "not supported"),
    (f"{D0}.timing.repeat", DELETE, f"{D0}.timing.repeat", "is required"),
    (f"{D0}.timing.repeat", [], f"{D0}.timing.repeat", "must be an object"),
    (f"{R0}.periodUnit", "mo", f"{R0}.periodUnit", '"mo" is not supported'),
    (f"{R0}.periodUnit", "min", f"{R0}.periodUnit", '"min" is not supported'),
    (f"{R0}.periodUnit", 1, f"{R0}.periodUnit", "must be one of h, d, wk"),
    (f"{R0}.periodUnit", DELETE, f"{R0}.periodUnit", "is required"),
    (f"{R0}.frequency", 0, f"{R0}.frequency", "integer >= 1"),
    (f"{R0}.frequency", 1.5, f"{R0}.frequency", "integer >= 1"),
    (f"{R0}.frequency", DELETE, f"{R0}.frequency", "is required"),
    (f"{R0}.frequency", 2, f"{R0}.frequency", "is 2 but when names 1 time(s)"),
    (f"{R0}.period", 0, f"{R0}.period", "positive number"),
    (f"{R0}.period", -1, f"{R0}.period", "positive number"),
    (f"{R0}.period", "1", f"{R0}.period", "positive number"),
    (f"{R0}.period", math.nan, f"{R0}.period", "positive number"),
    (f"{R0}.period", math.inf, f"{R0}.period", "positive number"),
    (f"{R0}.period", 1.5, f"{R0}.period", 'whole number 1..366 with "d"'),
    (f"{R0}.period", 400, f"{R0}.period", 'whole number 1..366 with "d"'),
    (f"{R0}.period", DELETE, f"{R0}.period", "is required"),
    (f"{R0}.duration", 10, f"{R0}.duration", "not supported"),
    (f"{R0}.durationUnit", "min", f"{R0}.durationUnit", "not supported"),
    (f"{R0}.periodMax", 2, f"{R0}.periodMax", "not supported"),
    (f"{R0}.frequencyMax", 2, f"{R0}.frequencyMax", "not supported"),
    (f"{R0}.boundsDuration", {"value": 10, "unit": "d"}, f"{R0}.boundsDuration", "not supported"),
    (f"{R0}.boundsRange", {}, f"{R0}.boundsRange", "not supported"),
    (f"{R0}.timeOfDay", ["09:00:00"], f"{R0}.when", "cannot be combined with timeOfDay"),
    (f"{R0}.when", DELETE, f"{R0}.timeOfDay", "is required"),
    (f"{R0}.when", [], f"{R0}.when", "non-empty list"),
    (f"{R0}.when", "MORN", f"{R0}.when", "non-empty list"),
    (f"{R0}.when", ["BREAKFAST"], f"{R0}.when[0]", '"BREAKFAST" is not a FHIR EventTiming code'),
    (f"{R0}.when", ["NOON"], f"{R0}.when[0]", '"NOON" is not in routine'),
    (f"{R0}.offset", -5, f"{R0}.offset", "0..1440"),
    (f"{R0}.offset", "15", f"{R0}.offset", "0..1440"),
    (f"{R0}.offset", 1441, f"{R0}.offset", "0..1440"),
    (f"{R0}.dayOfWeek", ["monday"], f"{R0}.dayOfWeek[0]", "must be one of mon"),
    (f"{R0}.dayOfWeek", ["mon", "mon"], f"{R0}.dayOfWeek[1]", '"mon" is given twice'),
    (f"{R0}.dayOfWeek", [], f"{R0}.dayOfWeek", "non-empty list"),
    (f"{R0}.count", 0, f"{R0}.count", "1..10000"),
    (f"{R0}.count", "3", f"{R0}.count", "1..10000"),
    (f"{R0}.count", 3, f"{R0}.boundsPeriod.start", "count counts from it"),
    (f"{R0}.boundsPeriod", "2026-11-20", f"{R0}.boundsPeriod", "must be an object"),
    (f"{R0}.boundsPeriod", {"start": "tomorrow"}, f"{R0}.boundsPeriod.start", "must be a date"),
    (f"{R0}.boundsPeriod", {"start": "2026-02-30"}, f"{R0}.boundsPeriod.start", "not a valid date"),
    (f"{R0}.boundsPeriod", {"start": "2026-11"}, f"{R0}.boundsPeriod.start", "must be a date"),
    (f"{R0}.boundsPeriod", {"start": "2026-11-20T09:00:00.5Z"}, f"{R0}.boundsPeriod.start",
     "whole seconds"),
    (f"{R0}.boundsPeriod", {"start": "2026-11-20", "end": "2026-11-19"}, f"{R0}.boundsPeriod.end",
     "is before start"),
    (f"{R0}.boundsPeriod", {"start": "2026-11-20", "end": "2026-11-19T23:59:59"},
     f"{R0}.boundsPeriod.end", "is before start"),
    (f"{R0}.boundsPeriod", {"start": "2026-11-20", "stop": "2026-12-01"},
     f"{R0}.boundsPeriod.stop", "not supported"),
    # titration entries are each checked
    (f"{N}[1].timing.repeat.timeOfDay", ["9:00"], f"{N}[1].timing.repeat.timeOfDay[0]",
     "must be a time HH:MM:SS"),
    (f"{N}[1].timing.repeat.timeOfDay", ["24:00:00"], f"{N}[1].timing.repeat.timeOfDay[0]",
     "must be a time"),
    (f"{N}[1].timing.repeat.timeOfDay", ["09:00:00", "09:00:00"],
     f"{N}[1].timing.repeat.timeOfDay[1]", "gives 09:00, already given by timeOfDay[0]"),
    # as-needed
    (f"{P}.maxDosePerPeriod", DELETE, f"{P}.maxDosePerPeriod", "is required for an as-needed"),
    (f"{P}.maxDosePerPeriod", [], f"{P}.maxDosePerPeriod", "must be an object"),
    (f"{P}.maxDosePerPeriod.numerator.value", 0, f"{P}.maxDosePerPeriod.numerator.value",
     "positive whole number"),
    (f"{P}.maxDosePerPeriod.numerator", DELETE, f"{P}.maxDosePerPeriod.numerator", "is required"),
    (f"{P}.maxDosePerPeriod.denominator", DELETE, f"{P}.maxDosePerPeriod.denominator",
     "is required"),
    (f"{P}.maxDosePerPeriod.denominator.unit", "mo", f"{P}.maxDosePerPeriod.denominator.unit",
     "must be h, d or wk"),
    (f"{P}.maxDosePerPeriod.denominator.value", 0, f"{P}.maxDosePerPeriod.denominator.value",
     "positive number"),
    (f"{P}.maxDosePerPeriod.denominator.comparator", "<",
     f"{P}.maxDosePerPeriod.denominator.comparator", "not supported"),
    (f"{P}.doseAndRate[0].doseQuantity.value", 4, f"{P}.maxDosePerPeriod.numerator.value",
     "below the dose itself"),
    (f"{PR}.timeOfDay", ["09:00:00"], f"{PR}.timeOfDay", "not allowed on an as-needed dosage"),
    (f"{PR}.when", ["HS"], f"{PR}.when", "not allowed on an as-needed dosage"),
    (f"{PR}.count", 3, f"{PR}.count", "not allowed on an as-needed dosage"),
    (f"{PR}.dayOfWeek", ["mon"], f"{PR}.dayOfWeek", "not allowed on an as-needed dosage"),
    (f"{PR}.periodUnit", "wk", f"{PR}.periodUnit", '"wk" is not supported (use h, d)'),
    (f"{PR}.period", 0, f"{PR}.period", "positive number"),
    (f"{P}.timing", DELETE, f"{P}.timing", "is required"),
    (f"{P}.asNeededCodeableConcept", {"text": "itch"}, f"{P}.asNeededCodeableConcept",
     "not supported"),
    ("medications[2].dosage[1]", {"timing": {"repeat": daily("09:00:00")},
                                  "doseAndRate": [{"doseQuantity": {"value": 1}}]},
     "medications[2].dosage", "as-needed and scheduled entries cannot be mixed"),
]


@pytest.mark.parametrize("field, value, path, words", BROKEN,
                         ids=[f"{i}:{case[0]}" for i, case in enumerate(BROKEN)])
def test_broken_documents(field, value, path, words):
    problems = problems_of(set_path(example(), field, value))
    matching = [p for p in problems if p.startswith(f"{path}: ")]
    assert matching, problems
    assert any(words in p for p in matching), problems


BROKEN_REPEATS = [
    # (repeat of a scheduled entry, expected field under timing.repeat, expected words)
    ({"frequency": 1, "period": 8, "periodUnit": "h"}, "boundsPeriod.start",
     "every period/frequency hours count from it"),
    ({"frequency": 1, "period": 1, "periodUnit": "wk", "timeOfDay": ["09:00:00"]},
     "boundsPeriod.start", "weekly dose is given on its weekday"),
    (daily("09:00:00", period=2), "boundsPeriod.start", "every 2 days counts from it"),
    ({"frequency": 1, "period": 8, "periodUnit": "h", "timeOfDay": ["09:00:00"],
      "boundsPeriod": {"start": "2026-01-01"}}, "timeOfDay", 'not allowed with periodUnit "h"'),
    ({"frequency": 1, "period": 8, "periodUnit": "h", "dayOfWeek": ["mon"],
      "boundsPeriod": {"start": "2026-01-01"}}, "dayOfWeek", 'not allowed with periodUnit "h"'),
    ({"frequency": 1, "period": 1, "periodUnit": "wk", "timeOfDay": ["09:00:00"], "dayOfWeek": ["mon"],
      "boundsPeriod": {"start": "2026-01-01"}}, "dayOfWeek", 'only allowed with periodUnit "d"'),
    (daily("09:00:00", period=2, dayOfWeek=["mon"], boundsPeriod={"start": "2026-01-01"}),
     "dayOfWeek", "only allowed with period 1"),
    ({"frequency": 1, "periodUnit": "wk", "timeOfDay": ["09:00:00"], "period": 53,
      "boundsPeriod": {"start": "2026-01-01"}}, "period", "1..52"),
    ({"frequency": 7, "period": 1, "periodUnit": "h", "boundsPeriod": {"start": "2026-01-01"}},
     "period", "whole number of seconds"),
    ({"frequency": 120, "period": 1, "periodUnit": "h", "boundsPeriod": {"start": "2026-01-01"}},
     "period", "between 1 minute and 366 days"),
    ({"frequency": 1, "period": 9000, "periodUnit": "h", "boundsPeriod": {"start": "2026-01-01"}},
     "period", "between 1 minute and 366 days"),
    (daily("09:00:00", offset=10), "offset", "only allowed with when"),
    ({"frequency": 2, "period": 1, "periodUnit": "d", "when": ["MORN", "CM"]}, "when[1]",
     "gives 08:00, already given by when[0]"),
    ({"frequency": 1, "period": 1, "periodUnit": "d", "timeOfDay": ["09:00:00", "21:00:00"]},
     "frequency", "is 1 but timeOfDay names 2 time(s)"),
]


@pytest.mark.parametrize("repeat, field, words", BROKEN_REPEATS)
def test_broken_repeats(repeat, field, words):
    problems = problems_of(doc_with(entry(repeat)))
    path = f"medications[0].dosage[0].timing.repeat.{field}: "
    assert any(p.startswith(path) and words in p for p in problems), problems


def test_two_as_needed_entries_are_refused():
    prn = example()["medications"][2]["dosage"][0]
    problems = problems_of(doc_with(prn, copy.deepcopy(prn)))
    assert problems == ["medications[0].dosage: an as-needed medication has exactly one dosage "
                        "entry (as-needed and scheduled entries cannot be mixed)"]


# -- what valid documents mean ------------------------------------------------------


@pytest.mark.parametrize("when, offset, expected", [
    (["MORN"], 0, [timedelta(hours=8)]),
    (["CM", "CV"], 15, [timedelta(hours=8, minutes=15), timedelta(hours=18, minutes=45)]),
    (["HS"], 30, [timedelta(hours=21, minutes=30)]),  # HS: offset is before
    (["ACM"], 20, [timedelta(minutes=-10)]),  # 00:10 - 20 min: 23:50 the day before
    (["PC"], 20, [timedelta(hours=24, minutes=10)]),  # 23:50 + 20 min: 00:10 the day after
    (["CV", "MORN"], None, [timedelta(hours=8), timedelta(hours=18, minutes=30)]),
])
def test_when_and_offset_resolve_to_times(when, offset, expected):
    repeat = {"frequency": len(when), "period": 1, "periodUnit": "d", "when": when}
    if offset is not None:
        repeat["offset"] = offset
    assert list(only_dosage(doc_with(entry(repeat))).times) == expected


@pytest.mark.parametrize("times, expected", [
    (["09:00:00"], [timedelta(hours=9)]),
    (["21:00:00", "09:00:30"], [timedelta(hours=9, seconds=30), timedelta(hours=21)]),
    (["00:00:00", "23:59:59"], [timedelta(0), timedelta(hours=23, minutes=59, seconds=59)]),
])
def test_time_of_day_is_fhir_time_with_seconds(times, expected):
    assert list(only_dosage(doc_with(entry(daily(*times)))).times) == expected


@pytest.mark.parametrize("text, words", [
    ("09:00", 'must be a time HH:MM:SS, not "09:00" (FHIR time has seconds: "09:00:00")'),
    ("9:00:00", 'must be a time HH:MM:SS, not "9:00:00"'),
    ("09:00:00.5", 'must be a time HH:MM:SS, not "09:00:00.5"'),
    ("24:00:00", 'must be a time HH:MM:SS, not "24:00:00"'),
    (900, "must be a time HH:MM:SS, not 900"),
])
def test_time_of_day_without_seconds_is_refused(text, words):
    assert problems_of(doc_with(entry(daily(text)))) == [f"{R0}.timeOfDay[0]: {words}"]


@pytest.mark.parametrize("repeat, period_days, interval", [
    (daily("09:00:00"), 1, None),
    (daily("09:00:00", period=3, boundsPeriod={"start": "2026-01-01"}), 3, None),
    (daily("09:00:00", period=2.0, boundsPeriod={"start": "2026-01-01"}), 2, None),
    ({"frequency": 1, "period": 2, "periodUnit": "wk", "timeOfDay": ["09:00:00"],
      "boundsPeriod": {"start": "2026-01-01"}}, 14, None),
    ({"frequency": 3, "period": 1, "periodUnit": "d", "when": ["MORN", "CV", "HS"]}, 1, None),
    ({"frequency": 3, "period": 24, "periodUnit": "h", "boundsPeriod": {"start": "2026-01-01"}},
     1, timedelta(hours=8)),
    ({"frequency": 1, "period": 1.5, "periodUnit": "h", "boundsPeriod": {"start": "2026-01-01"}},
     1, timedelta(minutes=90)),
    ({"frequency": 3, "period": 1, "periodUnit": "h", "boundsPeriod": {"start": "2026-01-01"}},
     1, timedelta(minutes=20)),
])
def test_periods(repeat, period_days, interval):
    dosage = only_dosage(doc_with(entry(repeat)))
    if interval is None:  # clock times on every period_days-th day
        assert isinstance(dosage, ClockDosage) and dosage.period_days == period_days
    else:  # `h`: elapsed time from the start, no days
        assert isinstance(dosage, IntervalDosage) and dosage.interval == interval


def test_day_of_week_is_monday_zero():
    dosage = only_dosage(doc_with(entry(daily("09:00:00", dayOfWeek=["mon", "fri", "sun"]))))
    assert dosage.days_of_week == {0, 4, 6}


@pytest.mark.parametrize("text, expected_utc, anchor", [
    ("2026-11-20", datetime(2026, 11, 20, 5, tzinfo=UTC), date(2026, 11, 20)),  # local midnight
    ("2026-07-20", datetime(2026, 7, 20, 4, tzinfo=UTC), date(2026, 7, 20)),  # EDT
    ("2026-11-20T09:30:00", datetime(2026, 11, 20, 14, 30, tzinfo=UTC), date(2026, 11, 20)),
    ("2026-11-20T09:30", datetime(2026, 11, 20, 14, 30, tzinfo=UTC), date(2026, 11, 20)),
    ("2026-11-20T02:00:00Z", datetime(2026, 11, 20, 2, tzinfo=UTC), date(2026, 11, 19)),
    ("2026-11-20T09:00:00+01:00", datetime(2026, 11, 20, 8, tzinfo=UTC), date(2026, 11, 20)),
    ("2026-03-08T02:30:00", datetime(2026, 3, 8, 7, 30, tzinfo=UTC), date(2026, 3, 8)),  # gap
    ("2026-11-01T01:30:00", datetime(2026, 11, 1, 5, 30, tzinfo=UTC), date(2026, 11, 1)),  # first
    ("2026-11-20T09:00:00.000Z", datetime(2026, 11, 20, 9, tzinfo=UTC), date(2026, 11, 20)),
])
def test_bounds_are_local_unless_they_carry_an_offset(text, expected_utc, anchor):
    dosage = only_dosage(doc_with(entry(daily("09:00:00", boundsPeriod={"start": text}))))
    assert dosage.bounds_start == expected_utc
    assert dosage.anchor_date == anchor


def test_bounds_end_alone_is_allowed_for_a_plain_daily_dose():
    dosage = only_dosage(doc_with(entry(daily("09:00:00", boundsPeriod={"end": "2026-12-01"}))))
    # Inclusive: the whole of 1 December, so kept as the next local midnight.
    assert (dosage.bounds_start, dosage.bounds_end) == (
        None, datetime(2026, 12, 2, 5, tzinfo=UTC))


def test_count_is_kept():
    repeat = daily("09:00:00", count=5, boundsPeriod={"start": "2026-01-01"})
    assert only_dosage(doc_with(entry(repeat))).count == 5


@pytest.mark.parametrize("value, expected", [(1, 1), (2, 2), (2.0, 2), (3, 3)])
def test_whole_tablets(value, expected):
    assert only_dosage(doc_with(entry(daily("09:00:00"), quantity=value))).quantity == expected


def test_text_only_keys_are_accepted_and_kept():
    extension = [{"url": "http://example.org/note", "valueString": "x"}]
    dosage = entry(daily("09:00:00"), text="one tablet in the morning", sequence=1,
                   patientInstruction="with water", route={"text": "oral"},
                   additionalInstruction=[{"text": "with food"}], asNeededBoolean=False,
                   id="d1", extension=extension, method={"text": "swallow"},
                   site={"text": "mouth"})
    dosage["doseAndRate"][0]["type"] = {"text": "ordered"}
    dosage["doseAndRate"][0]["doseQuantity"].update(unit="tablet", system="x", code="TAB")
    for element in (dosage["timing"], dosage["timing"]["repeat"], dosage["doseAndRate"][0],
                    dosage["doseAndRate"][0]["doseQuantity"]):
        element.update(id="e", extension=extension)
    plain = only_dosage(doc_with(entry(daily("09:00:00"))))
    schedule = parse_schedule(doc_with(dosage))
    assert schedule.medications[0].dosages == (plain,)
    assert schedule.document["medications"][0]["dosage"][0] == dosage


@pytest.mark.parametrize("where", ["", ".timing", ".timing.repeat", ".doseAndRate[0]",
                                   ".doseAndRate[0].doseQuantity"])
def test_modifier_extension_is_refused_with_its_path(where):
    doc = doc_with(entry(daily("09:00:00")))
    set_path(doc, f"{D0}{where}.modifierExtension", [{"url": "http://example.org/not-really"}])
    assert problems_of(doc) == [
        f"{D0}{where}.modifierExtension: is refused: it changes what the element means"]


def test_modifier_extension_on_an_as_needed_limit_is_refused():
    doc = set_path(example(), f"{P}.maxDosePerPeriod.modifierExtension", [{"url": "http://x"}])
    assert problems_of(doc) == [
        f"{P}.maxDosePerPeriod.modifierExtension: is refused: it changes what the element means"]


@pytest.mark.parametrize("window, before, after", [
    (None, 30, 120),
    ({}, 30, 120),
    ({"before_min": 0}, 0, 120),
    ({"after_min": 0}, 30, 0),
    ({"before_min": 1440, "after_min": 1440}, 1440, 1440),
])
def test_window_defaults_per_key(window, before, after):
    medication = parse_schedule(doc_with(entry(daily("09:00:00")), window=window)).medications[0]
    assert medication.window_before == timedelta(minutes=before)
    assert medication.window_after == timedelta(minutes=after)


@pytest.mark.parametrize("repeat, denominator, interval, period", [
    ({"frequency": 1, "period": 6, "periodUnit": "h"}, {"value": 1, "unit": "d"},
     timedelta(hours=6), timedelta(hours=24)),
    ({"frequency": 2, "period": 1, "periodUnit": "d"}, {"value": 12, "unit": "h"},
     timedelta(hours=12), timedelta(hours=12)),
    ({"frequency": 1, "period": 4, "periodUnit": "h"}, {"value": 1, "unit": "wk"},
     timedelta(hours=4), timedelta(days=7)),
    # the UCUM code wins over the display unit
    ({"frequency": 1, "period": 4, "periodUnit": "h"},
     {"value": 1, "unit": "day", "system": "http://unitsofmeasure.org", "code": "d"},
     timedelta(hours=4), timedelta(days=1)),
])
def test_as_needed_limits(repeat, denominator, interval, period):
    prn = {"asNeededBoolean": True, "timing": {"repeat": repeat},
           "maxDosePerPeriod": {"numerator": {"value": 4}, "denominator": denominator},
           "doseAndRate": [{"doseQuantity": {"value": 2}}]}
    as_needed = parse_schedule(doc_with(prn)).medications[0].as_needed
    assert as_needed == AsNeeded(quantity=2, min_interval=interval, max_units=4,
                                 max_period=period, bounds_start=None, bounds_end=None)


def test_as_needed_bounds():
    prn = example()["medications"][2]["dosage"][0]
    prn["timing"]["repeat"]["boundsPeriod"] = {"start": "2026-12-01", "end": "2026-12-08T12:00:00Z"}
    as_needed = parse_schedule(doc_with(prn)).medications[0].as_needed
    assert as_needed.bounds_start == datetime(2026, 12, 1, 5, tzinfo=UTC)
    # inclusive end, kept exclusive: 12:00:00 itself is inside
    assert as_needed.bounds_end == datetime(2026, 12, 8, 12, 0, 1, tzinfo=UTC)


def test_empty_medication_list_is_a_valid_schedule():
    schedule = parse_schedule(doc_with(entry(daily("09:00:00")), medications=[]))
    assert schedule.medications == () and schedule.compartments == frozenset()


def test_routine_is_optional_without_when():
    doc = doc_with(entry(daily("09:00:00")))
    del doc["routine"]
    assert parse_schedule(doc).routine == {}


def test_routine_codes_with_dots():
    doc = doc_with(entry({"frequency": 1, "period": 1, "periodUnit": "d", "when": ["MORN.early"]}),
                   routine={"MORN.early": "06:15"})
    assert only_dosage(doc).times == (timedelta(hours=6, minutes=15),)


@pytest.mark.parametrize("routine", [{"MORN": "8am"}, ["MORN"]])
def test_a_broken_routine_is_blamed_once(routine):
    doc = doc_with(entry({"frequency": 1, "period": 1, "periodUnit": "d", "when": ["MORN"]}),
                   routine=routine)
    (problem,) = problems_of(doc)
    assert problem.startswith("routine")


def test_schedule_error_survives_pickling():
    import pickle

    error = pickle.loads(pickle.dumps(ScheduleError(["a: b", "c: d"])))
    assert error.problems == ["a: b", "c: d"] and str(error) == "a: b\nc: d"


@pytest.mark.parametrize("denominator, words", [
    ({"value": 0.001, "unit": "h"}, '0.001 h must be between 1 minute and 366 days'),
    ({"value": 400, "unit": "d"}, "400 d must be between 1 minute and 366 days"),
])
def test_as_needed_limit_period_bounds(denominator, words):
    doc = set_path(example(), f"{P}.maxDosePerPeriod.denominator", denominator)
    assert problems_of(doc) == [f"{P}.maxDosePerPeriod.denominator.value: {words}"]


def test_a_version_too_large_for_the_log_is_refused_with_its_path():
    import copy
    from dispenser.schedule import ScheduleError, parse_schedule
    doc = example()
    doc["version"] = 2**64
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(doc)
    assert caught.value.problems == ["version: must be at most 9223372036854775807"]
