"""The schedule document (CONTRACT section 2): parse, check, and hold it.

`parse_schedule` turns the JSON document into a `Schedule`, or raises `ScheduleError`
listing every problem with its field path, so a clinic fixes a document in one round
trip. Anything that would change when a dose is given and is not understood here is
rejected, never ignored. Times are resolved once, here: `scheduler.py` only expands.

>>> from importlib.resources import files
>>> schedule = load_schedule_file(files("dispenser") / "demo" / "schedule.json")   # the contract's example
>>> schedule.medication("sertraline").dosages[0].quantity
1
"""
from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeGuard
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dispenser import docjson
from dispenser.dosage import (FIRST_YEAR, LAST_YEAR, ClockDosage, IntervalDosage, ScheduledDosage, Start,
                              entry_span)
from dispenser.timeutil import RFC3339, UTC, parse_rfc3339, parse_utc

SCHEMA = "dispenser.schedule/1"

EVENT_CODES = frozenset(
    "MORN MORN.early MORN.late NOON AFT AFT.early AFT.late EVE EVE.early EVE.late NIGHT "
    "PHS IMD HS WAKE C CM CD CV AC ACM ACD ACV PC PCM PCD PCV".split()
)
# FHIR defines these as "before" the event; `offset` counts back from them.
BEFORE_CODES = frozenset({"HS", "AC", "ACM", "ACD", "ACV"})
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

DEFAULT_BEFORE_MIN = 30
DEFAULT_AFTER_MIN = 120
MAX_WINDOW_MIN = 1440
MAX_OFFSET_MIN = 1440
# Bounds that keep expansion cheap and finite; real regimens are far inside them.
MAX_COUNT = 10_000
MAX_PERIOD_DAYS = 366
MAX_PERIOD_WEEKS = 52
MIN_INTERVAL = timedelta(minutes=1)
MAX_INTERVAL = timedelta(days=366)
# The most tablets one dose, and one as-needed limit (maxDosePerPeriod), may count: more
# is a typing error ("1000 tablets"), not a prescription a dispenser should carry out.
MAX_UNITS_PER_DOSE = 10
MAX_UNITS_PER_PERIOD = 100
# Units that count tablets or capsules (compared case-insensitively). A mass or volume
# unit counts only through the medication's strength, in that very unit.
COUNT_UNITS = frozenset({"{tbl}", "{capsule}", "1", "tablet", "tablets", "tab", "capsule",
                         "capsules", "cap"})

# \Z, not $: `$` also matches before a trailing newline ("sertraline\n" is no id).
# re.ASCII: `\d` would also take other scripts' digits ("0\uff18:00" read as 08:00).
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}\Z")
_CLOCK_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?\Z", re.ASCII)
_FHIR_TIME_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d):([0-5]\d)\Z", re.ASCII)
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}\Z", re.ASCII)
_DATETIME_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?\Z", re.ASCII
)
_NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})
_UNIT_HOURS = {"h": Fraction(1), "d": Fraction(24), "wk": Fraction(24 * 7)}

MAX_VERSION = 2**63 - 1  # SQLite's largest integer: the log keeps the version
MAX_SCHEDULE_BYTES = 64 * 1024  # a document's encoded size: bigger ones are refused unread (too_large)
_TOP_KEYS = ("schema", "version", "issued_at", "timezone", "routine", "medications", "signature",
             "device_id", "expires_at")
_MEDICATION_KEYS = ("id", "name", "compartment", "window", "dosage", "ingredient", "strength",
                    "min_gap_h", "separate_from", "display")
_CODING_KEYS = ("system", "code", "display", "version", "userSelected")
_STRENGTH_KEYS = ("value", "unit", "system", "code")
_SEPARATION_KEYS = ("ingredient", "hours")
MAX_GAP_HOURS = 168  # a week: longer spacing is a prescription question, not a dispenser's
DISPLAY_WIDTH = 16   # the LCD's line
MAX_CODE_LENGTH = 64  # an ingredient code (RxNorm's are a few digits; 64 leaves room for any system's)
_WINDOW_KEYS = ("before_min", "after_min")
_ENTRY_KEYS = ("timing", "doseAndRate", "asNeededBoolean", "maxDosePerPeriod")
# For people and the pharmacy; they never change when or how much.
_TEXT_KEYS = ("text", "patientInstruction", "sequence", "route", "additionalInstruction",
              "method", "site")
_SCHEDULED_REPEAT_KEYS = (
    "frequency", "period", "periodUnit", "dayOfWeek", "timeOfDay", "when", "offset",
    "boundsPeriod", "count",
)
_PRN_REPEAT_KEYS = ("frequency", "period", "periodUnit", "boundsPeriod")
_DOSE_AND_RATE_KEYS = ("doseQuantity", "type")
_QUANTITY_KEYS = ("value", "unit", "system", "code")


class ScheduleError(Exception):
    """A schedule document that cannot be used; `problems` names every field at fault."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))

    def __reduce__(self) -> tuple[type[ScheduleError], tuple[list[str]]]:
        return (type(self), (self.problems,))


@dataclass(frozen=True)
class AsNeeded:
    """An as-needed (PRN) medication's limits: spacing and a rolling maximum.

    `quantity` and `max_units` are tablets (a dose in mg is converted through the
    strength); `bounds_end` is exclusive, as ScheduledDosage's.
    """

    quantity: int
    min_interval: timedelta
    max_units: int
    max_period: timedelta
    bounds_start: datetime | None = None
    bounds_end: datetime | None = None


@dataclass(frozen=True)
class Strength:
    """How much active ingredient one unit (tablet, capsule) holds: 200 mg."""

    value: Fraction
    unit: str


@dataclass(frozen=True)
class Separation:
    """Never within `gap` of a release of `ingredient` (either way round): CONTRACT section 6."""

    ingredient: str
    gap: timedelta


@dataclass(frozen=True)
class Medication:
    """One compartment's medication: scheduled (`dosages`) or as-needed (`as_needed`).

    `ingredient` is the active ingredient's code (`ingredient.code`), or the medication's
    id when the document names none: every safety limit holds per ingredient, across ids.
    """

    id: str
    name: str
    compartment: int
    window_before: timedelta
    window_after: timedelta
    dosages: tuple[ScheduledDosage, ...] = ()
    as_needed: AsNeeded | None = None
    ingredient: str = ""
    strength: Strength | None = None
    min_gap: timedelta | None = None
    separate_from: tuple[Separation, ...] = ()
    display: str | None = None

    @property
    def is_as_needed(self) -> bool:
        return self.as_needed is not None

    @property
    def substance(self) -> str:
        """The key every limit is kept under: the ingredient code, else the id."""
        return self.ingredient or self.id

    def amount(self, units: int) -> Fraction:
        """How much ingredient `units` tablets hold: in the strength's unit where known, else tablets."""
        return units * self.strength.value if self.strength is not None else Fraction(units)

    @property
    def amount_unit(self) -> str:
        return self.strength.unit if self.strength is not None else "unit"


