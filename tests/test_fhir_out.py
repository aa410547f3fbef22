"""`export fhir`: a real log (the engine on a real store) out as FHIR, checked by the official models.

Every resource is validated both ways with fhir.resources (R4B): the model accepts it, and
what the model writes back is what we wrote, so nothing is dropped or read differently.
"""
from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from inprocess import dispenser
from fhir_models import fhir_model

from dispenser.fhir_in import schedule_from_fhir
from dispenser.fhir_out import DOSE_SYSTEM, OUTCOME_SYSTEM, export_bundle, medications_from_documents, resource_id
from support import DEMO, Rig, local

DATA = Path(__file__).resolve().parent / "data" / "fhir"
MODELS = {"MedicationAdministration", "Observation", "Device"}  # what a bundle of ours may hold
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


def same(value):
    """Times as instants: the models write 12:45:00.000Z as 12:45:00Z, the same moment."""
    if isinstance(value, dict):
        return {key: same(item) for key, item in value.items()}
    if isinstance(value, list):
        return [same(item) for item in value]
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+(Z|[+-]\d\d:\d\d)", value):
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value


def valid(bundle: dict) -> dict:
    """Check a bundle and each of its resources both ways with the official models."""
    assert same(json.loads(fhir_model("Bundle").model_validate(bundle).model_dump_json(exclude_none=True))) == same(bundle)
    for entry in bundle["entry"]:
        resource = entry["resource"]
        assert resource["resourceType"] in MODELS, resource["resourceType"]
        model = fhir_model(resource["resourceType"]).model_validate(resource)
        assert same(json.loads(model.model_dump_json(exclude_none=True))) == same(resource)
        assert entry["fullUrl"] == f"urn:uuid:{resource['id']}"
        assert entry["request"] == {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}
    return bundle


def resources(bundle: dict, kind: str) -> list[dict]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def dose(bundle: dict, medication: str, scheduled_local: str) -> dict:
    scheduled = local(scheduled_local).strftime("%Y-%m-%dT%H:%M:%SZ")
    found = [r for r in resources(bundle, "MedicationAdministration")
             if r["identifier"][0] == {"system": DOSE_SYSTEM, "value": f"disp-test/{medication}/{scheduled}"}]
    assert len(found) == 1, [r["identifier"] for r in resources(bundle, "MedicationAdministration")]
    return found[0]


def reasons(resource: dict) -> list[str]:
    return [c["code"] for reason in resource.get("statusReason", []) for c in reason["coding"]
            if c["system"] == OUTCOME_SYSTEM]


def moved(document: dict, version: int, **changes) -> dict:
    """The regimen with medications' first dosage timings replaced, as a new version."""
    document = copy.deepcopy(document)
    document["version"] = version
    for medication in document["medications"]:
        if medication["id"] in changes:
            medication["dosage"][-1]["timing"]["repeat"] = changes[medication["id"]]
    return document


@pytest.fixture(scope="module")
def regimen() -> dict:
    bundle = json.loads((DATA / "regimen.json").read_text())
    return schedule_from_fhir(bundle, now=datetime(2026, 11, 19, 17, tzinfo=timezone.utc),
                              timezone="America/New_York", device_id="disp-test")


@pytest.fixture(scope="module")
def two_days(regimen):
    """Two days on the regimen: taken, missed, as needed, unconfirmed, held, withdrawn, a check-in."""
    rig = Rig(regimen, "2026-12-02T06:00",
              stock={"sertraline": 30, "lithium-carbonate": 30, "naltrexone": 30, "hydroxyzine": 10})
    rig.press("2026-12-02T07:45")   # lithium, naltrexone, sertraline released
    rig.press("2026-12-02T07:46")   # and confirmed
    rig.engine.checkin(rig.now, 4, "mild", ["sertraline", "lithium-carbonate", "naltrexone"])
    rig.hold("2026-12-02T13:00", "hydroxyzine")
    rig.at("2026-12-03T06:00")      # lithium 20:00 missed
    rig.press("2026-12-03T07:50")   # released, never confirmed
    rig.at("2026-12-03T09:00")
    naltrexone_at_noon = {"frequency": 1, "period": 1, "periodUnit": "d", "timeOfDay": ["12:00:00"]}
    outcome = rig.engine.apply_schedule(rig.now, moved(regimen, regimen["version"] + 1,
                                                       naltrexone=naltrexone_at_noon), "local")
    assert outcome.feedback == "applied", outcome.detail
    rig.at("2026-12-03T19:45")      # lithium's evening window is open: the next change withdraws it
    lithium_mornings = {"frequency": 1, "period": 1, "periodUnit": "d", "when": ["MORN"]}
    outcome = rig.engine.apply_schedule(rig.now, moved(regimen, regimen["version"] + 2, naltrexone=naltrexone_at_noon,
                                                       **{"lithium-carbonate": lithium_mornings}), "local")
    assert outcome.feedback == "applied", outcome.detail
    rig.at("2026-12-03T23:00")
    events = rig.events()
    rig.store.close()
    return events


