"""The official FHIR R4B models (fhir.resources, a test dependency), imported when a test first
checks something with them: every xdist worker imports every test module, and importing these
there cost each worker ~0.2 s of CPU.

    fhir_model("Bundle").model_validate(bundle)   # fhir.resources.R4B.bundle.Bundle
"""
from __future__ import annotations

from importlib import import_module


def fhir_model(resource_type: str) -> type:
    """The R4B model class for `resource_type` ("Bundle", "MedicationRequest", "Dosage"...)."""
    return getattr(import_module(f"fhir.resources.R4B.{resource_type.lower()}"), resource_type)
