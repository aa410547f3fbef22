"""dispenser/schedule.schema.json, held to the validator's verdicts (dispenser/schedule.py).

Every valid document the tests and docs carry passes the schema; every invalid one in
the table below fails the validator with its named problem and fails the schema too,
at the same place, unless the rule is one only the validator can check, which
docs/SCHEDULE.md then lists (and the schema, tested, lets it through).
"""
from __future__ import annotations

import copy
import importlib.resources
import json
import os
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
from jsonschema import Draft202012Validator

from dispenser import schedule as validator
from dispenser.schedule import ScheduleError, parse_schedule

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "dispenser" / "demo" / "schedule.json"  # the contract's example
SCHEDULE_MD = ROOT / "docs" / "SCHEDULE.md"
SCHEMA = json.loads(importlib.resources.files("dispenser").joinpath("schedule.schema.json")
                    .read_text(encoding="utf-8"))
CHECK = Draft202012Validator(SCHEMA)
DELETE = object()


def base() -> dict:
    return json.loads(EXAMPLE.read_text(encoding="utf-8"))


def steps(path: str) -> list[str | int]:
    """`medications[0].dosage` -> ["medications", 0, "dosage"]; "(document)" -> []."""
    if path == "(document)":
        return []
    return [int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", path)]


def edit(doc: dict, path: str, value: Any) -> None:
    *parents, last = steps(path)
    target: Any = doc
    for part in parents:
        target = target[part]
    if value is DELETE:
        del target[last]
    elif isinstance(target, list) and last == len(target):
        target.append(value)
    else:
        target[last] = value


def schema_errors(doc: Any) -> list:
    return list(CHECK.iter_errors(doc))


def problems(doc: Any, default_timezone: str | None = "UTC") -> list[str]:
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(doc, default_timezone)
    return caught.value.problems


# -- the invalid documents ----------------------------------------------------------

S = "medications[0]"                                # sertraline: when MORN, daily
SR = "medications[0].dosage[0].timing.repeat"
N0 = "medications[1].dosage[0]"                     # naltrexone, first entry, boundsPeriod
N1 = "medications[1].dosage[1]"                     # ... second entry, from 2026-11-27
H = "medications[2].dosage[0]"                      # hydroxyzine, as needed
DOSE = "medications[0].dosage[0].doseAndRate[0].doseQuantity"
SCHEDULED = {"timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d",
                                   "timeOfDay": ["08:00:00"]}},
             "doseAndRate": [{"doseQuantity": {"value": 1}}]}
FIFTY_MG = {"value": 50, "unit": "mg"}


@dataclass(frozen=True)
class Bad:
    """An invalid document: `changes` applied to the example (or `make` building it),
    `problem` the start of the validator's line for it, `only` (when the schema cannot
    express the rule) the phrase docs/SCHEDULE.md lists it under."""

    name: str
    problem: str
    changes: dict = field(default_factory=dict)
    only: str = ""
    make: Callable[[], Any] | None = None
    default_timezone: str | None = "UTC"

    def document(self) -> Any:
        if self.make is not None:
            return self.make()
        doc = base()
        for path, value in self.changes.items():
            edit(doc, path, value if value is DELETE else copy.deepcopy(value))
        return doc


