"""`schedule from-fhir`: real prescriptions in, a schedule that gives what a pharmacist expects out.

The inputs (tests/data/fhir/) and every dosage written out are checked by the official FHIR
models (fhir.resources, R4B), so neither side is FHIR by our own reading only.
"""
from __future__ import annotations

import copy
import json
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from fhir_models import fhir_model

from dispenser.fhir_in import FhirError, hourly_times, schedule_from_fhir
from dispenser.schedule import parse_schedule
from dispenser.scheduler import doses_between
from inprocess import dispenser
from support import local

DATA = Path(__file__).resolve().parent / "data" / "fhir"
FILES = ["sertraline-titration", "lithium-bid", "naltrexone-daily", "hydroxyzine-prn", "regimen"]
NOW = datetime(2026, 11, 19, 17, 0, tzinfo=timezone.utc)
TZ = "America/New_York"


def load(name: str) -> dict:
    return json.loads((DATA / f"{name}.json").read_text())


def convert(resource: dict, **kwargs) -> dict:
    return schedule_from_fhir(resource, now=NOW, timezone=TZ, **kwargs)


def refusals(resource: dict, **kwargs) -> list[str]:
    with pytest.raises(FhirError) as caught:
        convert(resource, **kwargs)
    return caught.value.problems


def doses(document: dict, start: str, days: int = 1) -> list[tuple[str, str, int]]:
    """(medication, local time, tablets) of the doses from `start` (local) for `days` days."""
    schedule = parse_schedule(document)
    begin = local(start)
    found = doses_between(schedule, begin, begin + timedelta(days=days))
    return [(d.medication_id, d.scheduled_at.astimezone(schedule.tz).strftime("%Y-%m-%d %H:%M"), d.quantity)
            for d in found]


def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return dispenser(*args, **kwargs)


# -- the inputs are FHIR, by the official models ---------------------------------------------------


@pytest.mark.parametrize("name", FILES)
def test_every_input_is_valid_fhir(name):
    resource = load(name)
    model = fhir_model("Bundle" if resource["resourceType"] == "Bundle" else "MedicationRequest")
    parsed = model.model_validate(resource)
    assert json.loads(parsed.model_dump_json(exclude_none=True)) == resource  # nothing dropped or changed


@pytest.mark.parametrize("name", FILES)
def test_every_dosage_written_out_is_still_a_fhir_dosage(name):
    document = convert(load(name))
    parse_schedule(document)  # the output validates as a schedule
    for medication in document["medications"]:
        if "ingredient" in medication:
            fhir_model("Coding").model_validate(medication["ingredient"])
        if "strength" in medication:
            fhir_model("Quantity").model_validate(medication["strength"])
        for entry in medication["dosage"]:
            parsed = fhir_model("Dosage").model_validate(entry)
            assert json.loads(parsed.model_dump_json(exclude_none=True)) == entry


# -- the doses a pharmacist expects -------------------------------------------------------------


