"""FHIR R4 in: a prescription (`MedicationRequest`) becomes a schedule document.

Pure: a parsed FHIR resource and the conversion's time in, a schedule document out (the
form of docs/SCHEDULE.md), or `FhirError` naming every problem with its FHIR path. Each
`dosageInstruction` is copied as it stands; only what the schedule cannot read as FHIR
writes it is rewritten: a `timing.code` (BID, QD, Q8H...) or an untimed daily dose is
placed on the routine by the table below (docs/FHIR.md), and `asNeededCodeableConcept`
becomes `asNeededBoolean`. The result is then checked by the schedule's own parser, and
its problems are named by where they stand in the FHIR input, so nothing the dispenser
could not give safely passes.

>>> from datetime import timezone
>>> request = {"resourceType": "MedicationRequest", "status": "active", "intent": "order",
...            "medicationCodeableConcept": {"text": "Sertraline 50 mg tablet"},
...            "dosageInstruction": [{"timing": {"code": {"coding": [{"code": "BID"}]}},
...                                   "doseAndRate": [{"doseQuantity": {"value": 1}}]}]}
>>> now = datetime(2026, 11, 19, 17, 0, tzinfo=timezone.utc)
>>> document = schedule_from_fhir(request, now=now, timezone="Europe/London")   # or a Bundle
>>> document["routine"], document["medications"][0]["dosage"][0]["timing"]
({'MORN': '08:00', 'EVE': '20:00'}, {'repeat': {'frequency': 2, 'period': 1, 'periodUnit': 'd', 'when': ['MORN', 'EVE']}})
"""
from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from typing import Any

from dispenser.schedule import COUNT_UNITS, SCHEMA, ScheduleError, parse_schedule
from dispenser.timeutil import format_utc, parse_utc

GTS_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-GTSAbbreviation"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"

# The clock time of every `when` code the dispenser places doses on (the schedule's
# `routine`); only the codes a document uses are written into it. Meal codes with AC/PC
# are the meal itself: their `offset` counts the minutes before or after it.
ROUTINE: dict[str, str] = {
    "WAKE": "07:00", "PHS": "07:00", "MORN.early": "06:00", "MORN": "08:00", "MORN.late": "10:00",
    "NOON": "12:00", "AFT.early": "13:00", "AFT": "14:00", "AFT.late": "16:00",
    "EVE.early": "18:00", "EVE": "20:00", "EVE.late": "21:00", "HS": "22:00", "NIGHT": "23:00",
    "CM": "08:00", "ACM": "08:00", "PCM": "08:00", "CD": "12:30", "ACD": "12:30", "PCD": "12:30",
    "CV": "18:30", "ACV": "18:30", "PCV": "18:30",
}

# N doses a day with no time named: on these routine codes (BID, TID, QID say the same).
DAILY_TIMES: dict[int, tuple[str, ...]] = {
    1: ("MORN",), 2: ("MORN", "EVE"), 3: ("MORN", "AFT", "EVE"), 4: ("MORN", "NOON", "AFT.late", "EVE"),
}
# Every N hours (Q4H...): clock times from this first hour, round the clock.
HOURLY_FIRST: dict[int, int] = {1: 0, 2: 0, 3: 0, 4: 2, 6: 0, 8: 6, 12: 8}


@dataclass(frozen=True)
class CodeTiming:
    """What one timing abbreviation stands for: a rate, and for a scheduled dose its times."""

    frequency: int
    period: int
    unit: str
    when: tuple[str, ...] = ()
    hours_apart: int | None = None  # QnH: clock times every n hours (HOURLY_FIRST)


TIMING_CODES: dict[str, CodeTiming] = {
    "QD": CodeTiming(1, 1, "d", ("MORN",)),
    "AM": CodeTiming(1, 1, "d", ("MORN",)),
    "PM": CodeTiming(1, 1, "d", ("EVE",)),
    "BID": CodeTiming(2, 1, "d", DAILY_TIMES[2]),
    "TID": CodeTiming(3, 1, "d", DAILY_TIMES[3]),
    "QID": CodeTiming(4, 1, "d", DAILY_TIMES[4]),
    "QOD": CodeTiming(1, 2, "d", ("MORN",)),
    "BED": CodeTiming(1, 1, "d", ("HS",)),
    "HS": CodeTiming(1, 1, "d", ("HS",)),
    "WK": CodeTiming(1, 1, "wk", ("MORN",)),
    **{f"Q{n}H": CodeTiming(1, n, "h", hours_apart=n) for n in HOURLY_FIRST},
}