BAD = [
    # the document
    Bad("not an object", "(document): must be a JSON object, not a list", make=lambda: [base()]),
    Bad("unknown top-level field", "colour: unknown field", {"colour": "red"}),
    Bad("schema missing", "schema: is required", {"schema": DELETE}),
    Bad("schema wrong", 'schema: must be "dispenser.schedule/1", not "dispenser.schedule/2"',
        {"schema": "dispenser.schedule/2"}),
    Bad("version missing", "version: is required", {"version": DELETE}),
    Bad("version zero", "version: must be an integer >= 1, not 0", {"version": 0}),
    Bad("version a string", 'version: must be an integer >= 1, not "12"', {"version": "12"}),
    Bad("version too large", "version: must be at most 9223372036854775807", {"version": 2**63}),
    Bad("issued_at missing", "issued_at: is required", {"issued_at": DELETE}),
    Bad("issued_at not a date-time", "issued_at: must be an ISO date-time in RFC 3339 form",
        {"issued_at": "20 Nov 2026"}),
    Bad("issued_at without offset", "issued_at: must be an ISO date-time in RFC 3339 form",
        {"issued_at": "2026-11-20T09:00:00"}),
    Bad("issued_at not a real date", 'issued_at: "2026-02-30T09:00:00Z" is not a real date and time',
        {"issued_at": "2026-02-30T09:00:00Z"}, only="real dates"),
    Bad("issued_at out of years", "issued_at: must be in the years 2000..2199",
        {"issued_at": "2300-01-01T00:00:00Z"}),
    Bad("device_id blank", "device_id: must be a non-empty string", {"device_id": " "}),
    Bad("expires_at not a date-time", "expires_at: must be an ISO date-time in RFC 3339 form",
        {"expires_at": "tomorrow"}),
    Bad("timezone unknown", 'timezone: "Mars/Olympus_Mons" is not an IANA time zone name',
        {"timezone": "Mars/Olympus_Mons"}, only="time zone names"),
    Bad("timezone missing, none configured", "timezone: is required (no default timezone is configured)",
        {"timezone": DELETE}, only="timezone without a configured default", default_timezone=None),
    Bad("routine not an object", "routine: must be an object, not a list", {"routine": ["MORN"]}),
    Bad("routine code unknown", "routine.LUNCH: is not a FHIR EventTiming code", {"routine.LUNCH": "12:00"}),
    Bad("routine time malformed", 'routine.MORN: must be a time HH:MM, not "8am"', {"routine.MORN": "8am"}),
    Bad("medications missing", "medications: is required", {"medications": DELETE}),
    Bad("medications not a list", "medications: must be a list, not an object", {"medications": {}}),
    Bad("signature not an object", "signature: must be an object, not a string", {"signature": "c2ln"}),
    # a medication
    Bad("medication not an object", f"{S}: must be an object, not a string", {S: "sertraline"}),
    Bad("medication field unknown", f"{S}.colour: unknown field", {f"{S}.colour": "blue"}),
    Bad("id missing", f"{S}.id: is required", {f"{S}.id": DELETE}),
    Bad("id malformed", f"{S}.id: must match ^[a-z0-9][a-z0-9_.-]{{0,63}}$", {f"{S}.id": "Sertraline 50"}),
    Bad("id twice", 'medications[1].id: "sertraline" is already used by medications[0]',
        {"medications[1].id": "sertraline"}, only="unique ids and compartments"),
    Bad("name missing", f"{S}.name: is required", {f"{S}.name": DELETE}),
    Bad("name blank", f"{S}.name: must be a non-empty string", {f"{S}.name": "  "}),
    Bad("compartment missing", f"{S}.compartment: is required", {f"{S}.compartment": DELETE}),
    Bad("compartment zero", f"{S}.compartment: must be an integer >= 1, not 0", {f"{S}.compartment": 0}),
    Bad("compartment twice", "medications[1].compartment: 1 is already used by medications[0]",
        {"medications[1].compartment": 1}, only="unique ids and compartments"),
    Bad("display too long", f"{S}.display: must be 1..16 printable ASCII characters",
        {f"{S}.display": "Sertraline 50 mg daily"}),
    Bad("display not ASCII", f"{S}.display: must be 1..16 printable ASCII characters",
        {f"{S}.display": "Sertraline \u00e9"}),
    Bad("window field unknown", f"{S}.window.during_min: unknown field", {f"{S}.window.during_min": 5}),
    Bad("window too long", f"{S}.window.after_min: must be an integer 0..1440, not 2000",
        {f"{S}.window.after_min": 2000}),
    Bad("window both zero", f"{S}.window: before_min and after_min cannot both be 0",
        {f"{S}.window": {"before_min": 0, "after_min": 0}}),
    Bad("ingredient field unknown", f"{S}.ingredient.dose: is not supported",
        {f"{S}.ingredient": {"code": "36437", "dose": "50"}}),
    Bad("ingredient code missing", f"{S}.ingredient.code: is required",
        {f"{S}.ingredient": {"system": "http://www.nlm.nih.gov/research/umls/rxnorm"}}),
    Bad("ingredient code too long", f"{S}.ingredient.code: must be 1..64 characters, not 65",
        {f"{S}.ingredient": {"code": "9" * 65}}),
    Bad("ingredient code not text", f"{S}.ingredient.code: must be a non-empty string, not 36437",
        {f"{S}.ingredient": {"code": 36437}}),
    Bad("separate_from ingredient too long", f"{S}.separate_from[0].ingredient: must be 1..64 characters, not 70",
        {f"{S}.separate_from": [{"ingredient": "1897" + "0" * 66, "hours": 4}]}),
    Bad("ingredient display not text", f"{S}.ingredient.display: must be a string, not 5",
        {f"{S}.ingredient": {"code": "36437", "display": 5}}),
    Bad("strength not positive", f"{S}.strength.value: must be a positive number, not 0",
        {f"{S}.strength": {"value": 0, "unit": "mg"}}),
    Bad("strength unit missing", f"{S}.strength.unit: is required", {f"{S}.strength": {"value": 50}}),
    Bad("min_gap_h too long", f"{S}.min_gap_h: must be a positive number of hours up to 168",
        {f"{S}.min_gap_h": 200}),
    Bad("min_gap_h not whole seconds", f"{S}.min_gap_h: must be a positive number of hours up to 168 "
        "(whole seconds)", {f"{S}.min_gap_h": 0.0001}, only="whole seconds"),
    Bad("separate_from not a list", f"{S}.separate_from: must be a list, not an object",
        {f"{S}.separate_from": {"ingredient": "1897", "hours": 4}}),
    Bad("separate_from ingredient missing", f"{S}.separate_from[0].ingredient: is required",
        {f"{S}.separate_from": [{"hours": 4}]}),
    Bad("separate_from hours missing", f"{S}.separate_from[0].hours: is required",
        {f"{S}.separate_from": [{"ingredient": "1897"}]}),
    Bad("separate_from its own ingredient", f"{S}.separate_from[0].ingredient: names the medication's own",
        {f"{S}.separate_from": [{"ingredient": "sertraline", "hours": 4}]}, only="own ingredient"),
    Bad("dosage missing", f"{S}.dosage: is required", {f"{S}.dosage": DELETE}),
    Bad("dosage empty", f"{S}.dosage: must be a non-empty list", {f"{S}.dosage": []}),
    Bad("as needed beside scheduled", "medications[2].dosage: an as-needed medication has exactly one",
        {"medications[2].dosage[1]": SCHEDULED}),
    # a dosage entry
    Bad("entry not an object", f"{S}.dosage[0]: must be an object, not a string", {f"{S}.dosage[0]": "daily"}),
    Bad("modifierExtension", f"{S}.dosage[0].modifierExtension: is refused",
        {f"{S}.dosage[0].modifierExtension": [{"url": "http://example.org/x"}]}),
    Bad("entry field unsupported", f"{S}.dosage[0].asNeededCodeableConcept: is not supported",
        {f"{S}.dosage[0].asNeededCodeableConcept": {"text": "anxiety"}}),
    Bad("extension without url", f"{S}.dosage[0].extension: must be a list of objects, each with a url",
        {f"{S}.dosage[0].extension": [{"valueString": "x"}]}),
    Bad("element id not text", f"{S}.dosage[0].id: must be a string, not 5", {f"{S}.dosage[0].id": 5}),
    Bad("asNeededBoolean not a boolean", f"{S}.dosage[0].asNeededBoolean: must be true or false",
        {f"{S}.dosage[0].asNeededBoolean": "no"}),
    Bad("doseAndRate missing", f"{S}.dosage[0].doseAndRate: is required", {f"{S}.dosage[0].doseAndRate": DELETE}),
    Bad("doseAndRate twice", f"{S}.dosage[0].doseAndRate: must be a list of exactly one entry",
        {f"{S}.dosage[0].doseAndRate[1]": {"doseQuantity": {"value": 1}}}),
    Bad("doseQuantity missing", f"{S}.dosage[0].doseAndRate[0].doseQuantity: is required",
        {f"{S}.dosage[0].doseAndRate[0]": {}}),
    Bad("dose value missing", f"{DOSE}.value: is required", {DOSE: {"unit": "tablet"}}),
    Bad("dose zero", f"{DOSE}.value: must be a positive whole number of tablets, not 0", {f"{DOSE}.value": 0}),
    Bad("dose a fraction", f"{DOSE}.value: must be a whole number of tablets, not 1.5", {f"{DOSE}.value": 1.5}),
    Bad("dose too many", f"{DOSE}.value: 12 tablets a dose is more than the most a dispenser gives (10)",
        {f"{DOSE}.value": 12}),
    Bad("dose unit unknown", f'{DOSE}.unit: "puff" is neither a count unit', {f"{DOSE}.unit": "puff"},
        only="units against the strength"),
    Bad("dose unit and code disagree", f'{DOSE}.unit: "tablet" does not mean the same as code "mg"',
        {f"{S}.strength": FIFTY_MG, DOSE: {"value": 1, "unit": "tablet", "code": "mg"}},
        only="units against the strength"),
    Bad("dose not whole tablets of the strength", f"{DOSE}.value: 75 mg is not a whole number of tablets of 50 mg",
        {f"{S}.strength": FIFTY_MG, DOSE: {"value": 75, "unit": "mg"}}, only="units against the strength"),
    Bad("dose in mg too many tablets", f"{DOSE}.value: 12 tablets a dose is more than",
        {f"{S}.strength": FIFTY_MG, DOSE: {"value": 600, "unit": "mg"}}, only="units against the strength"),
    Bad("maxDosePerPeriod on a scheduled entry", f"{S}.dosage[0].maxDosePerPeriod: is only allowed with "
        "asNeededBoolean true", {f"{S}.dosage[0].maxDosePerPeriod": {"numerator": {"value": 1},
                                                                      "denominator": {"value": 1, "unit": "d"}}}),
    Bad("timing missing", f"{S}.dosage[0].timing: is required", {f"{S}.dosage[0].timing": DELETE}),
    Bad("timing.code", f"{S}.dosage[0].timing.code: is not supported", {f"{S}.dosage[0].timing.code": {"text": "BID"}}),
    Bad("repeat missing", f"{S}.dosage[0].timing.repeat: is required", {f"{S}.dosage[0].timing": {}}),
    Bad("repeat field unsupported", f"{SR}.durationMax: is not supported", {f"{SR}.durationMax": 5}),
    Bad("scheduled field on as needed", f"{H}.timing.repeat.timeOfDay: is not allowed on an as-needed dosage",
        {f"{H}.timing.repeat.timeOfDay": ["08:00:00"]}),
    Bad("periodUnit missing", f"{SR}.periodUnit: is required", {f"{SR}.periodUnit": DELETE}),
    Bad("periodUnit unsupported", f'{SR}.periodUnit: "mo" is not supported (use h, d, wk)', {f"{SR}.periodUnit": "mo"}),
    Bad("periodUnit wk as needed", f'{H}.timing.repeat.periodUnit: "wk" is not supported (use h, d)',
        {f"{H}.timing.repeat.periodUnit": "wk"}),
    Bad("frequency missing", f"{SR}.frequency: is required", {f"{SR}.frequency": DELETE}),
    Bad("frequency zero", f"{SR}.frequency: must be an integer >= 1, not 0", {f"{SR}.frequency": 0}),
    Bad("period missing", f"{SR}.period: is required", {f"{SR}.period": DELETE}),
    Bad("period negative", f"{SR}.period: must be a positive number, not -1", {f"{SR}.period": -1}),
    Bad("period of days a fraction", f'{SR}.period: must be a whole number 1..366 with "d", not 1.5',
        {f"{SR}.period": 1.5}),
    Bad("period of weeks too many", f'{N1}.timing.repeat.period: must be a whole number 1..52 with "wk", not 60',
        {f"{N1}.timing.repeat.periodUnit": "wk", f"{N1}.timing.repeat.period": 60}),
    Bad("interval under a minute", f"{H}.timing.repeat.period: period/frequency must be between 1 minute",
        {f"{H}.timing.repeat.period": 0.01}, only="intervals"),
    Bad("boundsPeriod not an object", f"{N0}.timing.repeat.boundsPeriod: must be an object",
        {f"{N0}.timing.repeat.boundsPeriod": "2026-11-20"}),
    Bad("bound malformed", f'{N0}.timing.repeat.boundsPeriod.start: must be a date YYYY-MM-DD or a date-time',
        {f"{N0}.timing.repeat.boundsPeriod.start": "20 Nov 2026"}),
    Bad("bound not a real date", f'{N0}.timing.repeat.boundsPeriod.start: "2026-02-30" is not a valid date',
        {f"{N0}.timing.repeat.boundsPeriod.start": "2026-02-30"}, only="real dates"),
    Bad("bound out of years", f"{N0}.timing.repeat.boundsPeriod.start: must be in the years 2000..2199",
        {f"{N0}.timing.repeat.boundsPeriod.start": "1999-12-31"}),
    Bad("bound with a fraction of a second", f"{N0}.timing.repeat.boundsPeriod.start: must be in whole seconds",
        {f"{N0}.timing.repeat.boundsPeriod.start": "2026-11-20T09:00:00.5"}),
    Bad("end before start", f"{N0}.timing.repeat.boundsPeriod.end: is before start",
        {f"{N0}.timing.repeat.boundsPeriod.end": "2026-11-19"}, only="end after start"),
    Bad("times with periodUnit h", f'{SR}.when: is not allowed with periodUnit "h"',
        {f"{SR}.periodUnit": "h", f"{SR}.period": 24, f"{SR}.boundsPeriod": {"start": "2026-11-20"}}),
    Bad("start missing for count", f"{SR}.boundsPeriod.start: is required (count counts from it)",
        {f"{SR}.count": 10}),
    Bad("start missing for every 2 days", f"{SR}.boundsPeriod.start: is required (every 2 days counts from it)",
        {f"{SR}.period": 2}),
    Bad("count zero", f"{N1}.timing.repeat.count: must be an integer 1..10000, not 0", {f"{N1}.timing.repeat.count": 0}),
    Bad("dayOfWeek with wk", f'{N1}.timing.repeat.dayOfWeek: is only allowed with periodUnit "d"',
        {f"{N1}.timing.repeat.periodUnit": "wk", f"{N1}.timing.repeat.dayOfWeek": ["mon"]}),
    Bad("dayOfWeek every 2 days", f"{N1}.timing.repeat.dayOfWeek: is only allowed with period 1",
        {f"{N1}.timing.repeat.period": 2, f"{N1}.timing.repeat.dayOfWeek": ["mon"]}),
    Bad("dayOfWeek empty", f"{SR}.dayOfWeek: must be a non-empty list", {f"{SR}.dayOfWeek": []}),
    Bad("dayOfWeek unknown", f'{SR}.dayOfWeek[0]: must be one of mon, tue', {f"{SR}.dayOfWeek": ["monday"]}),
    Bad("dayOfWeek twice", f'{SR}.dayOfWeek[1]: "mon" is given twice', {f"{SR}.dayOfWeek": ["mon", "mon"]}),
    Bad("timeOfDay and when", f"{SR}.when: cannot be combined with timeOfDay", {f"{SR}.timeOfDay": ["08:00:00"]}),
    Bad("offset without when", f"{N0}.timing.repeat.offset: is only allowed with when",
        {f"{N0}.timing.repeat.offset": 10}),
    Bad("no times", f'{SR}.timeOfDay: is required with periodUnit "d" or "wk"', {f"{SR}.when": DELETE}),
    Bad("times empty", f"{SR}.when: must be a non-empty list, not []", {f"{SR}.when": []}),
    Bad("frequency is not the number of times", f"{SR}.frequency: is 2 but when names 1 time(s)",
        {f"{SR}.frequency": 2}, only="frequency against the times"),
    Bad("one time twice", f"{N0}.timing.repeat.timeOfDay[1]: gives 09:00, already given by timeOfDay[0]",
        {f"{N0}.timing.repeat.timeOfDay": ["09:00:00", "09:00:00"], f"{N0}.timing.repeat.frequency": 2}),
    Bad("two codes on one clock time", f"{SR}.when[1]: gives 08:00, already given by when[0]",
        {f"{SR}.when": ["MORN", "CM"], f"{SR}.frequency": 2}, only="one clock time twice"),
    Bad("timeOfDay without seconds", f'{N0}.timing.repeat.timeOfDay[0]: must be a time HH:MM:SS, not "09:00"',
        {f"{N0}.timing.repeat.timeOfDay": ["09:00"]}),
    Bad("offset too long", f"{SR}.offset: must be an integer 0..1440 (minutes), not 2000", {f"{SR}.offset": 2000}),
    Bad("when code unknown", f'{SR}.when[0]: "BREAKFAST" is not a FHIR EventTiming code', {f"{SR}.when": ["BREAKFAST"]}),
    Bad("when code not in routine", f'{SR}.when[0]: "NOON" is not in routine', {f"{SR}.when": ["NOON"]},
        only="codes in routine"),
    Bad("entries overlap", "medications[1].dosage[1].timing.repeat.boundsPeriod: overlaps medications[1].dosage[0] "
        "(2026-11-27)", {f"{N0}.timing.repeat.boundsPeriod.end": "2026-11-27"}, only="overlapping entries"),
    Bad("maxDosePerPeriod missing", f"{H}.maxDosePerPeriod: is required for an as-needed dosage",
        {f"{H}.maxDosePerPeriod": DELETE}),
    Bad("numerator missing", f"{H}.maxDosePerPeriod.numerator: is required", {f"{H}.maxDosePerPeriod.numerator": DELETE}),
    Bad("numerator not an object", f"{H}.maxDosePerPeriod.numerator: must be an object",
        {f"{H}.maxDosePerPeriod.numerator": 3}),
    Bad("numerator too many", f"{H}.maxDosePerPeriod.numerator.value: 101 tablets in one period is more than",
        {f"{H}.maxDosePerPeriod.numerator.value": 101}),
    Bad("denominator unit", f'{H}.maxDosePerPeriod.denominator.unit: must be h, d or wk, not "mo"',
        {f"{H}.maxDosePerPeriod.denominator.unit": "mo"}),
    Bad("denominator zero", f"{H}.maxDosePerPeriod.denominator.value: must be a positive number, not 0",
        {f"{H}.maxDosePerPeriod.denominator.value": 0}),
    Bad("denominator too long", f"{H}.maxDosePerPeriod.denominator.value: 400 d must be between 1 minute and 366",
        {f"{H}.maxDosePerPeriod.denominator.value": 400}, only="intervals"),
    Bad("limit below the dose", f"{H}.maxDosePerPeriod.numerator.value: is below the dose itself (4)",
        {f"{H}.doseAndRate[0].doseQuantity.value": 4}, only="limit against the dose"),
]