def test_sertraline_titration_gives_50_mg_for_two_weeks_then_100_mg():
    document = convert(load("sertraline-titration"))
    [medication] = document["medications"]
    assert medication["id"] == "sertraline"
    assert medication["ingredient"]["code"] == "36437"
    assert medication["strength"] == {"value": 50, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"}
    assert doses(document, "2026-11-19T00:00", days=1) == []  # starts on the 20th
    assert doses(document, "2026-11-20T00:00", days=1) == [("sertraline", "2026-11-20 08:00", 1)]
    assert doses(document, "2026-12-03T00:00", days=2) == [("sertraline", "2026-12-03 08:00", 1),
                                                          ("sertraline", "2026-12-04 08:00", 2)]
    month = doses(document, "2026-11-20T00:00", days=60)
    assert len(month) == 60 and sum(q for *_, q in month) == 14 * 1 + 46 * 2


def test_lithium_bid_is_one_capsule_at_eight_and_at_eight():
    document = convert(load("lithium-bid"))
    assert document["routine"] == {"MORN": "08:00", "EVE": "20:00"}
    assert doses(document, "2026-11-21T00:00", days=2) == [
        ("lithium-carbonate", "2026-11-21 08:00", 1), ("lithium-carbonate", "2026-11-21 20:00", 1),
        ("lithium-carbonate", "2026-11-22 08:00", 1), ("lithium-carbonate", "2026-11-22 20:00", 1)]


def test_naltrexone_once_daily_with_no_time_is_given_in_the_morning():
    document = convert(load("naltrexone-daily"))
    repeat = document["medications"][0]["dosage"][0]["timing"]["repeat"]
    assert repeat == {"frequency": 1, "period": 1, "periodUnit": "d", "when": ["MORN"]}
    assert doses(document, "2026-11-21T00:00", days=3) == [
        ("naltrexone", f"2026-11-{day} 08:00", 1) for day in (21, 22, 23)]  # 50 mg = one 50 mg tablet


def test_hydroxyzine_as_needed_keeps_its_interval_and_daily_maximum():
    document = convert(load("hydroxyzine-prn"))
    entry = document["medications"][0]["dosage"][0]
    assert entry["asNeededBoolean"] is True and "asNeededCodeableConcept" not in entry
    assert entry["text"].startswith("25 mg every 6 hours if needed")  # its own text, kept
    medication = parse_schedule(document).medications[0]
    assert medication.dosages == ()
    prn = medication.as_needed
    assert (prn.quantity, prn.min_interval, prn.max_units, prn.max_period) == \
        (1, timedelta(hours=6), 4, timedelta(days=1))  # 25 mg, 6 h apart, 100 mg = 4 tablets a day
    assert doses(document, "2026-11-21T00:00", days=3) == []  # never scheduled


def test_the_regimen_gets_one_compartment_a_medication_and_every_dose_of_a_day():
    document = convert(load("regimen"), device_id="disp-0001")
    assert document["device_id"] == "disp-0001"
    assert [(m["id"], m["compartment"]) for m in document["medications"]] == [
        ("sertraline", 1), ("lithium-carbonate", 2), ("naltrexone", 3), ("hydroxyzine", 4)]
    assert document["issued_at"] == "2026-11-19T16:30:00Z"  # the Bundle's timestamp
    assert document["version"] == int(datetime(2026, 11, 19, 16, 30, tzinfo=timezone.utc).timestamp())
    assert doses(document, "2026-12-04T00:00") == [
        ("lithium-carbonate", "2026-12-04 08:00", 1), ("naltrexone", "2026-12-04 08:00", 1),
        ("sertraline", "2026-12-04 08:00", 2), ("lithium-carbonate", "2026-12-04 20:00", 1)]


def test_the_dosage_instruction_is_copied_but_for_the_timing_code():
    source = load("sertraline-titration")["entry"][2]["resource"]["dosageInstruction"]
    written = convert(load("sertraline-titration"))["medications"][0]["dosage"]
    for before, after in zip(source, written):
        assert {k: v for k, v in after.items() if k != "timing"} == {k: v for k, v in before.items() if k != "timing"}
        assert "code" not in after["timing"]
        assert after["timing"]["repeat"]["boundsPeriod"] == before["timing"]["repeat"]["boundsPeriod"]
        assert after["timing"]["repeat"]["when"] == ["MORN"]
    lithium = convert(load("lithium-bid"))["medications"][0]["dosage"][0]
    assert lithium["extension"][0]["valueBoolean"] is True
    assert lithium["additionalInstruction"] == [{"text": "Drink plenty of fluids"}]


# -- the routine table ----------------------------------------------------------------------------


def lithium_with(timing: dict) -> dict:
    request = load("lithium-bid")
    request["dosageInstruction"][0]["timing"] = timing
    return request


def gts(code: str) -> dict:
    return {"code": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-GTSAbbreviation",
                                 "code": code}]}}