@dataclass(frozen=True, eq=False)
class Schedule:
    """A checked schedule document. `document` is the original, signature included.

    Compared (and hashed) by identity: compare `document` or `version` for content.
    """

    version: int
    issued_at: datetime
    timezone: str
    tz: ZoneInfo
    routine: dict[str, time]
    medications: tuple[Medication, ...]
    document: dict

    def medication(self, medication_id: str) -> Medication | None:
        for medication in self.medications:
            if medication.id == medication_id:
                return medication
        return None

    @property
    def compartments(self) -> frozenset[int]:
        return frozenset(m.compartment for m in self.medications)


def load_schedule_file(path: str | Path, default_timezone: str | None = None) -> Schedule:
    """Read and parse a schedule file; any failure is a ScheduleError with one line."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScheduleError([f"{name}: no such file"]) from None
    except UnicodeDecodeError:
        raise ScheduleError([f"{name}: not UTF-8 text"]) from None
    except OSError as exc:
        raise ScheduleError([f"{name}: cannot be read ({exc.strerror or exc})"]) from None
    try:
        doc = docjson.loads(text)
    except docjson.DuplicateKeyError as exc:
        raise ScheduleError([f"{name}: not valid JSON ({exc})"]) from None
    except json.JSONDecodeError as exc:
        raise ScheduleError(
            [f"{name}: not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})"]
        ) from None
    except RecursionError:
        raise ScheduleError([f"{name}: not valid JSON (nested too deeply)"]) from None
    return parse_schedule(doc, default_timezone)


def parse_schedule(doc: Any, default_timezone: str | None = None, *, applied: bool = False) -> Schedule:
    """Check a schedule document and resolve it; ScheduleError lists every problem.

    `applied`: a document the log says this device already applied, read again (at a
    start, for a report), under the rules it was applied by: `issued_at` and `expires_at`
    in any ISO 8601 spelling with an offset (before RFC 3339's was required), and a
    `separate_from` code of any length. A device must never refuse to start on the
    schedule it was giving doses by.
    """
    return _Parser(default_timezone, applied).parse(doc)


# -- small checks -----------------------------------------------------------------


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _code_problem(code: Any) -> str:
    """What is wrong with an ingredient code that is there: its kind, its blankness or its length."""
    if isinstance(code, str) and code.strip():
        return f"must be 1..{MAX_CODE_LENGTH} characters, not {len(code)}"
    return f"must be a non-empty string, not {_show(code)}"


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_number(value: Any) -> Fraction | None:
    """Exact value of a positive finite JSON number (0.1 stays 1/10)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    exact = Fraction(repr(value)) if isinstance(value, float) else Fraction(value)
    return exact if exact > 0 else None


def _duration(amount: Fraction, unit: str) -> tuple[timedelta | None, str]:
    """amount * unit as a timedelta, or None and why not.

    Whole seconds, since doses are named by a time in seconds; at least a minute and at
    most 366 days, which keeps expansion finite and cheap.
    """
    seconds = amount * _UNIT_HOURS[unit] * 3600
    if not MIN_INTERVAL.total_seconds() <= seconds <= MAX_INTERVAL.total_seconds():
        return None, "must be between 1 minute and 366 days"
    if seconds.denominator != 1:
        return None, "must be a whole number of seconds"
    return timedelta(seconds=int(seconds)), ""


def _number(value: Fraction) -> str:
    """A strength for messages: 50, 2.5, or 1/3."""
    if value.denominator == 1:
        return str(value.numerator)
    text = f"{float(value):g}"
    return text if Fraction(text) == value else str(value)


def _clock(text: Any) -> time | None:
    """HH:MM or HH:MM:SS."""
    if not isinstance(text, str):
        return None
    match = _CLOCK_RE.match(text)
    if not match:
        return None
    return time(int(match.group(1)), int(match.group(2)), int(match.group(3) or 0))


def _span(moment: time) -> timedelta:
    return timedelta(hours=moment.hour, minutes=moment.minute, seconds=moment.second)


def _format_span(span: timedelta) -> str:
    """A time-of-day offset for messages: 08:00, or 23:30 (day before) when negative."""
    days, rest = divmod(int(span.total_seconds()), 86400)
    text = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}"
    if rest % 60:
        text += f":{rest % 60:02d}"
    return text + {0: "", -1: " (day before)", 1: " (day after)"}.get(days, "")


# -- the parser -------------------------------------------------------------------


def json_copy(value: Any) -> Any:
    """copy.deepcopy of parsed JSON (dicts, lists, text, numbers), several times cheaper.

    Anything else, or a structure too deep (or cyclic) to walk, goes to copy.deepcopy.
    """
    try:
        return _json_copy(value)
    except RecursionError:
        return copy.deepcopy(value)


def _json_copy(value: Any) -> Any:
    kind = type(value)
    if kind is dict:
        return {key: _json_copy(item) for key, item in value.items()}
    if kind is list:
        return [_json_copy(item) for item in value]
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return value
    return copy.deepcopy(value)