def test_the_table_is_long_and_names_one_class_a_row():
    assert len(BAD) >= 25
    assert len({bad.name for bad in BAD}) == len(BAD)
    assert len({bad.problem for bad in BAD}) >= len(BAD) - 4  # a few classes at two places


@pytest.mark.parametrize("bad", BAD, ids=lambda bad: bad.name)
def test_an_invalid_document_fails_the_validator_and_the_schema(bad):
    doc = bad.document()
    found = problems(doc, bad.default_timezone)
    assert any(p.startswith(bad.problem) for p in found), found
    errors = schema_errors(doc)
    if bad.only:
        # A rule only the validator checks: the schema lets this document through, so the
        # docs' list of such rules stays true.
        assert errors == [], [e.message for e in errors]
        return
    assert errors, "the schema accepts it"
    where = steps(bad.problem.split(": ", 1)[0])
    near = [e for e in errors if _related(list(e.absolute_path), where)]
    assert near, (where, [(list(e.absolute_path), e.message) for e in errors])


@pytest.mark.parametrize("field", ["issued_at", "expires_at"])
@pytest.mark.parametrize("text", ["2026-12-01", "20261201T0900Z", "2026-12-01 09:00:00Z", "2026-W48-2T09:00:00Z",
                                  "2026-12-01T09:00Z", "2026-12-01T09:00:00+0000", "2026-12-01T09:00:00,5Z",
                                  "2026-12-01T09:00:00+00:60", "\uff12026-12-01T09:00:00Z"])
