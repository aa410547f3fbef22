"""FHIR R4 out: the dispenser's log as a Bundle the clinic's record can take in.

Pure: a list of event dicts (the log's, CONTRACT section 3) in, one transaction Bundle out.
Every scheduled dose that reached the person or an outcome is one MedicationAdministration
(named by `medication_id` + `scheduled_at`), every as-needed release one (named by its
event), every `checkin.recorded` one Observation. Ids are UUIDs derived from those names,
and each entry is a PUT, so exporting again updates the record instead of adding to it.
The care service calls `export_bundle` on the events it stores (docs/FHIR.md).

>>> import json
>>> from importlib.resources import files
>>> from dispenser.engine import Engine
>>> from dispenser.store import Store
>>> contract_example = json.loads(files("dispenser").joinpath("demo", "schedule.json").read_text())
>>> store = Store.open(":memory:", "disp-0001")
>>> engine, now = Engine(store, 8), datetime(2026, 11, 24, 12, 45, tzinfo=timezone.utc)   # 07:45 in New York
>>> engine.apply_schedule(now, contract_example, stock={"sertraline": 10}).feedback
<Feedback.APPLIED: 'applied'>
>>> engine.press(now).feedback, engine.press(now).feedback           # released, then confirmed
(<Feedback.RELEASED: 'released'>, <Feedback.CONFIRMED: 'confirmed'>)
>>> bundle = export_bundle(store.events(), device_id="disp-0001")
>>> [(entry["resource"]["resourceType"], entry["resource"]["status"]) for entry in bundle["entry"]]
[('Device', 'active'), ('MedicationAdministration', 'completed')]
"""
from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from dispenser.timeutil import format_utc, parse_utc
from dispenser.vocabulary import EventType

# Names made here, for identifiers and codes the clinic's systems can match on.
NAMESPACE = uuid.UUID("5b0d3c8e-4f7a-5c1e-9a43-2f6d1e8b7c90")  # of the uuid5 ids below
DEVICE_SYSTEM = "urn:dispenser:device-id"
DOSE_SYSTEM = "urn:dispenser:dose"
EVENT_SYSTEM = "urn:dispenser:event-id"
MEDICATION_SYSTEM = "urn:dispenser:medication-id"
OUTCOME_SYSTEM = "urn:dispenser:dose-outcome"
CHECKIN_SYSTEM = "urn:dispenser:checkin"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
DATA_ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"

# Why a dose did not go out as planned: (code, display) in OUTCOME_SYSTEM.
OUTCOMES: dict[str, str] = {
    "missed": "Missed: its window closed and it was not released",
    "held": "Held back by the dispenser's safety rules",
    "withdrawn": "Withdrawn by a schedule change while its window was open",
    "declined": "Declined by the person",
    "unconfirmed": "Released, but its taking was never confirmed",
    "release-failed": "The compartment failed while releasing it",
    "release-uncertain": "The dispenser stopped while releasing it",
}
MISSED_WHILE = {"device_off": "while the dispenser was off", "clock_unsynchronized": "while its clock was not trusted",
                "clock_behind": "while its clock was behind the log"}
FINAL_HOLDS = frozenset({"already_given", "day_limit"})  # docs/RULES.md: held for good
MOODS = ("very bad", "bad", "okay", "good", "very good")  # 1..5, as the screen asks
SIDE_EFFECTS = {"none": "None", "mild": "Mild", "strong": "Strong"}


@dataclass
class _Dose:
    """One dose's story, folded from its events in log order."""

    data: dict
    status: str = ""
    reasons: list[tuple[str, str]] = field(default_factory=list)  # (outcome code, detail)
    released_at: str | None = None
    taken_at: str | None = None
    last_at: str = ""
    prn: bool = False


def export_bundle(events: Iterable[dict], device_id: str, *, medications: Mapping[str, dict] | None = None,
                  since: datetime | None = None, subject: dict | None = None,
                  timestamp: datetime | None = None) -> dict:
    """The log as a FHIR R4 transaction Bundle of PUTs (stable ids: a re-export updates).

    `medications`: medication id -> {"name", "ingredient" (a Coding)}, from the schedules
    (`medications_from_documents`); `since` keeps the resources whose last event is at or
    after it (a dose released before and taken after it is exported whole); `subject`: a
    Reference to the Patient (default: the person using this device, by identifier).
    """
    medications = medications or {}
    device = _device(device_id)
    device_url = _url(device["id"])
    subject = subject or {"type": "Patient", "identifier": {"system": DEVICE_SYSTEM, "value": device_id},
                          "display": f"the person using dispenser {device_id}"}
    doses, checkins = _fold(events)
    resources: list[dict] = []
    taken_by_medication: dict[str, list[tuple[str, str]]] = {}
    for key, dose in doses.items():
        if not dose.status:
            continue
        resource = _administration(key, dose, medications, subject, device_url, device_id)
        if dose.status == "completed":
            taken_by_medication.setdefault(dose.data["medication_id"], []).append(
                (dose.taken_at or dose.released_at or "", _url(resource["id"])))
        if since is None or parse_utc(dose.last_at) >= since:
            resources.append(resource)
    for event in checkins:
        if since is None or parse_utc(event["at"]) >= since:
            resources.append(_observation(event, subject, device_url, device_id, taken_by_medication))
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "transaction"}
    if timestamp is not None:
        bundle["timestamp"] = format_utc(timestamp)
    bundle["entry"] = [_entry(resource) for resource in [device, *resources]]
    return bundle


def medications_from_documents(documents: Iterable[dict]) -> dict[str, dict]:
    """medication id -> its name and ingredient Coding, from schedule documents (later ones win)."""
    found: dict[str, dict] = {}
    for document in documents:
        for medication in document.get("medications", []) if isinstance(document, dict) else []:
            if isinstance(medication, dict) and isinstance(medication.get("id"), str):
                found[medication["id"]] = {key: medication[key] for key in ("name", "ingredient", "strength")
                                           if key in medication}
    return found


def resource_id(*name: str) -> str:
    """A stable FHIR id (a UUID) for a thing the log names: the same name, the same id."""
    return str(uuid.uuid5(NAMESPACE, "/".join(name)))


# -- folding the log ---------------------------------------------------------------------------


def _fold(events: Iterable[dict]) -> tuple[dict[tuple[str, ...], _Dose], list[dict]]:
    doses: dict[tuple[str, ...], _Dose] = {}
    by_release: dict[str, tuple[str, ...]] = {}
    checkins = []
    for event in sorted(events, key=lambda e: e.get("seq", 0)):
        kind, data, at = str(event.get("type")), event.get("data") or {}, event.get("at", "")
        if kind == EventType.CHECKIN_RECORDED:
            checkins.append(event)
            continue
        if kind == EventType.PRN_RELEASED:
            key: tuple[str, ...] = ("prn", event["event_id"])
            doses[key] = _Dose(data=data, status="completed", released_at=at, taken_at=at, last_at=at, prn=True)
            by_release[event["event_id"]] = key
            continue
        if not kind.startswith("dose.") or kind in (EventType.DOSE_DUE, EventType.DOSE_REMINDER):
            continue
        key = ("dose", str(data.get("medication_id")), str(data.get("scheduled_at")))
        if "scheduled_at" not in data and data.get("release_event_id") in by_release:
            key = by_release[data["release_event_id"]]  # an as-needed release that stopped midway
        elif "scheduled_at" not in data:
            continue
        dose = doses.setdefault(key, _Dose(data=dict(data)))
        dose.last_at = at
        if not dose.prn:
            dose.data.update({k: v for k, v in data.items() if k in ("quantity", "compartment", "medication_id",
                                                                     "scheduled_at", "window_start", "window_end")})
        _step(dose, kind, data, at)
        if kind == EventType.DOSE_RELEASED:
            by_release[event["event_id"]] = key
    return doses, checkins


def _step(dose: _Dose, kind: str, data: dict, at: str) -> None:
    """One event's effect on its dose: the status it reaches and why."""
    if kind == EventType.DOSE_RELEASED:
        dose.status, dose.released_at = "in-progress", at
    elif kind == EventType.DOSE_TAKEN:
        dose.status, dose.taken_at = "completed", at
        dose.reasons = [r for r in dose.reasons if r[0] != "unconfirmed"]
    elif kind == EventType.DOSE_UNCONFIRMED and dose.status != "completed":
        dose.status = "unknown"
        dose.reasons.append(("unconfirmed", "no press confirmed it within 15 minutes"))
    elif kind == EventType.DOSE_MISSED:
        dose.status = "not-done"
        dose.reasons.insert(0, ("missed", MISSED_WHILE.get(str(data.get("while")), "")))
    elif kind == EventType.DOSE_SKIPPED:
        dose.status = "not-done"
        dose.reasons.insert(0, ("withdrawn", str(data.get("reason", ""))))
    elif kind == "dose.declined":
        dose.status = "not-done"
        dose.reasons.insert(0, ("declined", str(data.get("reason", ""))))
    elif kind == EventType.DOSE_HELD:
        reason = str(data.get("reason", ""))
        dose.reasons.append(("held", reason + (f" until {data['allowed_at']}" if data.get("allowed_at") else "")))
        if reason in FINAL_HOLDS:
            dose.status = "not-done"
        elif not dose.status:
            dose.status = "on-hold"
    elif kind == EventType.DOSE_RELEASE_FAILED:
        dose.status = "unknown"
        dose.reasons.append(("release-failed", str(data.get("error", ""))[:200]))
    elif kind == EventType.DOSE_RELEASE_UNCERTAIN:
        dose.status = "unknown"
        dose.reasons.append(("release-uncertain", "it is not released again; a person must check"))


# -- resources ---------------------------------------------------------------------------------


def _url(identifier: str) -> str:
    return f"urn:uuid:{identifier}"


def _entry(resource: dict) -> dict:
    return {"fullUrl": _url(resource["id"]), "resource": resource,
            "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}}


def _device(device_id: str) -> dict:
    return {"resourceType": "Device", "id": resource_id("device", device_id),
            "identifier": [{"system": DEVICE_SYSTEM, "value": device_id}],
            "status": "active",
            "deviceName": [{"name": device_id, "type": "user-friendly-name"}],
            "type": {"text": "Supervised smart pill dispenser"}}


def _medication(medication_id: str, medications: Mapping[str, dict]) -> dict:
    known = medications.get(medication_id, {})
    codings = [{"system": MEDICATION_SYSTEM, "code": medication_id}]
    ingredient = known.get("ingredient")
    if isinstance(ingredient, dict) and isinstance(ingredient.get("code"), str):
        codings.insert(0, {k: ingredient[k] for k in ("system", "code", "display") if isinstance(ingredient.get(k), str)})
    return {"coding": codings, "text": str(known.get("name") or medication_id)}


def _administration(key: tuple[str, ...], dose: _Dose, medications: Mapping[str, dict], subject: dict,
                    device_url: str, device_id: str) -> dict:
    data = dose.data
    medication_id = str(data.get("medication_id"))
    if dose.prn:
        ident, name = resource_id("event", device_id, key[1]), key[1]
        identifier = {"system": EVENT_SYSTEM, "value": key[1]}
    else:
        ident = resource_id("dose", device_id, medication_id, str(data.get("scheduled_at")))
        identifier = {"system": DOSE_SYSTEM, "value": f"{device_id}/{medication_id}/{data.get('scheduled_at')}"}
        name = identifier["value"]
    resource: dict[str, Any] = {"resourceType": "MedicationAdministration", "id": ident,
                                "identifier": [identifier], "status": dose.status}
    if dose.reasons and dose.status in ("not-done", "on-hold", "unknown"):
        resource["statusReason"] = [_reason(code, detail) for code, detail in dose.reasons]
    resource["medicationCodeableConcept"] = _medication(medication_id, medications)
    resource["subject"] = subject
    if dose.released_at and dose.taken_at and dose.taken_at != dose.released_at:
        resource["effectivePeriod"] = {"start": dose.released_at, "end": dose.taken_at}
    elif dose.released_at:
        resource["effectiveDateTime"] = dose.released_at
    else:
        resource["effectiveDateTime"] = str(data.get("scheduled_at"))
    resource["performer"] = [{"actor": {"reference": device_url, "display": f"dispenser {device_id}"}}]
    resource["device"] = [{"reference": device_url}]
    if not dose.prn:
        resource["note"] = [{"text": f"Scheduled {data.get('scheduled_at')}, window {data.get('window_start')} "
                                     f"to {data.get('window_end')}, compartment {data.get('compartment')} ({name})."}]
    quantity = data.get("quantity")
    if isinstance(quantity, int) and not isinstance(quantity, bool):
        resource["dosage"] = {"dose": {"value": quantity, "unit": "tablet" if quantity == 1 else "tablets",
                                       "system": UCUM, "code": "{tbl}"}}
    return resource


def _reason(code: str, detail: str) -> dict:
    codings = [{"system": OUTCOME_SYSTEM, "code": code, "display": OUTCOMES[code]}]
    if code == "declined":
        codings.append({"system": SNOMED, "code": "182895007", "display": "Drug declined by patient"})
    return {"coding": codings, "text": f"{code}: {detail}" if detail else code}


def _observation(event: dict, subject: dict, device_url: str, device_id: str,
                 taken: Mapping[str, list[tuple[str, str]]]) -> dict:
    data = event.get("data") or {}
    at = str(event["at"])
    mood, side_effects = data.get("mood"), data.get("side_effects")
    resource: dict[str, Any] = {
        "resourceType": "Observation", "id": resource_id("event", device_id, str(event["event_id"])),
        "identifier": [{"system": EVENT_SYSTEM, "value": str(event["event_id"])}],
        "status": "final",
        "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": "survey", "display": "Survey"}]}],
        "code": {"coding": [{"system": CHECKIN_SYSTEM, "code": "checkin", "display": "Check-in after a dose"}],
                 "text": "How the person feels after a dose"},
        "subject": subject,
        "effectiveDateTime": at,
        "issued": at,
        "device": {"reference": device_url},
    }
    # The doses it follows: the latest taken dose of each medication it was asked about.
    part_of = [max((t for t in taken.get(m, []) if t[0] <= at), default=None) for m in data.get("medications", [])
               if isinstance(m, str)]
    if any(part_of):
        resource["partOf"] = [{"reference": url} for _, url in filter(None, part_of)]
    mood_component: dict[str, Any] = {"code": {"coding": [{"system": CHECKIN_SYSTEM, "code": "mood",
                                                           "display": "Mood, 1 (very bad) to 5 (very good)"}]}}
    if isinstance(mood, int) and not isinstance(mood, bool) and 1 <= mood <= 5:
        mood_component["valueInteger"] = mood
        mood_component["interpretation"] = [{"text": f"{mood} of 5: {MOODS[mood - 1]}"}]
    else:
        mood_component["dataAbsentReason"] = {"coding": [{"system": DATA_ABSENT, "code": "asked-declined"}]}
    effect_component: dict[str, Any] = {"code": {"coding": [{"system": CHECKIN_SYSTEM, "code": "side-effects",
                                                             "display": "Side effects: none, mild or strong"}]}}
    if side_effects in SIDE_EFFECTS:
        effect_component["valueCodeableConcept"] = {
            "coding": [{"system": CHECKIN_SYSTEM, "code": f"side-effects-{side_effects}",
                        "display": SIDE_EFFECTS[side_effects]}], "text": SIDE_EFFECTS[side_effects]}
    else:
        effect_component["dataAbsentReason"] = {"coding": [{"system": DATA_ABSENT, "code": "asked-declined"}]}
    resource["component"] = [mood_component, effect_component]
    return resource


def parse_since(text: str) -> datetime:
    """`--since`: an ISO date or date-time; without an offset it is UTC (as `dispenser log`)."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