def test_the_export_is_valid_fhir_both_ways(two_days, regimen):
    bundle = valid(export_bundle(two_days, "disp-test", medications=medications_from_documents([regimen]),
                                 timestamp=datetime(2026, 12, 4, tzinfo=timezone.utc)))
    assert bundle["type"] == "transaction" and bundle["timestamp"] == "2026-12-04T00:00:00Z"
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert kinds[0] == "Device" and kinds.count("Observation") == 1
    ids = [e["resource"]["id"] for e in bundle["entry"]]
    assert len(ids) == len(set(ids))


def test_a_taken_dose_is_completed_from_its_release_to_its_confirmation(two_days, regimen):
    bundle = export_bundle(two_days, "disp-test", medications=medications_from_documents([regimen]))
    taken = dose(bundle, "sertraline", "2026-12-02T08:00")
    released = next(e for e in two_days if e["type"] == "dose.released" and e["data"]["medication_id"] == "sertraline")
    confirmed = next(e for e in two_days if e["type"] == "dose.taken" and e["data"]["medication_id"] == "sertraline")
    assert taken["status"] == "completed" and "statusReason" not in taken
    assert taken["effectivePeriod"] == {"start": released["at"], "end": confirmed["at"]}
    assert taken["dosage"]["dose"] == {"value": 1, "unit": "tablet", "system": "http://unitsofmeasure.org",
                                       "code": "{tbl}"}
    assert taken["medicationCodeableConcept"]["coding"][0] == {"system": RXNORM, "code": "36437", "display": "sertraline"}
    assert taken["medicationCodeableConcept"]["text"] == "Sertraline 50 mg tablet"
    device_url = bundle["entry"][0]["fullUrl"]
    assert taken["performer"][0]["actor"]["reference"] == device_url and taken["device"] == [{"reference": device_url}]
    assert taken["id"] == resource_id("dose", "disp-test", "sertraline", local("2026-12-02T08:00").strftime("%Y-%m-%dT%H:%M:%SZ"))


def test_doses_not_given_are_not_done_with_why(two_days):
    bundle = export_bundle(two_days, "disp-test")
    missed = dose(bundle, "lithium-carbonate", "2026-12-02T20:00")
    assert (missed["status"], reasons(missed)) == ("not-done", ["missed"])
    assert missed["effectiveDateTime"] == local("2026-12-02T20:00").strftime("%Y-%m-%dT%H:%M:%SZ")
    held = dose(bundle, "naltrexone", "2026-12-03T12:00")  # moved after that day's was given
    assert (held["status"], reasons(held)) == ("not-done", ["held"])
    assert "already_given" in held["statusReason"][0]["text"]
    withdrawn = dose(bundle, "lithium-carbonate", "2026-12-03T20:00")
    assert (withdrawn["status"], reasons(withdrawn)) == ("not-done", ["withdrawn"])
    unconfirmed = dose(bundle, "naltrexone", "2026-12-03T08:00")
    assert (unconfirmed["status"], reasons(unconfirmed)) == ("unknown", ["unconfirmed"])


def test_an_as_needed_release_is_one_completed_administration(two_days):
    bundle = export_bundle(two_days, "disp-test")
    released = next(e for e in two_days if e["type"] == "prn.released")
    [prn] = [r for r in resources(bundle, "MedicationAdministration") if r["identifier"][0]["value"] == released["event_id"]]
    assert prn["status"] == "completed" and prn["effectiveDateTime"] == released["at"]
    assert prn["medicationCodeableConcept"]["text"] == "hydroxyzine"  # no schedule given: its id
    assert prn["dosage"]["dose"]["value"] == 1


def test_a_checkin_is_an_observation_of_mood_and_side_effects_after_its_doses(two_days):
    bundle = export_bundle(two_days, "disp-test")
    [observation] = resources(bundle, "Observation")
    checkin = next(e for e in two_days if e["type"] == "checkin.recorded")
    assert observation["effectiveDateTime"] == checkin["at"] and observation["status"] == "final"
    mood, effects = observation["component"]
    assert mood["valueInteger"] == 4 and mood["interpretation"][0]["text"] == "4 of 5: good"
    assert effects["valueCodeableConcept"]["coding"][0]["code"] == "side-effects-mild"
    urls = {r["id"]: f"urn:uuid:{r['id']}" for r in resources(bundle, "MedicationAdministration")}
    assert sorted(p["reference"] for p in observation["partOf"]) == sorted(
        urls[dose(bundle, m, "2026-12-02T08:00")["id"]] for m in ("sertraline", "lithium-carbonate", "naltrexone"))


def test_an_unanswered_checkin_says_the_answer_is_absent():
    event = {"event_id": "e1", "seq": 1, "type": "checkin.recorded", "at": "2026-12-02T13:00:00.000Z",
             "data": {"mood": None, "side_effects": None, "medications": []}}
    bundle = valid(export_bundle([event], "disp-test"))
    [observation] = resources(bundle, "Observation")
    assert all(c["dataAbsentReason"]["coding"][0]["code"] == "asked-declined" for c in observation["component"])
    assert "partOf" not in observation