def test_other_iso_spellings_fail_the_validator_and_the_schema(field, text):
    """RFC 3339's one form only: what else `datetime.fromisoformat` reads is refused by both."""
    doc = {**base(), field: text}
    assert [p for p in problems(doc) if p.startswith(f"{field}: must be an ISO date-time in RFC 3339 form")]
    assert [e for e in schema_errors(doc) if list(e.absolute_path) == [field]]


@pytest.mark.parametrize("path, value", [
    ("routine.MORN", "0\uff18:00"), (f"{N0}.timing.repeat.timeOfDay[0]", "0\u0669:00:00"),
    (f"{N0}.timing.repeat.boundsPeriod.start", "2026-11-2\u0660"), ("issued_at", "2026-11-20T0\uff19:00:00Z"),
])
def test_other_scripts_digits_fail_the_validator_and_the_schema(path, value):
    """Python's `\\d` takes any script's digits (ECMA-262's does not): both say [0-9]."""
    doc = base()
    edit(doc, path, value)
    assert [p for p in problems(doc) if p.startswith(f"{path}: ")]
    assert [e for e in schema_errors(doc) if list(e.absolute_path) == steps(path)]


def _related(schema_path: list, validator_path: list) -> bool:
    """The schema's error is at the validator's field, inside it, or at most two levels up."""
    if schema_path[:len(validator_path)] == validator_path:
        return True
    return validator_path[:len(schema_path)] == schema_path and len(validator_path) - len(schema_path) <= 2