# Medication.form words the dispenser can give: whole tablets or capsules.
_SOLID_FORM = re.compile(r"tab|cap|pill|lozenge|troche", re.IGNORECASE)
_DOSE_PATH = re.compile(r"medications\[\d+\](?:\.dosage\[\d+\]|\.dosage|\.strength|\.ingredient)?")


class FhirError(ScheduleError):
    """A FHIR input that cannot become a schedule; `problems` are `FHIR.path: message` lines."""


@dataclass
class _Product:
    """One medication of the schedule: what the tablets are, and every dosage for them."""

    name: str
    ingredient: dict | None
    strength: dict | None
    paths: dict[str, str]                       # schedule path -> FHIR path
    dosages: list[dict] = field(default_factory=list)
    dosage_paths: list[str] = field(default_factory=list)


def schedule_from_fhir(resource: Any, *, now: datetime, timezone: str,
                       device_id: str | None = None, compartments: int | None = None) -> dict:
    """A FHIR Bundle or MedicationRequest -> a valid schedule document, or FhirError."""
    try:
        return _Converter().convert(resource, now, timezone, device_id, compartments)
    except RecursionError:
        raise FhirError(["(document): nested too deeply"]) from None


def hourly_times(hours: int) -> list[str]:
    """Q{hours}H as FHIR times of a day: Q8H -> 06:00:00, 14:00:00, 22:00:00."""
    first = HOURLY_FIRST[hours]
    return [f"{hour:02d}:00:00" for hour in sorted((first + k * hours) % 24 for k in range(24 // hours))]


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _list(value: Any) -> list:
    """A FHIR array, or nothing where the input put something else (the checks name it)."""
    return value if isinstance(value, list) else []


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:64].strip("-")


def _number(value: Any) -> Fraction | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return Fraction(repr(value)) if isinstance(value, float) else Fraction(value)


class _Converter:
    """Walks one input, collecting problems instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.index: dict[str, tuple[int, dict]] = {}  # fullUrl and Type/id -> (entry, resource)

    def problem(self, path: str, message: str) -> None:
        line = f"{path}: {message}"
        if line not in self.problems:
            self.problems.append(line)

    # -- the input ---------------------------------------------------------------------------

    def convert(self, resource: Any, now: datetime, timezone: str, device_id: str | None,
                compartments: int | None) -> dict:
        if not isinstance(resource, dict) or resource.get("resourceType") not in ("Bundle", "MedicationRequest"):
            kind = resource.get("resourceType") if isinstance(resource, dict) else None
            raise FhirError([f"(document): must be a FHIR Bundle or MedicationRequest, not "
                             f"{_show(kind) if kind else 'that'}"])
        requests, issued_at, root = self.requests(resource, now)
        products: dict[str, _Product] = {}
        for path, request in requests:
            self.request(path, request, products)
        self.one_person(requests)
        if compartments is not None and len(products) > compartments:
            self.problem(root, f"{len(products)} medications need {len(products)} compartments; "
                               f"the device has {compartments}")
        # Checked by the schedule's parser too, so every problem is named in one round trip;
        # a medication none of whose dosages could be read is left out of that check.
        document, mapping = self.document({k: p for k, p in products.items() if p.dosages}, issued_at,
                                          timezone, device_id)
        if root == "Bundle":
            mapping["issued_at"] = "Bundle.timestamp"
        try:
            parse_schedule(document)
        except ScheduleError as error:
            for problem in error.problems:
                path, _, message = self.where(problem, mapping).partition(": ")
                self.problem(path, message)
        if self.problems:
            raise FhirError(self.problems)
        return document

    @staticmethod
    def where(problem: str, mapping: dict[str, str]) -> str:
        """A schedule problem named by where it stands in the FHIR input."""
        if problem.startswith("issued_at:") and "issued_at" in mapping:
            return mapping["issued_at"] + problem[len("issued_at"):]
        return _DOSE_PATH.sub(lambda match: mapping.get(match.group(0), match.group(0)), problem)

    def requests(self, resource: dict, now: datetime) -> tuple[list[tuple[str, dict]], datetime, str]:
        """The MedicationRequests to convert, with their paths; the document's issued_at."""
        if resource["resourceType"] == "MedicationRequest":
            return [("MedicationRequest", resource)], now, "MedicationRequest"
        issued_at = now
        if "timestamp" in resource:
            try:
                issued_at = parse_utc(str(resource["timestamp"]))
            except ValueError:
                self.problem("Bundle.timestamp", f"must be an instant with a time zone, not {_show(resource['timestamp'])}")
        entries = resource.get("entry", [])
        if not isinstance(entries, list):
            raise FhirError(["Bundle.entry: must be a list"])
        requests = []
        for number, entry in enumerate(entries):
            item = entry.get("resource") if isinstance(entry, dict) else None
            if not isinstance(item, dict):
                self.problem(f"Bundle.entry[{number}].resource", "is required")
                continue
            kind = item.get("resourceType")
            if isinstance(entry.get("fullUrl"), str):
                self.index[entry["fullUrl"]] = (number, item)
            if isinstance(kind, str) and isinstance(item.get("id"), str):
                self.index[f"{kind}/{item['id']}"] = (number, item)
            if kind == "MedicationRequest":
                requests.append((f"Bundle.entry[{number}].resource", item))
        if not requests and not self.problems:
            self.problem("Bundle.entry", "holds no MedicationRequest")
        return requests, issued_at, "Bundle"

    def one_person(self, requests: list[tuple[str, dict]]) -> None:
        """One dispenser is one person's: prescriptions for another subject are refused."""
        first: tuple[str, str] | None = None
        for path, request in requests:
            subject = request.get("subject")
            if not isinstance(subject, dict):
                continue
            reference = subject.get("reference")
            # Patient/sam and the urn:uuid fullUrl of the Bundle's entry for Sam are one person.
            who = f"entry {self.index[reference][0]}" if isinstance(reference, str) and reference in self.index \
                else json.dumps(reference or subject.get("identifier"), sort_keys=True)
            if first is None:
                first = (path, who)
            elif who != first[1]:
                self.problem(f"{path}.subject", f"is another person than {first[0]}.subject: "
                                                "a dispenser holds one person's medications")

    def request(self, path: str, request: dict, products: dict[str, _Product]) -> None:
        self.modifiers(path, request)
        status = request.get("status")
        if status != "active":
            self.problem(f"{path}.status", f"is {_show(status)}: only an active prescription is dispensed")
        if request.get("intent") in ("proposal", "option"):
            self.problem(f"{path}.intent", f"is {_show(request['intent'])}: not an order to give it")
        if request.get("doNotPerform") is True:
            self.problem(f"{path}.doNotPerform", "is true: this prescription says not to give it")
        product = self.product(path, request)
        dosages = request.get("dosageInstruction")
        if not isinstance(dosages, list) or not dosages:
            self.problem(f"{path}.dosageInstruction", "is required: a dispenser needs to know when and how much")
            return
        if product is None:
            return
        # One compartment per product: requests for the same tablets (a titration written as
        # two prescriptions) become one medication whose dosages must not overlap.
        key = json.dumps([product.ingredient and [product.ingredient.get("system"), product.ingredient.get("code")],
                          product.strength, product.name if product.ingredient is None else None],
                         sort_keys=True, default=str)
        product = products.setdefault(key, product)
        for number, raw in enumerate(dosages):
            where = f"{path}.dosageInstruction[{number}]"
            entry = self.dosage(where, raw)
            if entry is not None:
                product.dosages.append(entry)
                product.dosage_paths.append(where)

    def modifiers(self, path: str, raw: Any) -> None:
        """`modifierExtension` anywhere changes what its element means: refused with its path."""
        if isinstance(raw, dict):
            for key, value in raw.items():
                if key == "modifierExtension":
                    self.problem(f"{path}.{key}", "is refused: it changes what the element means")
                else:
                    self.modifiers(f"{path}.{key}", value)
        elif isinstance(raw, list):
            for number, item in enumerate(raw):
                self.modifiers(f"{path}[{number}]", item)

    # -- what the tablets are ------------------------------------------------------------------

    def product(self, path: str, request: dict) -> _Product | None:
        if "medicationReference" in request:
            return self.referenced(path, request)
        concept = request.get("medicationCodeableConcept")
        if not isinstance(concept, dict):
            self.problem(f"{path}.medication[x]", "is required (medicationReference or medicationCodeableConcept)")
            return None
        where = f"{path}.medicationCodeableConcept"
        coding, coding_path = self.coding(where, concept)
        return _Product(name=self.name(concept, coding), ingredient=coding, strength=None,
                        paths={"": path, "ingredient": coding_path})

    def referenced(self, path: str, request: dict) -> _Product | None:
        ref_path = f"{path}.medicationReference.reference"
        reference = request["medicationReference"].get("reference") \
            if isinstance(request["medicationReference"], dict) else None
        if not isinstance(reference, str):
            self.problem(ref_path, "is required (the Medication this prescribes)")
            return None
        if reference.startswith("#"):
            contained = request.get("contained", [])
            found = [(n, item) for n, item in enumerate(contained if isinstance(contained, list) else [])
                     if isinstance(item, dict) and item.get("id") == reference[1:]]
            if not found:
                self.problem(ref_path, f"{_show(reference)} is not among the contained resources")
                return None
            number, medication = found[0]
            return self.medication(f"{path}.contained[{number}]", medication, path)
        found_entry = self.index.get(reference)
        if found_entry is None:
            self.problem(ref_path, f"{_show(reference)} is not in the Bundle (put the Medication in it)")
            return None
        number, medication = found_entry
        return self.medication(f"Bundle.entry[{number}].resource", medication, path)

    def medication(self, path: str, medication: dict, request_path: str) -> _Product | None:
        if medication.get("resourceType") != "Medication":
            self.problem(f"{path}.resourceType", f"must be Medication, not {_show(medication.get('resourceType'))}")
            return None
        self.modifiers(path, medication)
        if medication.get("status", "active") != "active":
            self.problem(f"{path}.status", f"is {_show(medication['status'])}: not a medication to give")
        form = medication.get("form")
        if isinstance(form, dict):
            words = [str(form.get("text", ""))] + [str(c.get(k, "")) for c in _list(form.get("coding"))
                                              if isinstance(c, dict) for k in ("code", "display")]
            if not any(_SOLID_FORM.search(word) for word in words if word):
                label = form.get("text") or next((w for w in words if w), "")
                self.problem(f"{path}.form", f"{_show(label)} is not a tablet or capsule: "
                                             "the dispenser gives whole tablets")
        given_code = medication.get("code")
        code: dict = given_code if isinstance(given_code, dict) else {}
        coding, coding_path = self.coding(f"{path}.code", code)
        paths = {"": request_path, "ingredient": coding_path}
        strength = None
        ingredients = [(n, item) for n, item in enumerate(_list(medication.get("ingredient")))
                       if isinstance(item, dict) and item.get("isActive", True) is not False]
        if len(ingredients) == 1:
            number, ingredient = ingredients[0]
            where = f"{path}.ingredient[{number}]"
            item = ingredient.get("itemCodeableConcept")
            if isinstance(item, dict):
                found, found_path = self.coding(f"{where}.itemCodeableConcept", item)
                if found is not None:
                    coding, paths["ingredient"] = found, found_path
                    code = code or item
            if "strength" in ingredient:
                strength = self.strength(f"{where}.strength", ingredient["strength"])
                paths["strength"] = f"{where}.strength.numerator"
        return _Product(name=self.name(code, coding), ingredient=coding, strength=strength, paths=paths)

    def coding(self, path: str, concept: dict) -> tuple[dict | None, str]:
        """The coding to keep limits under: RxNorm where given, else the first with a code."""
        codings = concept.get("coding", []) if isinstance(concept, dict) else []
        found = [(n, c) for n, c in enumerate(codings if isinstance(codings, list) else [])
                 if isinstance(c, dict) and isinstance(c.get("code"), str)]
        if not found:
            return None, path
        number, chosen = next(((n, c) for n, c in found if c.get("system") == RXNORM), found[0])
        return {k: chosen[k] for k in ("system", "code", "display") if k in chosen}, f"{path}.coding[{number}]"

    @staticmethod
    def name(concept: dict, coding: dict | None) -> str:
        text = concept.get("text") if isinstance(concept, dict) else None
        if isinstance(text, str) and text.strip():
            return text.strip()
        if coding is not None:
            return str(coding.get("display") or coding["code"])
        return "medication"

    def strength(self, path: str, ratio: Any) -> dict | None:
        """Ingredient.strength (a Ratio) -> how much one tablet holds: per 1 tablet only."""
        if not isinstance(ratio, dict) or not isinstance(ratio.get("numerator"), dict):
            self.problem(f"{path}.numerator", "is required (how much one tablet holds)")
            return None
        denominator = ratio.get("denominator", {})
        if isinstance(denominator, dict):
            amount = _number(denominator.get("value", 1))
            units = [denominator[k] for k in ("code", "unit") if isinstance(denominator.get(k), str)]
            if amount != 1 or any(u.strip().lower() not in COUNT_UNITS | {"tbl", "caps"} for u in units):
                said = f"{denominator.get('value', 1)} {units[0] if units else ''}".strip()
                self.problem(f"{path}.denominator", f"is per {_show(said)}: the dispenser needs the strength "
                                                    "of one tablet or capsule")
                return None
        numerator = ratio["numerator"]
        return {k: numerator[k] for k in ("value", "unit", "system", "code") if k in numerator}

    # -- when and how much ---------------------------------------------------------------------

    def dosage(self, path: str, raw: Any) -> dict | None:
        if not isinstance(raw, dict):
            self.problem(path, "must be a Dosage object")
            return None
        entry = copy.deepcopy(raw)
        if "asNeededCodeableConcept" in entry:
            concept = entry.pop("asNeededCodeableConcept")
            if "asNeededBoolean" in entry:
                self.problem(f"{path}.asNeededCodeableConcept", "cannot stand beside asNeededBoolean "
                                                                "(asNeeded[x] is one of them)")
                return None
            entry["asNeededBoolean"] = True  # a reason to take it implies: as needed
            reason = (concept.get("text") or next((c.get("display") for c in _list(concept.get("coding"))
                                                   if isinstance(c, dict) and c.get("display")), None)) \
                if isinstance(concept, dict) else None
            entry.setdefault("text", f"as needed for {reason}" if reason else "as needed")
        timing = entry.get("timing")
        if not isinstance(timing, dict):
            return entry  # the schedule's parser names what is missing
        as_needed = entry.get("asNeededBoolean") is True
        if "code" in timing:
            repeat = self.from_code(f"{path}.timing", timing, as_needed)
            if repeat is None:
                return None
            timing.pop("code")
            timing["repeat"] = repeat
        elif isinstance(timing.get("repeat"), dict) and not as_needed:
            self.place(f"{path}.timing.repeat", timing["repeat"])
        return entry

    def from_code(self, path: str, timing: dict, as_needed: bool) -> dict | None:
        """timing.code -> the repeat it stands for; a repeat beside it must agree with it."""
        code = timing["code"]
        codings = _list(code.get("coding")) if isinstance(code, dict) else []
        coded = [c for c in codings if isinstance(c, dict) and isinstance(c.get("code"), str)]
        names = {c["code"] for c in coded if c.get("system") == GTS_SYSTEM or
                 ("system" not in c and c["code"] in TIMING_CODES)}
        if not names:
            text = code.get("text") if isinstance(code, dict) else None
            self.problem(f"{path}.code", f"{_show(text or code)} has no coding of {GTS_SYSTEM}: "
                                         "write the times in timing.repeat")
            return None
        if len(names) > 1:
            self.problem(f"{path}.code", f"names {len(names)} different timings ({', '.join(sorted(map(str, names)))})")
            return None
        name = names.pop()
        known = TIMING_CODES.get(name)
        if known is None:
            self.problem(f"{path}.code", f"{_show(name)} is not one the dispenser places on its routine "
                                         f"({', '.join(TIMING_CODES)}): write the times in timing.repeat")
            return None
        repeat = timing.get("repeat", {})
        if not isinstance(repeat, dict):
            self.problem(f"{path}.repeat", "must be an object")
            return None
        stands_for = {"frequency": known.frequency, "period": known.period, "periodUnit": known.unit}
        agree = True
        for key, value in stands_for.items():
            if key in repeat and repeat[key] != value:
                self.problem(f"{path}.repeat.{key}", f"{_show(repeat[key])} disagrees with timing.code "
                                                     f"{name} ({_show(value)})")
                agree = False
        if not agree:
            return None
        merged = {**stands_for, **repeat}
        if as_needed or any(k in repeat for k in ("timeOfDay", "when")):
            return merged
        if known.hours_apart is not None:
            times = hourly_times(known.hours_apart)
            merged.update(frequency=len(times), period=1, periodUnit="d", timeOfDay=times)
        else:
            merged["when"] = list(known.when)
        return merged

    def place(self, path: str, repeat: dict) -> None:
        """A scheduled repeat that names no time of day gets its times from the routine table."""
        if any(k in repeat for k in ("timeOfDay", "when")):
            return
        frequency, period, unit = repeat.get("frequency"), repeat.get("period"), repeat.get("periodUnit")
        if not isinstance(frequency, int) or isinstance(frequency, bool) or frequency < 1:
            return  # the schedule's parser says why
        if unit == "h":
            bounds = repeat.get("boundsPeriod")
            hours = _number(period)
            if isinstance(bounds, dict) and "start" in bounds or hours is None:
                return  # every n hours counted from its start, as the schedule does
            if (hours / frequency).denominator == 1 and int(hours / frequency) in HOURLY_FIRST:
                times = hourly_times(int(hours / frequency))
                repeat.update(frequency=len(times), period=1, periodUnit="d", timeOfDay=times)
            return
        if unit not in ("d", "wk"):
            return
        if unit == "wk" and frequency > 1:
            self.problem(f"{path}.frequency", f"{frequency} times a week names no days: write them as "
                                              "dayOfWeek with periodUnit d")
        elif frequency in DAILY_TIMES and (frequency == 1 or period == 1):
            repeat["when"] = list(DAILY_TIMES[frequency])
        elif period == 1 and 24 % frequency == 0 and 24 // frequency in HOURLY_FIRST:
            repeat["timeOfDay"] = hourly_times(24 // frequency)
        else:
            self.problem(f"{path}.frequency", f"{frequency} doses every {_show(period)} {unit} name no "
                                              "times of day: write them in timeOfDay or when")

    # -- the document --------------------------------------------------------------------------

    def document(self, products: dict[str, _Product], issued_at: datetime, timezone: str,
                 device_id: str | None) -> tuple[dict, dict[str, str]]:
        medications, mapping, used = [], {}, []
        ids: set[str] = set()
        for number, product in enumerate(products.values()):
            med_id = self.identifier(product, ids)
            medication: dict[str, Any] = {"id": med_id, "name": product.name, "compartment": number + 1}
            if product.ingredient is not None:
                medication["ingredient"] = product.ingredient
            if product.strength is not None:
                medication["strength"] = product.strength
            medication["dosage"] = product.dosages
            medications.append(medication)
            here = f"medications[{number}]"
            mapping[here] = product.paths[""]
            mapping[f"{here}.dosage"] = f"{product.paths['']}.dosageInstruction"
            mapping[f"{here}.ingredient"] = product.paths["ingredient"]
            mapping[f"{here}.strength"] = product.paths.get("strength", product.paths[""])
            for index, where in enumerate(product.dosage_paths):
                mapping[f"{here}.dosage[{index}]"] = where
            for entry in product.dosages:
                repeat = entry.get("timing", {}).get("repeat", {}) if isinstance(entry.get("timing"), dict) else {}
                when = repeat.get("when", []) if isinstance(repeat, dict) else []
                used += [code for code in when if isinstance(code, str)] if isinstance(when, list) else []
        document: dict[str, Any] = {
            "schema": SCHEMA,
            "version": max(1, int(issued_at.timestamp())),
            "issued_at": format_utc(issued_at),
            "timezone": timezone,
        }
        if device_id is not None:
            document["device_id"] = device_id
        routine = {code: ROUTINE[code] for code in ROUTINE if code in used}
        if routine:
            document["routine"] = routine
        document["medications"] = medications
        return document, mapping

    @staticmethod
    def identifier(product: _Product, ids: set[str]) -> str:
        """A readable, unique medication id: `sertraline`, else `sertraline-50-mg`, else `-2`..."""
        display = (product.ingredient or {}).get("display") or product.name
        base = _slug(str(display)) or "medication"
        candidates = [base]
        if product.strength is not None:
            candidates.append(_slug(f"{base} {product.strength.get('value')} {product.strength.get('unit', '')}"))
        candidates += [f"{base[:60]}-{n}" for n in range(2, 100)]
        chosen = next(c for c in candidates if c and c not in ids)
        ids.add(chosen)
        return chosen