@pytest.mark.parametrize("code, times", [
    ("QD", ["08:00"]), ("AM", ["08:00"]), ("PM", ["20:00"]), ("BID", ["08:00", "20:00"]),
    ("TID", ["08:00", "14:00", "20:00"]), ("QID", ["08:00", "12:00", "16:00", "20:00"]),
    ("BED", ["22:00"]), ("HS", ["22:00"]), ("Q12H", ["08:00", "20:00"]), ("Q8H", ["06:00", "14:00", "22:00"]),
    ("Q6H", ["00:00", "06:00", "12:00", "18:00"]), ("Q4H", ["02:00", "06:00", "10:00", "14:00", "18:00", "22:00"]),
])
def test_timing_codes_are_placed_on_the_routine_by_the_table(code, times):
    document = convert(lithium_with(gts(code)))
    day = doses(document, "2026-11-21T00:00")
    assert [when[-5:] for _, when, _ in day] == times


def test_every_other_day_counts_from_its_start_and_needs_one():
    bounded = gts("QOD") | {"repeat": {"boundsPeriod": {"start": "2026-11-21"}}}
    assert [when for _, when, _ in doses(convert(lithium_with(bounded)), "2026-11-21T00:00", days=5)] == [
        "2026-11-21 08:00", "2026-11-23 08:00", "2026-11-25 08:00"]
    assert refusals(lithium_with(gts("QOD"))) == [
        "MedicationRequest.dosageInstruction[0].timing.repeat.boundsPeriod.start: is required (every 2 days counts from it)"]


def test_weekly_is_on_the_weekday_of_its_start():
    weekly = gts("WK") | {"repeat": {"boundsPeriod": {"start": "2026-11-23"}}}  # a Monday
    assert [when for _, when, _ in doses(convert(lithium_with(weekly)), "2026-11-21T00:00", days=14)] == [
        "2026-11-23 08:00", "2026-11-30 08:00"]


@pytest.mark.parametrize("frequency, times", [
    (1, ["08:00"]), (2, ["08:00", "20:00"]), (3, ["08:00", "14:00", "20:00"]),
    (4, ["08:00", "12:00", "16:00", "20:00"]), (6, ["02:00", "06:00", "10:00", "14:00", "18:00", "22:00"]),
])
def test_untimed_daily_doses_are_placed_on_the_routine(frequency, times):
    document = convert(lithium_with({"repeat": {"frequency": frequency, "period": 1, "periodUnit": "d"}}))
    assert [when[-5:] for _, when, _ in doses(document, "2026-11-21T00:00")] == times


def test_every_8_hours_with_no_start_is_at_six_two_and_ten():
    document = convert(lithium_with({"repeat": {"frequency": 1, "period": 8, "periodUnit": "h"}}))
    assert [when[-5:] for _, when, _ in doses(document, "2026-11-21T00:00")] == ["06:00", "14:00", "22:00"]


def test_times_the_prescription_names_are_kept_as_they_are():
    timing = {"repeat": {"frequency": 2, "period": 1, "periodUnit": "d", "timeOfDay": ["09:00:00", "21:00:00"]}}
    assert [when[-5:] for _, when, _ in doses(convert(lithium_with(timing)), "2026-11-21T00:00")] == ["09:00", "21:00"]
    with_code = gts("BID") | {"repeat": {"when": ["WAKE", "HS"]}}
    document = convert(lithium_with(with_code))
    assert document["routine"] == {"WAKE": "07:00", "HS": "22:00"}
    assert [when[-5:] for _, when, _ in doses(document, "2026-11-21T00:00")] == ["07:00", "22:00"]


def test_the_table_is_exact():
    assert hourly_times(8) == ["06:00:00", "14:00:00", "22:00:00"]
    assert len(hourly_times(1)) == 24 and hourly_times(1)[0] == "00:00:00"