def test_the_validator_only_rules_are_listed_in_the_docs():
    section = _section(SCHEDULE_MD.read_text(encoding="utf-8"), "## What only the validator checks")
    for phrase in sorted({bad.only for bad in BAD if bad.only}):
        assert phrase in section, f"docs/SCHEDULE.md does not list {phrase!r}"


def test_the_documented_errors_are_the_validators_words():
    """Every line of the Errors section's example output is one the validator gives."""
    section = _section(SCHEDULE_MD.read_text(encoding="utf-8"), "## Errors")
    lines = [line for block in re.findall(r"```\n(.*?)```", section, re.S) for line in block.splitlines()]
    assert len(lines) >= 20
    said = {p for bad in BAD for p in problems(bad.document(), bad.default_timezone)}
    for line in lines:
        assert line in said, line


def _section(text: str, heading: str) -> str:
    start = text.index(heading + "\n")
    end = text.find("\n## ", start + len(heading))
    return text[start:end if end != -1 else None]


# -- the valid documents ----------------------------------------------------------


def _doc_blocks() -> list[tuple[str, Any]]:
    """Whole schedule documents in the docs' JSON blocks, and their dosage lists in a medication."""
    found = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for index, block in enumerate(re.findall(r"```json\n(.*?)```", page.read_text(encoding="utf-8"), re.S)):
            name = f"{page.name}#{index}"
            for text in (block, "{" + block + "}"):
                try:
                    value = json.loads(text)
                except json.JSONDecodeError:
                    continue
                if isinstance(value, dict) and value.get("schema") == validator.SCHEMA:
                    found.append((name, value))
                elif isinstance(value, dict) and set(value) == {"dosage"}:
                    doc = base()
                    doc["medications"][0]["dosage"] = value["dosage"]
                    found.append((name, doc))
                break
    return found