class _Parser:
    """Walks one document, collecting problems instead of stopping at the first."""

    def __init__(self, default_timezone: str | None, applied: bool = False):
        self.default_timezone = default_timezone
        self.applied = applied
        self.problems: list[str] = []
        self.tz: ZoneInfo | None = None
        self.routine: dict[str, time] = {}
        self.routine_broken = False  # then `when` codes are not blamed a second time

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def unknown_keys(self, path: str, raw: dict, allowed: Collection[str], message: str = "unknown field") -> None:
        for key in raw:
            if key not in allowed:
                self.problem(f"{path}.{key}" if path else str(key), message)

    def fhir_keys(self, path: str, raw: dict, allowed: Collection[str]) -> None:
        """A FHIR element's keys: `allowed`, `id` and `extension` (kept, they change nothing).

        `modifierExtension` is refused wherever it stands: by FHIR's definition it changes
        the meaning of its element, and the dispenser cannot know how.
        """
        for key, value in raw.items():
            where = f"{path}.{key}"
            if key == "modifierExtension":
                self.problem(where, "is refused: it changes what the element means")
            elif key == "id":
                if not isinstance(value, str):
                    self.problem(where, f"must be a string, not {_show(value)}")
            elif key == "extension":
                if not isinstance(value, list) or not all(
                        isinstance(item, dict) and isinstance(item.get("url"), str) for item in value):
                    self.problem(where, "must be a list of objects, each with a url")
            elif key not in allowed:
                self.problem(where, "is not supported")

    def object(self, path: str, raw: Any) -> dict | None:
        if isinstance(raw, dict):
            return raw
        self.problem(path, f"must be an object, not {_kind(raw)}")
        return None

    # top level

    def parse(self, doc: Any) -> Schedule:
        if not isinstance(doc, dict):
            raise ScheduleError([f"(document): must be a JSON object, not {_kind(doc)}"])
        self.unknown_keys("", doc, _TOP_KEYS)
        if "schema" not in doc:
            self.problem("schema", f"is required (must be {_show(SCHEMA)})")
        elif doc["schema"] != SCHEMA:
            self.problem("schema", f"must be {_show(SCHEMA)}, not {_show(doc['schema'])}")
        version = self.version(doc)
        issued_at = self.issued_at(doc)
        self.binding(doc)
        timezone = self.timezone(doc)
        if "routine" in doc:
            self.routine = self.parse_routine(doc["routine"])
        medications = self.medications(doc.get("medications"))
        if "signature" in doc:
            self.object("signature", doc["signature"])
        if self.problems or issued_at is None or timezone is None or self.tz is None:
            raise ScheduleError(self.problems)
        return Schedule(
            version=version,
            issued_at=issued_at,
            timezone=timezone,
            tz=self.tz,
            routine=dict(self.routine),
            medications=tuple(medications),
            document=json_copy(doc),
        )

    def version(self, doc: dict) -> int:
        version = doc.get("version")
        if "version" not in doc:
            self.problem("version", "is required")
        elif not _is_int(version) or version < 1:
            self.problem("version", f"must be an integer >= 1, not {_show(version)}")
        elif version > MAX_VERSION:
            self.problem("version", f"must be at most {MAX_VERSION}")
        else:
            return version
        return 0  # never used: the problem refuses the document

    def issued_at(self, doc: dict) -> datetime | None:
        if "issued_at" not in doc:
            self.problem("issued_at", "is required")
            return None
        raw = doc["issued_at"]
        moment = self.date_time("issued_at", raw)
        if moment is None:
            return None
        if not FIRST_YEAR <= moment.year <= LAST_YEAR:
            self.problem("issued_at", f"must be in the years {FIRST_YEAR}..{LAST_YEAR}, "
                                      f"not {_show(raw)}")
            return None
        return moment

    def binding(self, doc: dict) -> None:
        """(v2) `device_id` and `expires_at`, both optional here: the engine judges them
        against the device and its clock (and requires `device_id` from the clinic)."""
        if "device_id" in doc and not (isinstance(doc["device_id"], str) and doc["device_id"].strip()):
            self.problem("device_id", f"must be a non-empty string, not {_show(doc['device_id'])}")
        if "expires_at" in doc:
            self.date_time("expires_at", doc["expires_at"])

    def date_time(self, path: str, raw: Any) -> datetime | None:
        """`issued_at`, `expires_at`: the contract's one spelling (RFC 3339), as aware UTC."""
        if self.applied and isinstance(raw, str) and not RFC3339.match(raw):
            try:
                return parse_utc(raw)  # the reading it was applied under
            except (ValueError, OverflowError):
                pass
        if not isinstance(raw, str) or not RFC3339.match(raw):
            self.problem(path, f"must be an ISO date-time in RFC 3339 form, YYYY-MM-DDTHH:MM:SS "
                               f"with Z or an offset +HH:MM, not {_show(raw)}")
            return None
        try:
            return parse_rfc3339(raw)
        except (ValueError, OverflowError):
            self.problem(path, f"{_show(raw)} is not a real date and time")
            return None

    def timezone(self, doc: dict) -> str | None:
        if "timezone" in doc:
            name, where = doc["timezone"], ""
        elif self.default_timezone is not None:
            name, where = self.default_timezone, " (the configured default)"
        else:
            self.problem("timezone", "is required (no default timezone is configured)")
            return None
        self.tz = _zone(name)
        if self.tz is None:
            self.problem("timezone", f"{_show(name)} is not an IANA time zone name{where}")
        return name

    def parse_routine(self, raw: Any) -> dict[str, time]:
        routine: dict[str, time] = {}
        if self.object("routine", raw) is None:
            self.routine_broken = True
            return routine
        for code, text in raw.items():
            if code not in EVENT_CODES:
                self.problem(f"routine.{code}", "is not a FHIR EventTiming code")
            elif (moment := _clock(text)) is None:
                self.problem(f"routine.{code}", f"must be a time HH:MM, not {_show(text)}")
                self.routine_broken = True
            else:
                routine[code] = moment
        return routine

    # medications

    def medications(self, raw: Any) -> list[Medication]:
        if raw is None:
            self.problem("medications", "is required")
            return []
        if not isinstance(raw, list):
            self.problem("medications", f"must be a list, not {_kind(raw)}")
            return []
        medications: list[Medication] = []
        ids: dict[str | int, int] = {}
        compartments: dict[str | int, int] = {}
        for index, item in enumerate(raw):
            path = f"medications[{index}]"
            medication = self.medication(path, item)
            if isinstance(item, dict):
                self.unique(f"{path}.id", item.get("id"), ids, "medications", index)
                self.unique(f"{path}.compartment", item.get("compartment"), compartments,
                            "medications", index)
            if medication is not None:
                medications.append(medication)
        return medications

    def unique(self, path: str, value: Any, seen: dict[str | int, int], where: str, index: int) -> None:
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            if value in seen:
                self.problem(path, f"{_show(value)} is already used by {where}[{seen[value]}]")
            else:
                seen[value] = index

    def medication(self, path: str, raw: Any) -> Medication | None:
        if self.object(path, raw) is None:
            return None
        self.unknown_keys(path, raw, _MEDICATION_KEYS)
        med_id = raw.get("id")
        if "id" not in raw:
            self.problem(f"{path}.id", "is required")
        elif not isinstance(med_id, str) or not _ID_RE.match(med_id):
            self.problem(f"{path}.id",
                         f"must match ^[a-z0-9][a-z0-9_.-]{{0,63}}$, not {_show(med_id)}")
        name = raw.get("name")
        if not isinstance(name, str) or not name.strip():
            self.problem(f"{path}.name", "is required" if "name" not in raw
                         else f"must be a non-empty string, not {_show(name)}")
        compartment = raw.get("compartment")
        if "compartment" not in raw:
            self.problem(f"{path}.compartment", "is required")
        elif not _is_int(compartment) or compartment < 1:
            self.problem(f"{path}.compartment",
                         f"must be an integer >= 1, not {_show(compartment)}")
        before, after = self.window(f"{path}.window", raw.get("window", {}))
        ingredient = self.ingredient(f"{path}.ingredient", raw["ingredient"]) if "ingredient" in raw else ""
        strength = self.strength(f"{path}.strength", raw["strength"]) if "strength" in raw else None
        min_gap = self.hours(f"{path}.min_gap_h", raw["min_gap_h"]) if "min_gap_h" in raw else None
        separate_from = self.separate_from(f"{path}.separate_from", raw.get("separate_from", []),
                                           ingredient or med_id)
        display = self.display(f"{path}.display", raw["display"]) if "display" in raw else None
        dosages, as_needed = self.dosage_list(f"{path}.dosage", raw.get("dosage"), strength)
        return Medication(
            id=med_id, name=name, compartment=compartment,
            window_before=before, window_after=after,
            dosages=tuple(dosages), as_needed=as_needed,
            ingredient=ingredient or "", strength=strength, min_gap=min_gap,
            separate_from=separate_from, display=display,
        )

    def ingredient(self, path: str, raw: Any) -> str:
        """A FHIR Coding; its `code` is what limits are kept under."""
        if self.object(path, raw) is None:
            return ""
        self.fhir_keys(path, raw, _CODING_KEYS)  # its id and extension are kept, as FHIR's
        code = raw.get("code")
        if not isinstance(code, str) or not code.strip() or len(code) > MAX_CODE_LENGTH:
            self.problem(f"{path}.code", f"is required (the active ingredient's code, 1..{MAX_CODE_LENGTH} "
                         "characters)" if "code" not in raw else _code_problem(code))
            return ""
        for key in ("system", "display"):
            if key in raw and not isinstance(raw[key], str):
                self.problem(f"{path}.{key}", f"must be a string, not {_show(raw[key])}")
        return code

    def strength(self, path: str, raw: Any) -> Strength | None:
        """How much one unit holds: a positive value and a unit (UCUM `code` wins over `unit`)."""
        if self.object(path, raw) is None:
            return None
        self.fhir_keys(path, raw, _STRENGTH_KEYS)  # a FHIR Quantity: id and extension kept
        value = _positive_number(raw.get("value"))
        if value is None:
            self.problem(f"{path}.value", f"must be a positive number, not {_show(raw.get('value'))}")
        unit_key = "code" if "code" in raw else "unit"
        unit = raw.get(unit_key)
        if not isinstance(unit, str) or not unit.strip():
            self.problem(f"{path}.{unit_key}", "is required (the unit of the strength, e.g. mg)"
                         if unit_key not in raw else f"must be a non-empty string, not {_show(unit)}")
            return None
        return None if value is None else Strength(value=value, unit=unit)

    def hours(self, path: str, raw: Any) -> timedelta | None:
        """A positive number of hours, at most a week, in whole seconds."""
        amount = _positive_number(raw)
        if amount is None or amount > MAX_GAP_HOURS or (amount * 3600).denominator != 1:
            self.problem(path, f"must be a positive number of hours up to {MAX_GAP_HOURS} "
                               f"(whole seconds), not {_show(raw)}")
            return None
        return timedelta(seconds=int(amount * 3600))

    def separate_from(self, path: str, raw: Any, own: Any) -> tuple[Separation, ...]:
        if not isinstance(raw, list):
            self.problem(path, f"must be a list, not {_kind(raw)}")
            return ()
        separations = []
        for index, item in enumerate(raw):
            item_path = f"{path}[{index}]"
            if self.object(item_path, item) is None:
                continue
            self.unknown_keys(item_path, item, _SEPARATION_KEYS, "is not supported")
            code = item.get("ingredient")
            too_long = isinstance(code, str) and len(code) > MAX_CODE_LENGTH and not self.applied
            if not isinstance(code, str) or not code.strip() or too_long:
                self.problem(f"{item_path}.ingredient",
                             "is required" if "ingredient" not in item else _code_problem(code))
                code = None
            elif code == own:
                self.problem(f"{item_path}.ingredient", "names the medication's own ingredient "
                                                       "(use min_gap_h for that)")
                code = None
            gap = self.hours(f"{item_path}.hours", item.get("hours")) if "hours" in item else None
            if "hours" not in item:
                self.problem(f"{item_path}.hours", "is required")
            if code is not None and gap is not None:
                separations.append(Separation(ingredient=code, gap=gap))
        return tuple(separations)

    def display(self, path: str, raw: Any) -> str | None:
        """The name as the LCD shows it: printable ASCII the HD44780 can draw, at most 16."""
        if not isinstance(raw, str) or not raw.strip() or len(raw) > DISPLAY_WIDTH \
                or not all(" " <= ch <= "~" for ch in raw):
            self.problem(path, f"must be 1..{DISPLAY_WIDTH} printable ASCII characters, not {_show(raw)}")
            return None
        return raw

    def window(self, path: str, raw: Any) -> tuple[timedelta, timedelta]:
        minutes = {"before_min": DEFAULT_BEFORE_MIN, "after_min": DEFAULT_AFTER_MIN}
        if self.object(path, raw) is not None:
            self.unknown_keys(path, raw, _WINDOW_KEYS)
            for key in _WINDOW_KEYS:
                if key not in raw:
                    continue
                value = raw[key]
                if not _is_int(value) or not 0 <= value <= MAX_WINDOW_MIN:
                    self.problem(f"{path}.{key}",
                                 f"must be an integer 0..{MAX_WINDOW_MIN}, not {_show(value)}")
                else:
                    minutes[key] = value
            if minutes["before_min"] == 0 and minutes["after_min"] == 0:
                self.problem(path, "before_min and after_min cannot both be 0 (no time to take it)")
        return timedelta(minutes=minutes["before_min"]), timedelta(minutes=minutes["after_min"])

    def dosage_list(self, path: str, raw: Any,
                    strength: Strength | None) -> tuple[list[ScheduledDosage], AsNeeded | None]:
        if raw is None:
            self.problem(path, "is required")
            return [], None
        if not isinstance(raw, list) or not raw:
            self.problem(path, f"must be a non-empty list, not {_show(raw)}")
            return [], None
        as_needed_flags = [isinstance(e, dict) and e.get("asNeededBoolean") is True for e in raw]
        if any(as_needed_flags) and len(raw) > 1:
            self.problem(path, "an as-needed medication has exactly one dosage entry "
                               "(as-needed and scheduled entries cannot be mixed)")
        dosages: dict[int, ScheduledDosage] = {}
        as_needed = None
        for index, entry in enumerate(raw):
            parsed = self.dosage(f"{path}[{index}]", entry, strength)
            if isinstance(parsed, AsNeeded):
                as_needed = parsed
            elif parsed is not None:
                dosages[index] = parsed
        self.overlaps(path, dosages)
        return list(dosages.values()), as_needed

    def overlaps(self, path: str, dosages: dict[int, ScheduledDosage]) -> None:
        """Refuse two entries whose periods share an instant, naming both.

        Periods are half-open [start, exclusive end), unbounded where a bound is missing,
        and end at the last dose where `count` ends them first. Non-overlapping entries
        cannot put two doses on one instant, and a document written with the old,
        exclusive meaning of boundsPeriod.end (a titration's end = the next start) is
        refused instead of giving two doses on the day they share. Two clock-time entries
        that never name the same time of day may overlap: that is how FHIR writes a split
        dose ("1 in the morning, 2 at night"), and they cannot double a dose.
        """
        if self.tz is None:
            return  # bounds were not read: the timezone's problem is reported
        spans = {index: entry_span(dosage, self.tz) for index, dosage in dosages.items()}
        for later, (start, end) in spans.items():
            for earlier, (other_start, other_end) in spans.items():
                if earlier >= later:
                    break
                if _apart(dosages[later], dosages[earlier]):
                    continue
                first = max((t for t in (start, other_start) if t is not None), default=None)
                last = min((t for t in (end, other_end) if t is not None), default=None)
                if first is None or last is None or first < last:
                    self.problem(f"{path}[{later}].timing.repeat.boundsPeriod",
                                 f"overlaps {path}[{earlier}] ({self.span_text(first, last)})")

    def span_text(self, first: datetime | None, last: datetime | None) -> str:
        """[first, last) as local dates: 2026-11-27, 2026-11-27 to 2026-11-30, from ..."""
        day = lambda moment: moment.astimezone(self.tz).date().isoformat()  # noqa: E731
        if first is None and last is None:
            return "neither has a boundsPeriod"
        if last is None:
            return f"from {day(first)}"
        if first is None:
            return f"until {day(last - timedelta(seconds=1))}"
        if day(first) == day(last - timedelta(seconds=1)):
            return day(first)
        return f"{day(first)} to {day(last - timedelta(seconds=1))}"

    # one dosage entry

    def dosage(self, path: str, raw: Any,
               strength: Strength | None) -> ScheduledDosage | AsNeeded | None:
        if self.object(path, raw) is None:
            return None
        self.fhir_keys(path, raw, _ENTRY_KEYS + _TEXT_KEYS)
        flag = raw.get("asNeededBoolean", False)
        if not isinstance(flag, bool):
            self.problem(f"{path}.asNeededBoolean", f"must be true or false, not {_show(flag)}")
            return None
        quantity = self.dose_quantity(f"{path}.doseAndRate", raw.get("doseAndRate"), strength)
        if flag:
            return self.as_needed(path, raw, quantity, strength)
        if "maxDosePerPeriod" in raw:
            self.problem(f"{path}.maxDosePerPeriod", "is only allowed with asNeededBoolean true")
        return self.scheduled(path, raw, quantity)

    def dose_quantity(self, path: str, raw: Any, strength: Strength | None) -> int | None:
        if raw is None:
            self.problem(path, "is required")
            return None
        if not isinstance(raw, list) or len(raw) != 1:
            self.problem(path, f"must be a list of exactly one entry, not {_show(raw)}")
            return None
        entry_path = f"{path}[0]"
        if self.object(entry_path, raw[0]) is None:
            return None
        self.fhir_keys(entry_path, raw[0], _DOSE_AND_RATE_KEYS)
        quantity_path = f"{entry_path}.doseQuantity"
        quantity = raw[0].get("doseQuantity")
        if quantity is None:
            self.problem(quantity_path, "is required")
            return None
        if self.object(quantity_path, quantity) is None:
            return None
        self.fhir_keys(quantity_path, quantity, _QUANTITY_KEYS)
        return self.units(quantity_path, quantity, strength, MAX_UNITS_PER_DOSE, "a dose")

    def units(self, path: str, raw: dict, strength: Strength | None, maximum: int,
              per: str) -> int | None:
        """A FHIR Quantity as whole tablets (CONTRACT section 2, Units).

        A count unit (or none) counts tablets; a mass or volume counts only in the unit of
        the medication's strength, as a whole multiple of it. Never a unit ignored.
        """
        value = raw.get("value")
        if "value" not in raw:
            self.problem(f"{path}.value", "is required")
            return None
        amount = _positive_number(value)
        if amount is None:
            self.problem(f"{path}.value",
                         f"must be a positive whole number of tablets, not {_show(value)}")
            return None
        per_tablet = self.unit_size(path, raw, strength)
        if per_tablet is None:
            return None
        tablets = amount / per_tablet
        if tablets.denominator != 1:
            self.problem(f"{path}.value", f"must be a whole number of tablets, not {_show(value)}"
                         if per_tablet == 1 or strength is None
                         else f"{_show(value)} {strength.unit} is not a whole "
                         f"number of tablets of {_number(strength.value)} {strength.unit}")
            return None
        if tablets > maximum:
            self.problem(f"{path}.value", f"{_show(int(tablets))} tablets {per} is more than the "
                                          f"most a dispenser gives ({maximum})")
            return None
        return int(tablets)

    def unit_size(self, path: str, raw: dict, strength: Strength | None) -> Fraction | None:
        """How much of `raw`'s unit one tablet is: 1 for a count unit, else the strength."""
        sizes = {}
        for key in ("code", "unit"):
            if key not in raw:
                continue
            name = raw[key]
            if not isinstance(name, str) or not name.strip():
                self.problem(f"{path}.{key}", f"must be a non-empty string, not {_show(name)}")
                return None
            if name.strip().lower() in COUNT_UNITS:
                sizes[key] = Fraction(1)
            elif strength is not None and name == strength.unit:
                sizes[key] = strength.value
            else:
                self.problem(f"{path}.{key}", f"{_show(name)} is neither a count unit (tablet, "
                             "capsule, {tbl}) nor the unit of the medication's strength"
                             + (f" ({_show(strength.unit)})" if strength else " (none is given)"))
                return None
        if len(set(sizes.values())) > 1:
            self.problem(f"{path}.unit", f"{_show(raw['unit'])} does not mean the same as code "
                                         f"{_show(raw['code'])}")
            return None
        return next(iter(sizes.values()), Fraction(1))

    def repeat(self, path: str, raw: dict, allowed: Collection[str]) -> dict | None:
        """The entry's timing.repeat object, checked for unknown keys."""
        timing_path = f"{path}.timing"
        timing = raw.get("timing")
        if timing is None:
            self.problem(timing_path, "is required")
            return None
        if self.object(timing_path, timing) is None:
            return None
        self.fhir_keys(timing_path, timing, ("repeat",))
        repeat_path = f"{timing_path}.repeat"
        if "repeat" not in timing:
            self.problem(repeat_path, "is required")
            return None
        repeat = self.object(repeat_path, timing["repeat"])
        if repeat is not None:
            for key in repeat:
                if key in _SCHEDULED_REPEAT_KEYS and key not in allowed:
                    self.problem(f"{repeat_path}.{key}", "is not allowed on an as-needed dosage")
            self.fhir_keys(repeat_path, repeat, _SCHEDULED_REPEAT_KEYS)
        return repeat

    def period_unit(self, path: str, repeat: dict, allowed: tuple[str, ...]) -> str | None:
        unit = repeat.get("periodUnit")
        if "periodUnit" not in repeat:
            self.problem(f"{path}.periodUnit", "is required")
        elif unit not in allowed:
            if isinstance(unit, str):
                self.problem(f"{path}.periodUnit", f"{_show(unit)} is not supported "
                             f"(use {', '.join(allowed)})")
            else:
                self.problem(f"{path}.periodUnit", f"must be one of {', '.join(allowed)}")
        else:
            return unit
        return None

    def frequency(self, path: str, repeat: dict) -> int | None:
        value = repeat.get("frequency")
        if "frequency" not in repeat:
            self.problem(f"{path}.frequency", "is required")
        elif not _is_int(value) or value < 1:
            self.problem(f"{path}.frequency", f"must be an integer >= 1, not {_show(value)}")
        else:
            return value
        return None

    def period(self, path: str, repeat: dict, unit: str | None) -> Fraction | None:
        value = repeat.get("period")
        if "period" not in repeat:
            self.problem(f"{path}.period", "is required")
            return None
        number = _positive_number(value)
        if number is None:
            self.problem(f"{path}.period", f"must be a positive number, not {_show(value)}")
            return None
        if unit in ("d", "wk"):
            limit = MAX_PERIOD_DAYS if unit == "d" else MAX_PERIOD_WEEKS
            if number.denominator != 1 or number > limit:
                self.problem(f"{path}.period", f"must be a whole number 1..{limit} "
                                               f"with {_show(unit)}, not {_show(value)}")
                return None
        return number

    def interval(self, path: str, period: Fraction | None, frequency: int | None,
                 unit: str | None) -> timedelta | None:
        """period/frequency in unit, within sane limits."""
        if period is None or frequency is None or unit is None:
            return None
        interval, why = _duration(period / frequency, unit)
        if interval is None:
            self.problem(f"{path}.period", f"period/frequency {why}")
        return interval

    def bounds(self, path: str, repeat: dict) -> tuple[datetime | None, datetime | None, bool]:
        """(start, end, ok) of boundsPeriod, as aware UTC."""
        if "boundsPeriod" not in repeat:
            return None, None, True
        bounds_path = f"{path}.boundsPeriod"
        raw = self.object(bounds_path, repeat["boundsPeriod"])
        if raw is None:
            return None, None, False
        self.fhir_keys(bounds_path, raw, ("start", "end"))
        start = self.moment(f"{bounds_path}.start", raw["start"]) if "start" in raw else None
        end = self.moment(f"{bounds_path}.end", raw["end"], True) if "end" in raw else None
        ok = ("start" not in raw or start is not None) and ("end" not in raw or end is not None)
        if start is not None and end is not None and end <= start:
            self.problem(f"{bounds_path}.end", "is before start")
            ok = False
        return start, end, ok

    def moment(self, path: str, text: Any, end: bool = False) -> datetime | None:
        """A FHIR date or dateTime (local when without offset) -> aware UTC.

        A start is the first instant it names: a date's local midnight. An `end` is
        inclusive in FHIR, and returned exclusive: a date covers its whole local day (the
        next local midnight), a dateTime its second (times are whole seconds).
        """
        if not isinstance(text, str) or not (_DATE_RE.match(text) or _DATETIME_RE.match(text)):
            self.problem(path, f"must be a date YYYY-MM-DD or a date-time, not {_show(text)}")
            return None
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            self.problem(path, f"{_show(text)} is not a valid date")
            return None
        if not FIRST_YEAR <= moment.year <= LAST_YEAR:
            self.problem(path, f"must be in the years {FIRST_YEAR}..{LAST_YEAR}, not {_show(text)}")
            return None
        if moment.microsecond:
            self.problem(path, "must be in whole seconds")
            return None
        if end:
            moment += timedelta(days=1) if _DATE_RE.match(text) else timedelta(seconds=1)
        if moment.tzinfo is None:
            if self.tz is None:
                return None  # the timezone problem is already reported
            moment = moment.replace(tzinfo=self.tz)
        return moment.astimezone(UTC)

    def as_needed(self, path: str, raw: dict, quantity: int | None,
                  strength: Strength | None) -> AsNeeded | None:
        repeat = self.repeat(path, raw, _PRN_REPEAT_KEYS)
        max_units, max_period = self.max_dose(f"{path}.maxDosePerPeriod", raw, strength)
        if repeat is None:
            return None
        rpath = f"{path}.timing.repeat"
        unit = self.period_unit(rpath, repeat, ("h", "d"))
        frequency = self.frequency(rpath, repeat)
        interval = self.interval(rpath, self.period(rpath, repeat, unit), frequency, unit)
        start, end, ok = self.bounds(rpath, repeat)
        if quantity is None or max_units is None or max_period is None or interval is None or not ok:
            return None
        if quantity > max_units:
            self.problem(f"{path}.maxDosePerPeriod.numerator.value",
                         f"is below the dose itself ({quantity})")
            return None
        return AsNeeded(quantity=quantity, min_interval=interval, max_units=max_units,
                        max_period=max_period, bounds_start=start, bounds_end=end)

    def max_dose(self, path: str, raw: dict,
                 strength: Strength | None) -> tuple[int | None, timedelta | None]:
        """maxDosePerPeriod: required, since an as-needed dose without a limit is unsafe."""
        if "maxDosePerPeriod" not in raw:
            self.problem(path, "is required for an as-needed dosage (a limit per period)")
            return None, None
        ratio = self.object(path, raw["maxDosePerPeriod"])
        if ratio is None:
            return None, None
        self.fhir_keys(path, ratio, ("numerator", "denominator"))
        numerator = self.quantity(f"{path}.numerator", ratio.get("numerator"), "numerator" in ratio)
        denominator = self.quantity(f"{path}.denominator", ratio.get("denominator"),
                                    "denominator" in ratio)
        units = None
        if numerator is not None:
            units = self.units(f"{path}.numerator", numerator, strength, MAX_UNITS_PER_PERIOD,
                               "in one period")
        period = None
        if denominator is not None:
            period = self.limit_period(f"{path}.denominator", denominator)
        return units, period

    def quantity(self, path: str, raw: Any, present: bool) -> dict | None:
        if not present:
            self.problem(path, "is required")
            return None
        if self.object(path, raw) is None:
            return None
        self.fhir_keys(path, raw, _QUANTITY_KEYS)
        return raw

    def limit_period(self, path: str, raw: dict) -> timedelta | None:
        """value * unit; the UCUM `code` wins over the display `unit` when both exist."""
        unit_key = "code" if "code" in raw else "unit"
        unit = raw.get(unit_key)
        amount = _positive_number(raw.get("value"))
        if amount is None:
            self.problem(f"{path}.value",
                         f"must be a positive number, not {_show(raw.get('value'))}")
        if unit not in ("h", "d", "wk"):
            self.problem(f"{path}.{unit_key}", f"must be h, d or wk, not {_show(unit)}")
            return None
        if amount is None:
            return None
        period, why = _duration(amount, unit)
        if period is None:
            self.problem(f"{path}.value", f"{_show(raw.get('value'))} {unit} {why}")
        return period

    def scheduled(self, path: str, raw: dict, quantity: int | None) -> ScheduledDosage | None:
        repeat = self.repeat(path, raw, _SCHEDULED_REPEAT_KEYS)
        if repeat is None:
            return None
        rpath = f"{path}.timing.repeat"
        before = len(self.problems)
        unit = self.period_unit(rpath, repeat, ("h", "d", "wk"))
        frequency = self.frequency(rpath, repeat)
        period = self.period(rpath, repeat, unit)
        start, end, _ = self.bounds(rpath, repeat)
        count = self.count(rpath, repeat)
        interval: timedelta | None = None
        times: tuple[timedelta, ...] = ()
        days_of_week: frozenset[int] | None = None
        period_days = 1
        if unit == "h":
            self.refuse(rpath, repeat, ("timeOfDay", "when", "offset", "dayOfWeek"),
                        'is not allowed with periodUnit "h" (a dose every period/frequency hours)')
            interval = self.interval(rpath, period, frequency, unit)
        elif unit in ("d", "wk"):
            times = self.times(rpath, repeat, frequency)
            days_of_week = self.days_of_week(rpath, repeat, unit, period)
            if period is not None:
                period_days = int(period) * (7 if unit == "wk" else 1)
        needs_start = unit in ("h", "wk") or count is not None or period_days > 1
        bounds = repeat.get("boundsPeriod", {})
        if needs_start and isinstance(bounds, dict) and "start" not in bounds:
            self.problem(f"{rpath}.boundsPeriod.start", self.why_start(unit, count, period))
        if len(self.problems) > before or quantity is None or unit is None or self.tz is None:
            return None  # the problems are reported (the timezone's too)
        if needs_start and start is None:
            return None  # reported: its start is missing or unreadable
        if unit == "h":
            if interval is None or start is None:
                return None  # reported above
            return IntervalDosage(quantity=quantity, interval=interval, bounds_start=start, bounds_end=end,
                                  count=count)
        anchor = Start(start, start.astimezone(self.tz).date()) if start is not None else None
        return ClockDosage(quantity=quantity, period_unit=unit, times=times, period_days=period_days,
                           days_of_week=days_of_week, start=anchor, bounds_end=end, count=count)

    @staticmethod
    def why_start(unit: str | None, count: int | None, period: Fraction | None) -> str:
        if count is not None:
            reason = "count counts from it"
        elif unit == "h":
            reason = "doses every period/frequency hours count from it"
        elif unit == "wk":
            reason = "a weekly dose is given on its weekday"
        else:
            reason = f"every {period} days counts from it"
        return f"is required ({reason})"

    def refuse(self, path: str, repeat: dict, keys: Collection[str], message: str) -> None:
        for key in keys:
            if key in repeat:
                self.problem(f"{path}.{key}", message)

    def count(self, path: str, repeat: dict) -> int | None:
        if "count" not in repeat:
            return None
        value = repeat["count"]
        if not _is_int(value) or not 1 <= value <= MAX_COUNT:
            self.problem(f"{path}.count", f"must be an integer 1..{MAX_COUNT}, not {_show(value)}")
            return None
        return value

    def days_of_week(self, path: str, repeat: dict, unit: str,
                     period: Fraction | None) -> frozenset[int] | None:
        if "dayOfWeek" not in repeat:
            return None
        raw = repeat["dayOfWeek"]
        if unit != "d":
            self.problem(f"{path}.dayOfWeek", "is only allowed with periodUnit \"d\"")
            return None
        if period is not None and period != 1:
            self.problem(f"{path}.dayOfWeek", "is only allowed with period 1")
            return None
        if not isinstance(raw, list) or not raw:
            self.problem(f"{path}.dayOfWeek", f"must be a non-empty list, not {_show(raw)}")
            return None
        days = set()
        for index, day in enumerate(raw):
            if day not in WEEKDAYS:
                self.problem(f"{path}.dayOfWeek[{index}]",
                             f"must be one of {', '.join(WEEKDAYS)}, not {_show(day)}")
            elif WEEKDAYS.index(day) in days:
                self.problem(f"{path}.dayOfWeek[{index}]", f"{_show(day)} is given twice")
            else:
                days.add(WEEKDAYS.index(day))
        return frozenset(days)

    def times(self, path: str, repeat: dict, frequency: int | None) -> tuple[timedelta, ...]:
        """Times of a dosing day: timeOfDay, or when (+ offset) from the routine."""
        has_time, has_when = "timeOfDay" in repeat, "when" in repeat
        if has_time and has_when:
            self.problem(f"{path}.when", "cannot be combined with timeOfDay (name times one way)")
            return ()
        if "offset" in repeat and not has_when:
            self.problem(f"{path}.offset", "is only allowed with when")
        if not has_time and not has_when:
            self.problem(f"{path}.timeOfDay", "is required with periodUnit \"d\" or \"wk\" "
                                              "(or when)")
            return ()
        key = "timeOfDay" if has_time else "when"
        raw = repeat[key]
        if not isinstance(raw, list) or not raw:
            self.problem(f"{path}.{key}", f"must be a non-empty list, not {_show(raw)}")
            return ()
        spans = self.time_of_day(path, raw) if has_time else self.when(path, repeat, raw)
        if frequency is not None and frequency != len(raw):
            self.problem(f"{path}.frequency",
                         f"is {frequency} but {key} names {len(raw)} time(s); they must match")
        # Two times on one clock time would be one instant twice: with `when` + `offset`
        # also across midnight (23:50 of the day before and 23:50 of the day).
        seen: dict[int, tuple[int, timedelta]] = {}
        for index, span in spans:
            second = int(span.total_seconds()) % 86400
            if second not in seen:
                seen[second] = (index, span)
                continue
            first, other = seen[second]
            self.problem(f"{path}.{key}[{index}]",
                         f"gives {_format_span(span)}, already given by {key}[{first}]"
                         if span == other else f"gives {_format_span(span)}, the clock time "
                         f"{key}[{first}] gives ({_format_span(other)}): two doses at one instant")
        return tuple(sorted(span for _, span in seen.values()))

    def time_of_day(self, path: str, raw: list) -> list[tuple[int, timedelta]]:
        """FHIR `time`: HH:MM:SS, seconds required (`routine`, ours, takes HH:MM)."""
        spans = []
        for index, text in enumerate(raw):
            match = _FHIR_TIME_RE.match(text) if isinstance(text, str) else None
            if match is None:
                hint = f' (FHIR time has seconds: "{text}:00")' if _clock(text) else ""
                self.problem(f"{path}.timeOfDay[{index}]",
                             f"must be a time HH:MM:SS, not {_show(text)}{hint}")
            else:
                spans.append((index, timedelta(hours=int(match[1]), minutes=int(match[2]),
                                               seconds=int(match[3]))))
        return spans

    def when(self, path: str, repeat: dict, raw: list) -> list[tuple[int, timedelta]]:
        offset = repeat.get("offset", 0)
        if not _is_int(offset) or not 0 <= offset <= MAX_OFFSET_MIN:
            self.problem(f"{path}.offset",
                         f"must be an integer 0..{MAX_OFFSET_MIN} (minutes), not {_show(offset)}")
            offset = 0
        spans = []
        for index, code in enumerate(raw):
            if not isinstance(code, str) or code not in EVENT_CODES:
                self.problem(f"{path}.when[{index}]",
                             f"{_show(code)} is not a FHIR EventTiming code")
            elif code not in self.routine and not self.routine_broken:
                self.problem(f"{path}.when[{index}]",
                             f"{_show(code)} is not in routine (give it a clock time there)")
            elif code in self.routine:
                shift = timedelta(minutes=-offset if code in BEFORE_CODES else offset)
                spans.append((index, _span(self.routine[code]) + shift))
        return spans


def _apart(one: ScheduledDosage, other: ScheduledDosage) -> bool:
    """Two clock-time entries that never name the same time of day (offsets taken mod a day)."""
    if not isinstance(one, ClockDosage) or not isinstance(other, ClockDosage):
        return False
    day = timedelta(days=1)
    return not {t % day for t in one.times} & {t % day for t in other.times}


def _zone(name: Any) -> ZoneInfo | None:
    if not isinstance(name, str) or name in _NOT_ZONES:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None