def test_a_reexport_updates_the_same_resources_instead_of_adding(two_days):
    first = export_bundle(two_days, "disp-test")
    again = export_bundle(two_days, "disp-test")
    assert first == again
    # Before the confirming press the dose was on its way; after it, the same resource is completed.
    released_at = next(i for i, e in enumerate(two_days) if e["type"] == "dose.taken")
    earlier = export_bundle(two_days[:released_at], "disp-test")
    before = dose(earlier, "sertraline", "2026-12-02T08:00")
    after = dose(first, "sertraline", "2026-12-02T08:00")
    assert before["id"] == after["id"] and (before["status"], after["status"]) == ("in-progress", "completed")
    assert {r["id"] for r in resources(earlier, "MedicationAdministration")} <= \
        {r["id"] for r in resources(first, "MedicationAdministration")}


def test_since_keeps_what_changed_and_exports_each_of_it_whole(two_days):
    since = local("2026-12-03T00:00")
    bundle = valid(export_bundle(two_days, "disp-test", since=since))
    values = {r["identifier"][0]["value"] for r in resources(bundle, "MedicationAdministration")}
    assert all("2026-12-02T" not in value for value in values)  # the first day's doses are not repeated
    assert dose(bundle, "naltrexone", "2026-12-03T08:00")["status"] == "unknown"
    assert resources(bundle, "Observation") == []  # the check-in was the day before
    late = [e for e in two_days if e["type"] in ("dose.released", "dose.taken")
            and e["data"]["medication_id"] == "sertraline"][:2]
    window = export_bundle(two_days, "disp-test", since=datetime.fromisoformat(late[1]["at"].replace("Z", "+00:00")))
    assert dose(window, "sertraline", "2026-12-02T08:00")["effectivePeriod"]["start"] == late[0]["at"]


def test_a_declined_dose_and_a_failed_release_keep_their_reasons():
    base = {"medication_id": "naltrexone", "scheduled_at": "2026-12-02T14:00:00Z", "quantity": 1, "compartment": 3,
            "window_start": "2026-12-02T13:30:00Z", "window_end": "2026-12-02T16:00:00Z"}
    other = dict(base, scheduled_at="2026-12-03T14:00:00Z")
    events = [{"event_id": "a", "seq": 1, "type": "dose.declined", "at": "2026-12-02T14:01:00.000Z", "data": base},
              {"event_id": "b", "seq": 2, "type": "dose.released", "at": "2026-12-03T14:01:00.000Z", "data": other},
              {"event_id": "c", "seq": 3, "type": "dose.release_failed", "at": "2026-12-03T14:01:00.000Z",
               "data": dict(other, error="servo jammed")}]
    bundle = valid(export_bundle(events, "disp-test"))
    declined, failed = resources(bundle, "MedicationAdministration")
    assert (declined["status"], declined["statusReason"][0]["coding"][1]["code"]) == ("not-done", "182895007")
    assert (failed["status"], reasons(failed)) == ("unknown", ["release-failed"])
    assert failed["statusReason"][0]["text"] == "release-failed: servo jammed"


# -- the command ----------------------------------------------------------------------------------


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return dispenser(*args, cwd=cwd, env={"PATH": "/usr/bin:/bin", "HOME": str(cwd)})


def test_export_fhir_writes_the_scenario_log_as_a_valid_bundle(tmp_path):
    db = tmp_path / "dispenser.db"
    scenario = run("simulate", "--scenario", str(DEMO / "first-day.toml"), "--db", str(db), cwd=tmp_path)
    assert scenario.returncode == 0, scenario.stderr
    result = run("export", "fhir", "--db", str(db), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    bundle = json.loads(result.stdout)
    bundle.pop("timestamp")
    valid(bundle)
    statuses = sorted((r["medicationCodeableConcept"]["text"], r["status"])
                      for r in resources(bundle, "MedicationAdministration"))
    assert statuses == [("Hydroxyzine 25 mg", "completed"), ("Naltrexone 25 mg", "unknown"),
                        ("Sertraline 50 mg", "completed")]
    later = run("export", "fhir", "--db", str(db), "--since", "2026-11-24T18:00:00Z", cwd=tmp_path)
    assert [r["medicationCodeableConcept"]["text"] for r in resources(json.loads(later.stdout), "MedicationAdministration")] \
        == ["Hydroxyzine 25 mg"]


@pytest.mark.parametrize("args, expected", [
    (["--since", "yesterday"], "--since: 'yesterday' is not an ISO date and time"),
    ([], "no log yet"),
])
def test_export_fhir_bad_input_is_one_line(tmp_path, args, expected):
    result = run("export", "fhir", "--db", str(tmp_path / "none.db"), *args, cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == "" and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and expected in result.stderr
    assert not (tmp_path / "none.db").exists()  # nothing made


def test_the_device_side_never_imports_the_fhir_models():
    code = ("import sys, dispenser.cli, dispenser.fhir_in, dispenser.fhir_out; dispenser.cli.build_parser(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fhir', 'fhir_core', 'pydantic')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr
