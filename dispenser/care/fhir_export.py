"""`dispenser care export fhir`: a device's stored events as a FHIR R4 Bundle (contract 7).

The Bundle is the device's own (`fhir_out.export_bundle`, as `dispenser export fhir`
makes it on the device), with the person as its `subject`: a Patient reference built
from the care config's `[[patient]]` entry. The care service never holds a schedule
document, so medications are named by their `medication_id` coding only (docs/FHIR.md).

    >>> bundle = export_device(conn, config, "disp-0001", since=None, now=now)   # doctest: +SKIP
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from ..fhir_out import export_bundle
from .config import CareConfig
from .database import Connection

PATIENT_SYSTEM = "urn:dispenser:care-patient"  # the care service's patients, named by their device


class ExportError(ValueError):
    """Nothing to export for that device: one line."""


def patient_reference(device: str, name: str | None) -> dict[str, Any]:
    """A logical Reference to the Patient: by identifier, with the name family and staff use."""
    reference: dict[str, Any] = {"type": "Patient", "identifier": {"system": PATIENT_SYSTEM, "value": device}}
    if name:
        reference["display"] = name
    return reference


def stored_events(conn: Connection, device: str) -> list[dict]:
    """The device's events as stored (once each, by `event_id`), in `seq` order."""
    return [json.loads(body) for (body,) in conn.execute(
        "SELECT body FROM events WHERE device = ? ORDER BY seq, event_id", (device,))]


def export_device(conn: Connection, config: CareConfig, device: str, *, since: datetime | None,
                  now: datetime) -> dict:
    """The Bundle for one device; ExportError for a device neither configured nor heard of."""
    patient = config.patient(device)
    events = stored_events(conn, device)
    if patient is None and not events:
        raise ExportError(f"--device: {device!r} is not a [[patient]] device in the care config "
                          "and no event of it is stored")
    return export_bundle(events, device, since=since, timestamp=now,
                         subject=patient_reference(device, patient.name if patient else None))
