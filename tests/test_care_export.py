"""`dispenser care export fhir` (contract section 7): the care service's stored events of a
device as a FHIR R4 Bundle, the device's own for the same events but for its subject.

The care database (SQLite and PostgreSQL) is filled by ingesting, event by event, what the
contract's worked example (`dispenser simulate --scenario`) logged on a device; the device's
own `dispenser export fhir` reads that device's log."""
from __future__ import annotations

import json
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from care_support import care_toml, database_url, ingest_events, postgres_cluster  # noqa: F401 - fixtures
from inprocess import dispenser as run_in_process
from dispenser.care.config import load_care_config
from dispenser.care.database import Database
from dispenser.fhir_out import MEDICATION_SYSTEM
from support import DEMO
from fhir_models import fhir_model
from test_fhir_out import valid

DEVICE = "disp-0001"
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)


def dispenser(*args: object) -> subprocess.CompletedProcess:
    return run_in_process(*args)


@pytest.fixture
def filled(tmp_path: Path, database_url: str) -> tuple[Path, Path, list[dict]]:
    """care.toml over a care database holding the worked example's events, the device's
    config (its log in device.db), and the events."""
    (tmp_path / "schedule.json").write_text((DEMO / "schedule.json").read_text())
    scenario = tmp_path / "first-day.toml"
    # The worked example, and a day after it on which nobody presses: doses missed too.
    text = (DEMO / "first-day.toml").read_text()
    assert 'until = "2026-11-25T06:00:00"' in text
    scenario.write_text(text.replace('until = "2026-11-25T06:00:00"', 'until = "2026-11-26T06:00:00"'))
    device = tmp_path / "device.toml"
    device.write_text(f'[device]\nid = "{DEVICE}"\ntimezone = "America/New_York"\n')
    result = dispenser("simulate", "--scenario", scenario, "--config", device, "--db", tmp_path / "device.db")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    care = care_toml(tmp_path / "care.toml", database_url=database_url)
    config = load_care_config(str(care))
    with Database(database_url).connect() as conn:
        ingest_events(conn, config, events, NOW)
    return care, device, events


def export(care: Path, *args: str) -> dict:
    result = dispenser("care", "export", "fhir", "--config", care, "--device", DEVICE, *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def without_subject_and_names(bundle: dict) -> dict:
    """The Bundle but for what only the device knows (the schedule's names and ingredient
    codes: the care service never holds a schedule) and for the subject and timestamp."""
    bundle = json.loads(json.dumps(bundle))
    bundle.pop("timestamp", None)
    for entry in bundle["entry"]:
        resource = entry["resource"]
        resource.pop("subject", None)
        concept = resource.get("medicationCodeableConcept")
        if concept is not None:
            resource["medicationCodeableConcept"] = {
                "coding": [c for c in concept["coding"] if c["system"] == MEDICATION_SYSTEM]}
    return bundle


def test_the_bundle_is_the_devices_own_with_the_patient_as_subject(filled):
    care, device, events = filled
    bundle = valid(export(care))
    assert fhir_model("Bundle").model_validate(bundle).type == "transaction"
    kinds = [entry["resource"]["resourceType"] for entry in bundle["entry"]]
    assert kinds[0] == "Device" and kinds.count("MedicationAdministration") >= 3
    subjects = {json.dumps(e["resource"]["subject"], sort_keys=True) for e in bundle["entry"] if "subject" in e["resource"]}
    assert [json.loads(s) for s in subjects] == [{
        "type": "Patient", "identifier": {"system": "urn:dispenser:care-patient", "value": DEVICE}, "display": "Sam"}]
    statuses = {r["status"] for r in (e["resource"] for e in bundle["entry"]) if "status" in r}
    assert {"completed", "not-done"} <= statuses  # taken, and unconfirmed or missed

    on_device = dispenser("export", "fhir", "--config", device, "--db", device.parent / "device.db")
    assert on_device.returncode == 0, on_device.stderr
    assert without_subject_and_names(bundle) == without_subject_and_names(json.loads(on_device.stdout))


def test_a_re_export_is_the_same_and_since_keeps_the_later_part(filled):
    care, _, events = filled
    first, second = export(care), export(care)
    first.pop("timestamp"), second.pop("timestamp")
    assert first == second
    cut = events[len(events) // 2]["at"]
    later = valid(export(care, "--since", cut))
    ids = {e["resource"]["id"] for e in first["entry"]}
    assert {e["resource"]["id"] for e in later["entry"]} < ids  # a part of it, the same ids


@pytest.mark.parametrize("args, words", [
    (["--device", "disp-9999"], "disp-9999"),
    (["--device", DEVICE, "--since", "yesterday"], "--since"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, words):
    url = f"sqlite:///{tmp_path / 'care.db'}"
    Database(url)  # an empty care database
    care = care_toml(tmp_path / "care.toml", database_url=url)
    result = dispenser("care", "export", "fhir", "--config", care, *args)
    assert result.returncode == 2 and words in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""


def test_no_database_no_export_and_none_made(tmp_path):
    care = care_toml(tmp_path / "care.toml", database_url=f"sqlite:///{tmp_path / 'none.db'}")
    result = dispenser("care", "export", "fhir", "--config", care, "--device", DEVICE)
    assert result.returncode == 2 and "no care database" in result.stderr
    assert not (tmp_path / "none.db").exists()