EXAMPLE_FILES = sorted((ROOT / "dispenser" / "demo").glob("*.json"))


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_example_file_passes_both(path):
    doc = json.loads(path.read_text(encoding="utf-8"))
    parse_schedule(doc, "UTC")
    assert schema_errors(doc) == []


def test_the_scenarios_name_example_files():
    """The scenarios' schedules are the files above, so those are all of them."""
    for scenario in [*ROOT.glob("tests/data/examples/*.toml"), *ROOT.glob("dispenser/demo/*.toml")]:
        named = tomllib.loads(scenario.read_text(encoding="utf-8")).get("schedule")
        assert named is None or (scenario.parent / named) in EXAMPLE_FILES


@pytest.mark.parametrize("name, doc", _doc_blocks(), ids=[name for name, _ in _doc_blocks()])
def test_every_document_in_the_docs_passes_both(name, doc):
    parse_schedule(doc, "UTC")
    assert schema_errors(doc) == []


def test_the_docs_carry_documents_to_check():
    """The full example and the split dose of docs/SCHEDULE.md, at least."""
    assert len(_doc_blocks()) >= 2


RECORDER = """
import json, os, sys
import dispenser.schedule as schedule
parse, out = schedule._Parser.parse, open(os.environ["SCHEMA_RECORD"], "a", encoding="utf-8")
def recording(self, doc):
    result = parse(self, doc)          # only documents the validator accepts are written
    try:
        out.write(json.dumps(doc, allow_nan=False) + "\\n")
    except (TypeError, ValueError):
        pass                           # not JSON (a test's Python object): no document to check
    return result
schedule._Parser.parse = recording
import pytest
sys.exit(pytest.main(sys.argv[1:]))
"""

# The tests that write schedule documents of every shape; hypothesis' generated ones
# (test_schedule_robust.py) are left out for time.
RECORDED = ["test_schedule.py", "test_schedule_v2.py", "test_scheduler.py", "test_section6.py"]


def test_every_document_the_schedule_tests_accept_passes_the_schema(tmp_path):
    """Runs the schedule tests once more, writing down every document the validator accepted."""
    record = tmp_path / "accepted.jsonl"
    run = subprocess.run(
        [sys.executable, "-c", RECORDER, "-q", "-p", "no:xdist", "-p", "no:cacheprovider",
         "-p", "no:randomly", *[str(ROOT / "tests" / name) for name in RECORDED]],
        cwd=tmp_path, env={**os.environ, "SCHEMA_RECORD": str(record)}, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    docs = {line for line in record.read_text(encoding="utf-8").splitlines()}
    assert len(docs) > 200
    failures = [(json.loads(line), [e.message for e in schema_errors(json.loads(line))]) for line in docs]
    failures = [f for f in failures if f[1]]
    assert failures == [], failures[:3]


# -- the schema itself ------------------------------------------------------------


def test_the_schema_is_draft_2020_12_with_its_id():
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert f'`{SCHEMA["$id"]}`' in SCHEDULE_MD.read_text(encoding="utf-8")


def test_the_schemas_words_are_the_validators():
    defs = SCHEMA["$defs"]
    repeat = defs["scheduledRepeat"]["properties"]
    assert SCHEMA["properties"]["schema"]["const"] == validator.SCHEMA
    assert set(SCHEMA["properties"]) == set(validator._TOP_KEYS)
    assert set(defs["medication"]["properties"]) == set(validator._MEDICATION_KEYS)
    assert set(SCHEMA["properties"]["routine"]["propertyNames"]["enum"]) == validator.EVENT_CODES
    assert set(repeat["when"]["items"]["enum"]) == validator.EVENT_CODES
    assert tuple(repeat["dayOfWeek"]["items"]["enum"]) == validator.WEEKDAYS
    assert set(repeat) == set(validator._SCHEDULED_REPEAT_KEYS) | {"id", "extension"}
    assert set(defs["asNeededRepeat"]["properties"]) == set(validator._PRN_REPEAT_KEYS) | {"id", "extension"}
    assert set(defs["dosage"]["properties"]) == (set(validator._ENTRY_KEYS) | set(validator._TEXT_KEYS)
                                                 | {"id", "extension"})
    assert repeat["count"]["maximum"] == validator.MAX_COUNT
    assert repeat["offset"]["maximum"] == validator.MAX_OFFSET_MIN
    assert defs["medication"]["properties"]["display"]["maxLength"] == validator.DISPLAY_WIDTH
    assert defs["medication"]["properties"]["ingredient"]["properties"]["code"]["maxLength"] == validator.MAX_CODE_LENGTH
    assert (defs["medication"]["properties"]["separate_from"]["items"]["properties"]["ingredient"]["maxLength"]
            == validator.MAX_CODE_LENGTH)
    assert defs["medication"]["properties"]["min_gap_h"]["maximum"] == validator.MAX_GAP_HOURS
    assert SCHEMA["properties"]["version"]["maximum"] == validator.MAX_VERSION


def test_the_package_ships_the_schema():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "schedule.schema.json" in data["tool"]["setuptools"]["package-data"]["dispenser"]