def test_two_prescriptions_of_one_tablet_share_its_compartment():
    bundle = load("sertraline-titration")
    request = bundle["entry"][2]["resource"]
    second = copy.deepcopy(request)
    second["id"] = "sertraline-step-2"
    request["dosageInstruction"] = request["dosageInstruction"][:1]
    second["dosageInstruction"] = second["dosageInstruction"][1:]
    bundle["entry"].append({"fullUrl": "urn:uuid:7f0c2b7e-2a4b-4c55-9a57-4f8b1a1e0a04", "resource": second})
    document = convert(bundle)
    assert len(document["medications"]) == 1 and len(document["medications"][0]["dosage"]) == 2
    assert doses(document, "2026-12-03T00:00", days=2) == [("sertraline", "2026-12-03 08:00", 1),
                                                          ("sertraline", "2026-12-04 08:00", 2)]


# -- refused, each with its FHIR path --------------------------------------------------------------

L = "MedicationRequest"
D = f"{L}.dosageInstruction[0]"


def _set(resource: dict, path: list, value) -> dict:
    target = resource
    for key in path[:-1]:
        target = target[key]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return resource


DELETE = object()
DOSE = ["dosageInstruction", 0]
REFUSED = [
    (["status"], "on-hold", f'{L}.status: is "on-hold": only an active prescription is dispensed'),
    (["status"], "draft", f'{L}.status: is "draft": only an active prescription is dispensed'),
    (["intent"], "proposal", f'{L}.intent: is "proposal": not an order to give it'),
    (["doNotPerform"], True, f"{L}.doNotPerform: is true: this prescription says not to give it"),
    (["modifierExtension"], [{"url": "http://x.org/e", "valueBoolean": True}],
     f"{L}.modifierExtension: is refused: it changes what the element means"),
    (DOSE + ["modifierExtension"], [{"url": "http://x.org/e", "valueBoolean": True}],
     f"{D}.modifierExtension: is refused: it changes what the element means"),
    (["dosageInstruction"], DELETE, f"{L}.dosageInstruction: is required: a dispenser needs to know when and how much"),
    (["contained", 0, "form"], {"text": "oral solution"},
     f'{L}.contained[0].form: "oral solution" is not a tablet or capsule: the dispenser gives whole tablets'),
    (["contained", 0, "status"], "inactive", f'{L}.contained[0].status: is "inactive": not a medication to give'),
    (["contained", 0, "ingredient", 0, "strength", "denominator"], {"value": 5, "unit": "mL"},
     f'{L}.contained[0].ingredient[0].strength.denominator: is per "5 mL": the dispenser needs the strength '
     "of one tablet or capsule"),
    (["medicationReference", "reference"], "#lithium-600",
     f'{L}.medicationReference.reference: "#lithium-600" is not among the contained resources'),
    (DOSE + ["doseAndRate", 0, "doseQuantity"], {"value": 450, "unit": "mg"},
     f"{D}.doseAndRate[0].doseQuantity.value: 450 mg is not a whole number of tablets of 300 mg"),
    (DOSE + ["doseAndRate", 0, "doseQuantity"], {"value": 1, "unit": "mL"},
     f'{D}.doseAndRate[0].doseQuantity.unit: "mL" is neither a count unit'),
    (DOSE + ["timing"], gts("MO"), f'{D}.timing.code: "MO" is not one the dispenser places on its routine'),
    (DOSE + ["timing"], {"code": {"text": "twice a day"}},
     f'{D}.timing.code: "twice a day" has no coding of http://terminology.hl7.org/CodeSystem/v3-GTSAbbreviation'),
    (DOSE + ["timing"], gts("BID") | {"repeat": {"frequency": 3}},
     f"{D}.timing.repeat.frequency: 3 disagrees with timing.code BID (2)"),
    (DOSE + ["timing"], {"repeat": {"frequency": 5, "period": 1, "periodUnit": "d"}},
     f"{D}.timing.repeat.frequency: 5 doses every 1 d name no times of day: write them in timeOfDay or when"),
    (DOSE + ["timing"], {"repeat": {"frequency": 2, "period": 1, "periodUnit": "wk"}},
     f"{D}.timing.repeat.frequency: 2 times a week names no days"),
    (DOSE + ["timing"], {"repeat": {"frequency": 1, "period": 1, "periodUnit": "mo"}},
     f'{D}.timing.repeat.periodUnit: "mo" is not supported'),
    (DOSE + ["timing"], {"event": ["2026-11-21T09:00:00Z"], "repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
     f"{D}.timing.event: is not supported"),
    (DOSE + ["maxDosePerAdministration"], {"value": 1}, f"{D}.maxDosePerAdministration: is not supported"),
    (DOSE + ["asNeededBoolean"], True, f"{D}.maxDosePerPeriod: is required for an as-needed dosage"),
    (DOSE + ["timing"], {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d", "timeOfDay": ["09:00"]}},
     f'{D}.timing.repeat.timeOfDay[0]: must be a time HH:MM:SS, not "09:00"'),
]


@pytest.mark.parametrize("path, value, expected", REFUSED, ids=[e[2][len(L):][:60] for e in REFUSED])
def test_what_cannot_be_dispensed_safely_is_refused_with_its_fhir_path(path, value, expected):
    problems = refusals(_set(load("lithium-bid"), path, value))
    assert any(p.startswith(expected) for p in problems), problems


def test_prn_without_a_daily_maximum_names_the_prescription_path():
    request = load("hydroxyzine-prn")
    del request["dosageInstruction"][0]["maxDosePerPeriod"]
    assert refusals(request) == [f"{D}.maxDosePerPeriod: is required for an as-needed dosage (a limit per period)"]


def test_overlapping_titration_steps_name_both_by_their_bundle_paths():
    bundle = load("sertraline-titration")
    bundle["entry"][2]["resource"]["dosageInstruction"][0]["timing"]["repeat"]["boundsPeriod"]["end"] = "2026-12-04"
    step = "Bundle.entry[2].resource.dosageInstruction"
    assert refusals(bundle) == [f"{step}[1].timing.repeat.boundsPeriod: overlaps {step}[0] (2026-12-04)"]


def test_a_medication_missing_from_the_bundle_is_named():
    bundle = load("naltrexone-daily")
    del bundle["entry"][1]
    assert refusals(bundle) == ['Bundle.entry[0].resource.medicationReference.reference: "Medication/naltrexone-50" '
                                "is not in the Bundle (put the Medication in it)"]


@pytest.mark.parametrize("resource, expected", [
    ({"resourceType": "Patient"}, '(document): must be a FHIR Bundle or MedicationRequest, not "Patient"'),
    ([1, 2], "(document): must be a FHIR Bundle or MedicationRequest, not that"),
    ({"resourceType": "Bundle", "type": "collection", "entry": []}, "Bundle.entry: holds no MedicationRequest"),
])
def test_what_is_not_a_prescription_is_refused(resource, expected):
    assert refusals(resource) == [expected]


def test_more_medications_than_compartments_is_refused():
    assert refusals(load("regimen"), compartments=3) == ["Bundle: 4 medications need 4 compartments; the device has 3"]


# -- the command ----------------------------------------------------------------------------------


def test_from_fhir_then_validate_then_show_gives_the_doses(tmp_path):
    result = run("schedule", "from-fhir", str(DATA / "regimen.json"), "--timezone", TZ, "--device", "disp-0001")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "schedule.json"
    out.write_text(result.stdout)
    assert run("schedule", "validate", str(out)).returncode == 0
    shown = run("schedule", "show", "--file", str(out), "--from", "2026-12-04T00:00", "--days", "1", "--json")
    assert [(d["medication_id"], d["scheduled_at"], d["quantity"]) for d in json.loads(shown.stdout)] == [
        ("lithium-carbonate", "2026-12-04T13:00:00Z", 1), ("naltrexone", "2026-12-04T13:00:00Z", 1),
        ("sertraline", "2026-12-04T13:00:00Z", 2), ("lithium-carbonate", "2026-12-05T01:00:00Z", 1)]


def test_from_fhir_output_applies_on_a_device(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(f'[device]\nid = "disp-0001"\ntimezone = "{TZ}"\n[hardware]\nbackend = "sim"\n'
                      f'compartments = 4\n[storage]\ndb = "{tmp_path / "dispenser.db"}"\n')
    result = run("schedule", "from-fhir", str(DATA / "regimen.json"), "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["timezone"] == TZ  # the config's zone
    out = tmp_path / "schedule.json"
    out.write_text(result.stdout)
    applied = run("schedule", "apply", str(out), "--config", str(config))
    assert applied.returncode == 0, applied.stderr


def test_from_fhir_refusals_are_one_line_each_and_exit_2(tmp_path):
    request = load("lithium-bid")
    request["status"] = "stopped"
    request["dosageInstruction"][0]["timing"] = gts("MO")
    path = tmp_path / "rx.json"
    path.write_text(json.dumps(request))
    result = run("schedule", "from-fhir", str(path), "--timezone", TZ)
    assert result.returncode == 2 and result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [f"{L}.status", f"{D}.timing.code"]


@pytest.mark.parametrize("args, expected", [
    (["missing.json", "--timezone", TZ], "missing.json: no such file"),
    (["{file}"], "--timezone: is required"),
    (["{file}", "--timezone", "Mars/Olympus"], "--timezone: 'Mars/Olympus' is not an IANA time zone name"),
])
def test_from_fhir_bad_arguments_are_one_line(tmp_path, args, expected):
    file = str(DATA / "lithium-bid.json")
    result = run("schedule", "from-fhir", *[a.replace("{file}", file) for a in args], cwd=tmp_path,
                 env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and expected in result.stderr


def test_every_problem_is_named_in_one_round_trip():
    request = load("lithium-bid")
    request["status"] = "on-hold"
    request["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"] = {"value": 450, "unit": "mg"}
    assert [p.split(":")[0] for p in refusals(request)] == [f"{L}.status", f"{D}.doseAndRate[0].doseQuantity.value"]


def test_prescriptions_for_two_people_are_refused():
    bundle = load("regimen")
    bundle["entry"][3]["resource"]["subject"] = {"reference": "Patient/alex"}  # lithium, for someone else
    assert refusals(bundle) == ["Bundle.entry[3].resource.subject: is another person than "
                                "Bundle.entry[2].resource.subject: a dispenser holds one person's medications"]


def test_the_documented_table_is_the_one_in_force():
    from dispenser.fhir_in import ROUTINE, TIMING_CODES
    doc = (Path(__file__).resolve().parents[1] / "docs" / "FHIR.md").read_text()
    assert all(f"`{code}`" in doc for code in TIMING_CODES)
    assert all(f"`{code}`" in doc for code in ROUTINE)
    assert all(time in doc for time in ROUTINE.values())


# -- any input: a schedule that validates, or problems; never a traceback -----------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

JSON = st.recursive(st.none() | st.booleans() | st.integers(-5, 500) | st.floats(allow_nan=False) |
                    st.sampled_from(["", "BID", "mg", "d", "active", "#lithium-300", "09:00:00", "2026-11-20"]),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                        st.sampled_from(["code", "coding", "repeat", "value", "unit", "text", "system", "reference"]),
                        inner, max_size=3), max_leaves=8)


def paths(value, here=()):
    yield here
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        yield from paths(item, here + (key,))


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # examples: tests/depth.py
@given(name=st.sampled_from(["lithium-bid", "regimen", "hydroxyzine-prn"]), pick=st.integers(0, 10_000),
       value=JSON)
def test_a_broken_prescription_is_refused_in_lines_never_a_crash(name, pick, value):
    resource = load(name)
    every = list(paths(resource))[1:]
    path = every[pick % len(every)]
    _set(resource, list(path), value)
    try:
        document = convert(resource)
    except FhirError as error:
        assert error.problems and all(": " in p and "\n" not in p for p in error.problems)
    else:
        parse_schedule(document)


def test_a_document_nested_beyond_reason_is_one_line():
    request = load("lithium-bid")
    deep: dict = {}
    node = deep
    for _ in range(5000):
        node["extension"] = [{}]
        node = node["extension"][0]
    request["dosageInstruction"][0]["extension"] = [deep]
    assert refusals(request) == ["(document): nested too deeply"]
