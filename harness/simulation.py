"""Prove it cannot hurt anyone: the randomized safety simulation (`bench/safety.py`, the tests).

`Simulation` runs one random patient through the REAL `Engine`, `DoseRules` and
`Store` (SQLite, in memory or on a file) on a virtual clock: random schedules (several
medications, titration, `h` and weekly entries, `dayOfWeek`, `when` codes, as-needed
ones with random limits; section 6's ingredients shared between products, strengths,
doses in mg, `min_gap_h`, `separate_from`) in several time zones (Lord Howe's
30-minute DST and Santiago's at midnight among them), starting near DST changes;
random presses, holds, refills, servo faults, power cuts (also in the middle of a
release) with random downtime of minutes to days, wall-clock jumps (an hour forward
and back, as NTP after a boot with no RTC) and frequent regimen changes: a product or
strength switch, a dose moved after it was given, a corrected time zone, compartments
swapped or moved (each followed by a refill naming the new load at once, later, or
not at all), date-only titration, a separation or minimum gap added, medications
added and removed. The device's clock is trusted as on a Pi with
systemd-timesyncd: the real `ClockTrust` watches the simulated wall and steady clocks
and the simulated synchronisation marker (emptied at each boot, touched at each NTP
synchronisation, a few minutes to two hours after a boot or a step), and the engine is
given the daemon's clock (`TrustedClock`: after a boot's first synchronisation, a step
is not believed). After every
simulated day it feeds the new events to `dispenser.logcheck.LogChecker`, and it checks what only the
harness can see: that no event is lost across a power cut, that nothing is released
while the wall clock is behind the log (the rules' clamped time is not a real time),
and that by the TRUE clock no dose is released outside its window nor logged missed
before its window closed.

    >>> result = Simulation(seed=1, days=30).run()      # 30 days of cuts, clock jumps, new schedules
    >>> result.violations
    []
"""
from __future__ import annotations

import copy
import itertools
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from fractions import Fraction
from typing import TypeVar
from zoneinfo import ZoneInfo

from dispenser.clocktrust import ClockTrust
from dispenser.engine import Engine
from dispenser.inputs import PillNotSeen
from dispenser.logcheck import DAY, MAX_REACH, LogChecker, Violation, store_loader
from dispenser.schedule import Schedule, ScheduleError, parse_schedule
from dispenser.scheduler import doses_between
from dispenser.store import Store
from dispenser.timeutil import UTC, format_at, parse_utc, truncate_ms
from dispenser.virtual import EngineTicks, VirtualDevice
from dispenser.vocabulary import EventType, Feedback, ScheduleSource

T = TypeVar("T")

# ---------------------------------------------------------------------------------------
# Random schedules
# ---------------------------------------------------------------------------------------

ZONES = ("America/New_York", "Europe/London", "Australia/Lord_Howe", "America/Santiago", "Asia/Kolkata", "UTC")
ROUTINE_CODES = ("WAKE", "MORN", "CD", "CV", "HS")


def dst_changes(tz: ZoneInfo, year: int) -> list[date]:
    """Local dates on which the zone's UTC offset changes (none for Asia/Kolkata)."""
    changes, previous = [], None
    day = datetime(year, 1, 1, 12, tzinfo=UTC)
    while day.year == year:
        offset = day.astimezone(tz).utcoffset()
        if previous is not None and offset != previous:
            changes.append((day - DAY).astimezone(tz).date())
        previous, day = offset, day + DAY
    return changes


def _clock(minutes: int) -> str:
    minutes %= 24 * 60
    return f"{minutes // 60:02d}:{minutes % 60:02d}:00"


def _local_text(moment: datetime, tz: ZoneInfo) -> str:
    return moment.astimezone(tz).replace(tzinfo=None, microsecond=0).isoformat()


# Active ingredients (RxNorm-like codes) and the strengths their tablets come in (mg).
# Scheduled and as-needed ones are kept apart: an ingredient is either planned or asked for.
SCHEDULED_INGREDIENTS = {
    "51272": ("quetiapine", (25, 50, 100, 200, 300)),
    "36437": ("sertraline", (25, 50, 100)),
    "7243": ("naltrexone", (25, 50)),
    "42351": ("lithium carbonate", (150, 300)),
    "1897": ("calcium carbonate", (500, 1250)),
    "89013": ("aripiprazole", (2, 2.5, 5, 10)),
    "1819": ("buprenorphine", (1, 2)),
}
PRN_INGREDIENTS = {
    "5553": ("hydroxyzine", (10, 25, 50)),
    "6470": ("lorazepam", (0.5, 1, 2)),
    "5640": ("ibuprofen", (200, 400)),
}
MAX_TABLETS = 10  # a plausible dose: the v2 parser refuses more
# Two times a spring-forward gap would merge (minutes after local midnight): the first
# does not exist that night and moves forward onto the second.
GAP_PAIRS = {"America/New_York": (120, 180), "Europe/London": (60, 120),
             "Australia/Lord_Howe": (120, 150), "America/Santiago": (0, 60)}


class ScheduleMaker:
    """Random but valid schedule documents, and random changes to them (section 6's kinds too).

    Documents are valid for today's parser and for v2's: `timeOfDay` as HH:MM:SS, no two
    dosages of one medication with overlapping periods (an end is inclusive in v2: a
    date-only step ends the day before the next starts), `doseQuantity` in tablets or in
    the strength's unit as a whole multiple of it, at most 10 tablets a dose.
    """

    def __init__(self, rng: random.Random, timezone: str):
        self.rng = rng
        self.timezone = timezone
        self.tz = ZoneInfo(timezone)
        self._ids = itertools.count(1)

    # -- pieces -----------------------------------------------------------------------------

    def window(self) -> dict:
        rng = self.rng
        before = rng.choice([0, 0, 10, 15, 30, 30, 60, 120, 240, 1440])
        after = rng.choice([15, 30, 60, 120, 120, 180, 240, 480, 1440])
        return {"before_min": before, "after_min": after}

    def times(self, count: int) -> list[str]:
        """`count` distinct times of day, some in the small hours where DST changes happen, some
        a pair a spring-forward gap would merge (02:00 and 03:00 in New York; 02:00 and 02:30 at
        Lord Howe; 01:00 and 02:00 in London; 00:00 and 01:00 in Santiago)."""
        picks: set[int] = set()
        if count >= 2 and self.timezone in GAP_PAIRS and self.rng.random() < 0.25:
            picks.update(GAP_PAIRS[self.timezone])
        while len(picks) < count:
            if self.rng.random() < 0.2:
                picks.add(self.rng.choice([60, 90, 120, 135, 150, 180, 0, 23 * 60 + 30]))
            else:
                picks.add(self.rng.randrange(0, 24 * 4) * 15)
        return [_clock(m) for m in sorted(picks)]

    def entry(self, now: datetime, quantity: int | None = None) -> dict:
        """One scheduled dosage entry: daily, dayOfWeek, every n days, weekly, `h`, or `when`."""
        rng = self.rng
        quantity = quantity or rng.choice([1, 1, 1, 2])
        start_text = _local_text(now - timedelta(hours=rng.randrange(0, 72)), self.tz)
        roll = rng.random()
        if roll < 0.4:
            times = self.times(rng.choice([1, 1, 2, 3, 4]))
            repeat = {"frequency": len(times), "period": 1, "periodUnit": "d", "timeOfDay": times}
        elif roll < 0.5:
            times = self.times(rng.choice([1, 2]))
            days = sorted(rng.sample(range(7), rng.randrange(1, 7)))
            repeat = {"frequency": len(times), "period": 1, "periodUnit": "d", "timeOfDay": times,
                      "dayOfWeek": [("mon", "tue", "wed", "thu", "fri", "sat", "sun")[d] for d in days]}
        elif roll < 0.6:
            times = self.times(1)
            repeat = {"frequency": 1, "period": rng.choice([2, 3]), "periodUnit": "d", "timeOfDay": times,
                      "boundsPeriod": {"start": start_text[:10]}}
        elif roll < 0.65:
            times = self.times(rng.choice([1, 2]))
            repeat = {"frequency": len(times), "period": 1, "periodUnit": "wk", "timeOfDay": times,
                      "boundsPeriod": {"start": start_text[:10]}}
        elif roll < 0.85:
            repeat = {"frequency": rng.choice([1, 1, 2]), "period": rng.choice([4, 6, 8, 12, 24, 36]),
                      "periodUnit": "h", "boundsPeriod": {"start": start_text}}
            if rng.random() < 0.2:
                repeat["count"] = rng.randrange(3, 40)
        else:
            codes = rng.sample(ROUTINE_CODES, rng.choice([1, 2, 3]))
            repeat = {"frequency": len(codes), "period": 1, "periodUnit": "d", "when": codes}
            if rng.random() < 0.4:
                repeat["offset"] = rng.choice([15, 30, 60])
        return {"timing": {"repeat": repeat}, "doseAndRate": [{"doseQuantity": {"value": quantity}}]}

    def titration(self, now: datetime) -> list[dict]:
        """Two or three entries split by boundsPeriod: a dose that steps up (or down) on a date.

        A step on a date ends the day before the next starts (FHIR's end is inclusive); a
        step at an instant ends a second before it, so no two steps ever share a moment."""
        rng = self.rng
        times = self.times(rng.choice([1, 1, 2]))
        cut = (now + timedelta(hours=rng.randrange(-48, 96))).astimezone(self.tz)
        cuts = [cut.date().isoformat() if rng.random() < 0.6 else _local_text(cut, self.tz)]
        if rng.random() < 0.3:
            cuts.append((cut + timedelta(days=rng.randrange(2, 6))).date().isoformat())
        entries, previous = [], None
        for index in range(len(cuts) + 1):
            bounds = {}
            if previous is not None:
                bounds["start"] = previous
            if index < len(cuts):
                bounds["end"] = _end_before(cuts[index])
                previous = cuts[index]
            repeat = {"frequency": len(times), "period": 1, "periodUnit": "d", "timeOfDay": times}
            if bounds:
                repeat["boundsPeriod"] = bounds
            entries.append({"timing": {"repeat": repeat},
                            "doseAndRate": [{"doseQuantity": {"value": index + 1 if rng.random() < 0.7 else 1}}]})
        return entries

    def ingredient(self, pool: dict, document_codes: list[str]) -> str | None:
        """An ingredient code: often one the document already has (two products of one drug)."""
        rng = self.rng
        shared = [c for c in document_codes if c in pool]
        if shared and rng.random() < 0.35:
            return rng.choice(shared)
        return rng.choice(sorted(pool)) if rng.random() < 0.9 else None

    def dress(self, medication: dict, code: str | None, pool: dict, strength: float | None = None) -> dict:
        """Give a medication its ingredient and (mostly) a strength; some doses then in mg."""
        rng = self.rng
        if code is None:
            return medication
        name, strengths = pool[code]
        medication["ingredient"] = {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": code,
                                    "display": name}
        if strength is None and rng.random() < 0.8:
            strength = rng.choice(strengths)
        if strength is not None:
            medication["strength"] = {"value": strength, "unit": "mg"}
            medication["name"] = f"{name.title()} {strength:g} mg"
            if rng.random() < 0.3:
                for entry in medication["dosage"]:
                    _in_mg(entry, strength)
        return medication

    def scheduled(self, med_id: str, compartment: int, now: datetime, codes: Sequence[str] = ()) -> dict:
        dosage = self.titration(now) if self.rng.random() < 0.25 else [self.entry(now)]
        medication = {"id": med_id, "name": med_id.title(), "compartment": compartment,
                      "window": self.window(), "dosage": dosage}
        return self.dress(medication, self.ingredient(SCHEDULED_INGREDIENTS, list(codes)), SCHEDULED_INGREDIENTS)

    def as_needed(self, med_id: str, compartment: int, codes: Sequence[str] = ()) -> dict:
        medication = {"id": med_id, "name": med_id.title(), "compartment": compartment,
                      "dosage": self.prn_dosage()}
        return self.dress(medication, self.ingredient(PRN_INGREDIENTS, list(codes)), PRN_INGREDIENTS)

    def prn_dosage(self) -> list[dict]:
        rng = self.rng
        quantity = rng.choice([1, 1, 2])
        every_h = rng.choice([0.5, 1, 2, 4, 6, 8, 24, 240])
        per_value, per_unit = rng.choice([(12, "h"), (1, "d"), (1, "d"), (2, "d"), (1, "wk"), (2, "wk")])
        return [{"asNeededBoolean": True,
                 "timing": {"repeat": {"frequency": 1, "period": every_h, "periodUnit": "h"}},
                 "maxDosePerPeriod": {"numerator": {"value": quantity * rng.randrange(1, 5)},
                                      "denominator": {"value": per_value, "unit": per_unit}},
                 "doseAndRate": [{"doseQuantity": {"value": quantity}}]}]

    def routine(self) -> dict:
        minutes = sorted(self.rng.sample(range(5 * 4, 23 * 4), len(ROUTINE_CODES)))
        return {code: _clock(m * 15)[:5] for code, m in zip(ROUTINE_CODES, minutes)}

    def document(self, now: datetime, version: int = 1) -> dict:
        """A valid random document (a draw that happens to be invalid, e.g. two `when` codes
        landing on one time, is drawn again)."""
        while True:
            document = self._document(now, version)
            if _valid(document):
                return document

    def _document(self, now: datetime, version: int) -> dict:
        rng = self.rng
        compartments = list(range(1, 9))
        rng.shuffle(compartments)
        medications: list[dict] = []
        for _ in range(rng.choice([1, 2, 2, 3, 3, 4])):
            medications.append(self.scheduled(f"m{next(self._ids)}", compartments.pop(), now, _codes(medications)))
        for _ in range(rng.choice([0, 1, 1, 2])):
            medications.append(self.as_needed(f"p{next(self._ids)}", compartments.pop(), _codes(medications)))
        document = {"schema": "dispenser.schedule/1", "version": version,
                    "issued_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "timezone": self.timezone,
                    "routine": self.routine(), "medications": medications}
        if rng.random() < 0.15:
            self.min_gap(document)
        if rng.random() < 0.15:
            self.separation(document)
        return document

    def min_gap(self, document: dict) -> str | None:
        """`min_gap_h` on every medication of one ingredient (one value, so no reading can differ)."""
        codes = _codes([m for m in document["medications"] if not _is_prn(m)])
        if not codes:
            return None
        code, hours = self.rng.choice(codes), self.rng.choice([2, 4, 6, 8, 12])
        for medication in document["medications"]:
            if _code(medication) == code:
                medication["min_gap_h"] = hours
        return code

    def separation(self, document: dict) -> str | None:
        """One ingredient never within a few hours of another (calcium and quetiapine, say)."""
        meds = [m for m in document["medications"] if _code(m)]
        pairs = [(a, b) for a in meds for b in meds if _code(a) != _code(b)]
        if not pairs:
            return None
        first, second = self.rng.choice(pairs)
        if any(s["ingredient"] == _code(second) for s in first.get("separate_from", [])):
            return None
        first.setdefault("separate_from", []).append({"ingredient": _code(second),
                                                      "hours": self.rng.choice([1, 2, 4, 6])})
        return first["id"]

    # -- changes ------------------------------------------------------------------------------

    def change(self, document: dict, now: datetime, released_today: list[str]) -> tuple[dict, str, list[str]]:
        """A new version, and the ids a caregiver may now refill: a switch of product or strength,
        a moved time, a corrected time zone, compartments swapped or moved, titration, separation,
        minimum gap, a medication removed or added, windows, limits."""
        self.timezone = document["timezone"]
        self.tz = ZoneInfo(self.timezone)
        for _ in range(20):
            new, what, touched = self._change(document, now, released_today)
            if _valid(new):
                self.timezone, self.tz = new["timezone"], ZoneInfo(new["timezone"])
                return new, what, touched
        new = copy.deepcopy(document)
        new["version"] = document["version"] + 1
        return new, "reissued", []

    def _change(self, document: dict, now: datetime, released_today: list[str]) -> tuple[dict, str, list[str]]:
        rng = self.rng
        new = copy.deepcopy(document)
        new["version"] = document["version"] + 1
        new["issued_at"] = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        meds = new["medications"]
        scheduled = [m for m in meds if not _is_prn(m)]
        prn = [m for m in meds if _is_prn(m)]
        used = {m["compartment"] for m in meds}
        free = [c for c in range(1, 9) if c not in used]
        given = [m for m in scheduled if m["id"] in released_today]
        kind = rng.choices(
            ["product", "strength", "move_time", "timezone", "swap", "move_compartment", "titration",
             "separation", "min_gap", "remove", "add", "window", "limits", "timing"],
            [8, 10, 14, 6, 6, 6, 12, 4, 3, 6, 8, 6, 5, 6])[0]
        if kind == "product" and meds:
            # The same ingredient from another maker: a new id, in its compartment or a free one.
            old = rng.choice(given or meds)
            medication = copy.deepcopy(old)
            medication["id"] = f"{'p' if _is_prn(old) else 'm'}{next(self._ids)}"
            if free and rng.random() < 0.3:
                medication["compartment"] = rng.choice(free)
            meds[meds.index(old)] = medication
            return new, f"product switch: {old['id']} -> {medication['id']}", [medication["id"]]
        if kind == "strength" and [m for m in meds if "strength" in m]:
            # quetiapine 100 mg -> 200 mg: a new id and strength, the same slot and compartment.
            old = rng.choice([m for m in given if "strength" in m] or [m for m in meds if "strength" in m])
            medication = copy.deepcopy(old)
            pool = PRN_INGREDIENTS if _is_prn(old) else SCHEDULED_INGREDIENTS
            code = _code(old)
            strengths = [s for s in pool[code][1] if s != old["strength"]["value"]] if code is not None else []
            if code is None or not strengths:
                return new, "reissued", []
            strength = rng.choice(strengths)
            medication["id"] = f"{'p' if _is_prn(old) else 'm'}{next(self._ids)}"
            medication["strength"] = {"value": strength, "unit": "mg"}
            medication["name"] = f"{pool[code][0].title()} {strength:g} mg"
            for entry in medication["dosage"]:
                _in_tablets(entry, old["strength"]["value"])
            meds[meds.index(old)] = medication
            return new, f"strength switch: {old['id']} -> {medication['id']} ({strength:g} mg)", [medication["id"]]
        if kind == "move_time" and scheduled:
            # Move a dose time, preferably of a medication given today, preferably later (08:00 -> 13:00).
            medication = rng.choice(given or scheduled)
            for entry in medication["dosage"]:
                repeat = entry["timing"]["repeat"]
                if "timeOfDay" in repeat:
                    index = rng.randrange(len(repeat["timeOfDay"]))
                    hh, mm, _ = map(int, repeat["timeOfDay"][index].split(":"))
                    shift = rng.choice([-360, -120, -60, -30, -15, 15, 30, 60, 90, 120, 300, 300, 360])
                    candidate = _clock(hh * 60 + mm + shift)
                    if candidate not in repeat["timeOfDay"]:
                        repeat["timeOfDay"][index] = candidate
                        repeat["timeOfDay"].sort()
                elif "boundsPeriod" in repeat and repeat.get("periodUnit") == "h":
                    start = datetime.fromisoformat(repeat["boundsPeriod"]["start"])
                    repeat["boundsPeriod"]["start"] = (start + timedelta(minutes=rng.choice([-90, -30, 30, 90]))
                                                       ).isoformat()
                elif "when" in repeat:
                    repeat["offset"] = rng.choice([0, 15, 45, 90])
            return new, f"moved time: {medication['id']}", []
        if kind == "timezone":
            # The clinic corrects the zone (UTC -> America/New_York): local times stay, instants move.
            new["timezone"] = rng.choice([z for z in ZONES if z != document["timezone"]])
            return new, f"time zone: {document['timezone']} -> {new['timezone']}", []
        if kind == "swap" and len(meds) > 1:
            first, second = rng.sample(meds, 2)
            first["compartment"], second["compartment"] = second["compartment"], first["compartment"]
            return new, f"compartments swapped: {first['id']} and {second['id']}", [first["id"], second["id"]]
        if kind == "move_compartment" and meds and free:
            medication = rng.choice(meds)
            medication["compartment"] = rng.choice(free)
            return new, f"compartment moved: {medication['id']} to {medication['compartment']}", [medication["id"]]
        if kind == "titration" and scheduled:
            medication = rng.choice(scheduled)
            medication["dosage"] = self.titration(now)
            if "strength" in medication and rng.random() < 0.3:
                for entry in medication["dosage"]:
                    _in_mg(entry, medication["strength"]["value"])
            return new, f"titration: {medication['id']}", []
        if kind == "separation":
            named = self.separation(new)
            if named:
                return new, f"separation: {named}", []
        if kind == "min_gap":
            code = self.min_gap(new)
            if code:
                return new, f"minimum gap: {code}", []
        if kind == "remove" and len(meds) > 1:
            medication = rng.choice(meds)
            meds.remove(medication)
            _drop_separations(new, _code(medication))
            return new, f"removed: {medication['id']}", []
        if kind == "add" and free:
            if rng.random() < 0.7:
                meds.append(self.scheduled(f"m{next(self._ids)}", rng.choice(free), now, _codes(meds)))
            else:
                meds.append(self.as_needed(f"p{next(self._ids)}", rng.choice(free), _codes(meds)))
            _harmonise_gaps(new)
            return new, f"added: {meds[-1]['id']}", [meds[-1]["id"]]
        if kind == "window" and scheduled:
            medication = rng.choice(scheduled)
            medication["window"] = self.window()
            return new, f"window: {medication['id']}", []
        if kind == "limits" and prn:
            medication = rng.choice(prn)
            medication["dosage"] = self.prn_dosage()
            return new, f"as-needed limits: {medication['id']}", []
        if scheduled:
            medication = rng.choice(scheduled)
            medication["dosage"] = [self.entry(now)]
            return new, f"timing: {medication['id']}", []
        return new, "reissued", []


def _is_prn(medication: dict) -> bool:
    return bool(medication["dosage"][0].get("asNeededBoolean"))


def _code(medication: dict) -> str | None:
    return (medication.get("ingredient") or {}).get("code")


def _codes(medications: list[dict]) -> list[str]:
    return sorted({c for c in map(_code, medications) if c})


def _end_before(cut: str) -> str:
    """The inclusive end of a step that the next starts at `cut` (a date, or a local date-time)."""
    if len(cut) == 10:
        return (date.fromisoformat(cut) - DAY).isoformat()
    return (datetime.fromisoformat(cut) - timedelta(seconds=1)).isoformat()


def _in_mg(entry: dict, strength: float) -> None:
    """Write a dose in mg where a whole number of mg gives it (10 mg at 5 mg a tablet = 2)."""
    quantity = entry["doseAndRate"][0]["doseQuantity"]
    if "unit" in quantity:
        return
    mg = Fraction(str(strength)) * quantity["value"]
    # Today's parser reads the value as tablets: keep it a plausible count under both readings.
    if mg.denominator == 1 and mg <= MAX_TABLETS and quantity["value"] <= MAX_TABLETS:
        entry["doseAndRate"][0]["doseQuantity"] = {"value": int(mg), "unit": "mg"}


def _in_tablets(entry: dict, strength: float) -> None:
    """Back to tablets (before a strength changes, so that an mg value never becomes a fraction)."""
    quantity = entry["doseAndRate"][0]["doseQuantity"]
    if quantity.get("unit") == "mg":
        tablets = Fraction(quantity["value"]) / Fraction(str(strength))
        entry["doseAndRate"][0]["doseQuantity"] = {"value": max(1, int(tablets))}


def _drop_separations(document: dict, code: str | None) -> None:
    """Keep separations naming ingredients still in the document (harmless otherwise, but tidy)."""
    codes = set(_codes(document["medications"]))
    for medication in document["medications"]:
        if "separate_from" in medication:
            medication["separate_from"] = [s for s in medication["separate_from"] if s["ingredient"] in codes]
            if not medication["separate_from"]:
                del medication["separate_from"]


def _harmonise_gaps(document: dict) -> None:
    """One `min_gap_h` per ingredient: a medication added to an ingredient takes its gap."""
    gaps = {}
    for medication in document["medications"]:
        if "min_gap_h" in medication and _code(medication):
            gaps[_code(medication)] = medication["min_gap_h"]
    for medication in document["medications"]:
        if _code(medication) in gaps and not _is_prn(medication):
            medication["min_gap_h"] = gaps[_code(medication)]


def _v2_ready(document: dict) -> bool:
    """What the v2 parser adds to today's checks, so that a document is valid for both: times
    as HH:MM:SS, no two dosages of one medication with overlapping periods (ends inclusive),
    mg only as a whole multiple of the strength, at most 10 tablets a dose."""
    tz = ZoneInfo(document["timezone"])
    for medication in document["medications"]:
        strength = medication.get("strength")
        periods = []
        for entry in medication["dosage"]:
            repeat = entry["timing"]["repeat"]
            if any(len(t) != 8 for t in repeat.get("timeOfDay", [])):
                return False
            quantity = entry["doseAndRate"][0]["doseQuantity"]
            tablets = Fraction(quantity["value"])
            if "unit" in quantity:
                if strength is None or quantity["unit"] != strength["unit"]:
                    return False
                tablets = tablets / Fraction(str(strength["value"]))
            if tablets.denominator != 1 or not 1 <= tablets <= MAX_TABLETS or quantity["value"] > MAX_TABLETS:
                return False
            bounds = repeat.get("boundsPeriod", {})
            periods.append((_instant(bounds.get("start"), tz, False), _instant(bounds.get("end"), tz, True)))
        periods.sort(key=lambda p: p[0])
        for (_, end), (start, _) in zip(periods, periods[1:]):
            if start < end:
                return False
    return True


def _instant(text: str | None, tz: ZoneInfo, is_end: bool) -> datetime:
    """A boundsPeriod value as an instant; an end is inclusive, so its exclusive instant is after it."""
    if text is None:
        return datetime.max.replace(tzinfo=UTC) if is_end else datetime.min.replace(tzinfo=UTC)
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    if is_end:
        moment += DAY if len(text) == 10 else timedelta(seconds=1)
    return moment.astimezone(UTC)


def _valid(document: dict) -> bool:
    try:
        parse_schedule(document)
    except ScheduleError:
        return False
    return _v2_ready(document)


# ---------------------------------------------------------------------------------------
# The simulation
# ---------------------------------------------------------------------------------------


class PowerCut(BaseException):
    """The power goes in the middle of a release: not an `Exception`, so nothing catches it."""


@dataclass
class SimResult:
    seed: int
    days: int
    events: int
    violations: list[Violation]
    counts: dict[str, int] = field(default_factory=dict)


class Simulation:
    """One random patient for `days` days on the real engine and store, on a virtual clock."""

    def __init__(self, seed: int, days: int, db: str = ":memory:", *, jumps: bool = True,
                 changes: bool = True, long_outages: bool = True, unseen: float = 0.0):
        """`unseen`: the share of releases whose pill the drop sensor does not see (a jam)."""
        self.seed = seed
        self.unseen = unseen
        self.days = days
        self.db = db
        self.rng = random.Random(seed)
        self.jumps, self.changes, self.long_outages = jumps, changes, long_outages
        rng = self.rng
        self.timezone = rng.choice(ZONES)
        self.tz = ZoneInfo(self.timezone)
        changes_list = dst_changes(self.tz, 2026) + dst_changes(self.tz, 2027)
        if changes_list and rng.random() < 0.85:
            day = rng.choice(changes_list) - timedelta(days=rng.randrange(0, 4))
        else:
            day = date(2026, 1, 1) + timedelta(days=rng.randrange(0, 700))
        local_start = datetime(day.year, day.month, day.day, rng.randrange(0, 24), rng.choice([0, 15, 30, 45]))
        # The true time and the power: the one virtual-device loop the scenario runner uses too.
        self.device = VirtualDevice(local_start.replace(tzinfo=self.tz).astimezone(UTC), boot=self._boot,
                                    offset=lambda: self.given() - self.true)
        self.offset = timedelta(0)  # the wall clock is `true + offset`
        self.maker = ScheduleMaker(rng, self.timezone)
        self.document = self.maker.document(self.true)
        self.counts: dict[str, int] = defaultdict(int)
        self.counts[f"zone: {self.timezone}"] = 1
        self.violations: list[Violation] = []
        ids = itertools.count(1)
        self.new_id = lambda: f"00000000-0000-4000-8000-{next(ids):012d}"
        self.store = Store.open(db, "disp-sim", id_factory=self.new_id)
        self.checker = LogChecker(store_loader(self.store, self.timezone), context=f"seed {seed}")
        self.engine: Engine | None = None
        self.fed_seq = 0
        self.release_walls: dict[str, tuple[datetime, datetime]] = {}
        self.true_at: dict[str, datetime] = {}  # event_id of a dose.missed: the true time it was logged
        self.synced_at: float | None = None  # timesyncd's marker: its mtime, None until a sync since boot
        self.trust: ClockTrust | None = None
        self.day_index = 0
        self._pending_fix: list[datetime] = []  # when NTP synchronises after the last boot
        self._parsed: tuple[int, Schedule] | None = None
        self._later: list[tuple[datetime, str, int]] = []  # refills after a change: (true time, id, count)

    # -- clocks -------------------------------------------------------------------------------

    @property
    def true(self) -> datetime:
        """The true time (the wall clock is `true + offset`)."""
        return self.device.true

    @true.setter
    def true(self, moment: datetime) -> None:
        self.device.true = moment

    def wall(self) -> datetime:
        return self.true + self.offset

    def given(self) -> datetime:
        """The time the daemon's clock gives the engine (clocktrust.TrustedClock): the wall
        clock, less a step after the boot's first synchronisation that is not believed."""
        away = self.trust.stepped_away if self.trust is not None and self.trust.check() else None
        return self.wall() if away is None else self.wall() - timedelta(seconds=round(away, 3))

    def _context(self) -> str:
        return (f"seed {self.seed}, day {self.day_index}, {self.timezone}, "
                f"true {format_at(self.true)}, wall {format_at(self.wall())}")

    def _violate(self, kind: str, message: str, seq: int | None = None) -> None:
        self.violations.append(Violation(kind, message, seq, self._context()))

    # -- the device ---------------------------------------------------------------------------

    def _mover(self, compartment: int, quantity: int) -> None:
        roll = self.rng.random()
        if roll < 0.01:
            raise RuntimeError("servo stalled")
        if roll < 0.025:
            raise PowerCut()
        if roll < 0.025 + self.unseen:
            self.counts["unseen_releases"] += 1
            raise PillNotSeen(compartment, quantity, 0)

    def _listen(self, events: list[dict]) -> None:
        wall = truncate_ms(self.given())
        for event in events:
            if event["type"] in (EventType.DOSE_RELEASED, EventType.PRN_RELEASED):
                self.release_walls[event["event_id"]] = (wall, self.true)
            elif event["type"] == EventType.DOSE_MISSED:
                self.true_at[event["event_id"]] = self.true

    def _boot(self) -> None:
        if self.store is None:
            self.store = Store.open(self.db, "disp-sim", id_factory=self.new_id)
            self.checker.loader = store_loader(self.store, self.timezone)
        # /run is emptied at a boot: the marker is gone until NTP synchronises again.
        self.synced_at = None
        self.trust = ClockTrust("synchronized" if self.jumps else "always",
                                synchronized_at=lambda: self.synced_at,
                                wall=lambda: self.wall().timestamp(), steady=lambda: self.true.timestamp())
        engine = self.engine = Engine(self.store, 8, self.timezone, mover=self._mover, new_id=self.new_id,
                                      clock_trusted=self.trust.check, read_model=False)
        engine.listeners.append(self._listen)
        self.device.running = EngineTicks(engine, call=lambda act: self._call(lambda wall: act()))
        self._call(lambda wall: engine.start(wall))
        self.counts["boots"] += 1

    def _cut(self, downtime: timedelta) -> None:
        """The power goes: memory is lost; the log on disk must hold every event it held."""
        self.counts["power_cuts"] += 1
        before = self.store.event_count()
        last = self.store.last_event()
        self.engine = None
        if self.db != ":memory:":
            self.store.close()
            self.store = Store.open(self.db, "disp-sim", id_factory=self.new_id)
            self.checker.loader = store_loader(self.store, self.timezone)
        after = self.store.event_count()
        again = self.store.last_event() if last is None else next(self.store.events(last["seq"] - 1), None)
        if after < before or (last is not None and (again is None or again["hash"] != last["hash"])):
            self._violate("event_lost", f"{before} events before the power cut, {after} after")
        if self.db != ":memory:":  # a file reopened: its whole chain must still verify
            ok, seq, reason = self.store.verify()
            if not ok:
                self._violate("chain", f"store.verify after a power cut: {reason}", seq)
        if self.jumps:
            # A boot without an RTC: the clock may start an hour wrong; NTP synchronises it
            # (and steps it right) a little later, usually within minutes.
            if self.rng.random() < 0.25:
                self.offset += timedelta(hours=self.rng.choice([1, -1]))
                self.counts["wrong_clock_boots"] += 1
            delay = timedelta(minutes=self.rng.choice([1, 1, 2, 5, 15, 60, 119]))
            self._pending_fix = [self.true + downtime + delay]
        self.device.power_cut(downtime)

    def _call(self, action: Callable[[datetime], T]) -> T | None:
        """Run one engine call at the daemon clock's time; a power cut inside it ends the device."""
        try:
            return action(self.given())
        except PowerCut:
            self.counts["cuts_mid_release"] += 1
            self._cut(self._downtime())
            return None

    def _downtime(self) -> timedelta:
        rng = self.rng
        roll = rng.random()
        if roll < 0.4:
            return timedelta(0)
        if roll < 0.8:
            return timedelta(minutes=rng.randrange(1, 180))
        if roll < 0.95 or not self.long_outages:
            return timedelta(minutes=rng.randrange(180, 30 * 60))
        return timedelta(minutes=rng.randrange(30 * 60, 6 * 24 * 60))

    # -- time passing -------------------------------------------------------------------------

    def _advance(self, target: datetime) -> None:
        """Move the true clock to `target`, ticking at every moment the engine asks for."""
        self.device.advance(target)

    # -- a day ------------------------------------------------------------------------------

    def _plan(self, day_start: datetime) -> list[tuple[datetime, int, str, tuple]]:
        rng = self.rng
        day_end = day_start + DAY
        plan: list[tuple[datetime, int, str, tuple]] = []
        order = itertools.count()

        def at(moment: datetime, kind: str, *args: object) -> None:
            if day_start <= moment < day_end:
                plan.append((moment, next(order), kind, args))

        if self._parsed is None or self._parsed[0] != self.document["version"]:
            self._parsed = (self.document["version"], parse_schedule(self.document))
        schedule = self._parsed[1]
        for dose in doses_between(schedule, day_start - MAX_REACH, day_end + MAX_REACH):
            if rng.random() < 0.8:
                span = (dose.window_end - dose.window_start).total_seconds()
                moment = dose.window_start + timedelta(seconds=rng.uniform(-600, span + 600))
                at(moment, "press")
                if rng.random() < 0.6:
                    at(moment + timedelta(seconds=rng.uniform(5, 1800)), "press")  # confirm
                if rng.random() < 0.05:
                    at(moment + timedelta(seconds=rng.uniform(0, 2)), "press")  # a double press
            if rng.random() < 0.05:  # exactly at the edges
                at(dose.window_end - timedelta(milliseconds=rng.choice([0, 1])), "press")
                at(dose.window_start - timedelta(milliseconds=rng.choice([0, 1])), "press")
        for _ in range(rng.randrange(0, 3)):
            at(day_start + timedelta(seconds=rng.uniform(0, 86400)), "press")
        as_needed = [m["id"] for m in self.document["medications"] if m["dosage"][0].get("asNeededBoolean")]
        if as_needed:
            for _ in range(rng.choice([0, 1, 2, 3, 5, 8])):
                named = rng.choice(as_needed) if rng.random() < 0.7 else None
                at(day_start + timedelta(seconds=rng.uniform(0, 86400)), "hold", named)
        for medication in self.document["medications"]:
            if rng.random() < 0.15:
                at(day_start + timedelta(seconds=rng.uniform(0, 86400)), "refill", medication["id"],
                   rng.choice([0, 1, 2, 5, 10, 30, 60]))
        if rng.random() < 0.12:
            at(day_start + timedelta(seconds=rng.uniform(0, 86400)), "cut")
        if self.jumps and rng.random() < 0.08:
            moment = day_start + timedelta(seconds=rng.uniform(0, 86400))
            step = timedelta(hours=rng.choice([1, 1, 1, -1]))
            at(moment, "jump", step)  # the wall clock steps (set by hand, a wrong time source) ...
            at(moment + timedelta(minutes=rng.choice([1, 5, 30, 59, 61, 90, 180])), "ntp")  # ... NTP fixes it
        if self.changes and rng.random() < 0.25:  # regimens change often in recovery care
            at(day_start + timedelta(seconds=rng.uniform(0, 86400)), "change")
        plan.sort()
        return plan

    def _do(self, kind: str, args: tuple) -> None:
        self.counts[kind] += 1
        if kind == "jump":
            self.offset += args[0]
            return
        if kind == "ntp":
            self._synchronise()
            return
        if self.engine is None:
            self.counts["ignored_while_off"] += 1
            return
        engine = self.engine
        outcome = None
        if kind == "press":
            outcome = self._call(lambda wall: engine.press(wall))
        elif kind == "hold":
            outcome = self._call(lambda wall: engine.hold(wall, args[0]))
        elif kind == "refill":
            self._call(lambda wall: engine.refill(wall, args[0], args[1]))
        elif kind == "cut":
            self._cut(self._downtime())
        elif kind == "change":
            released_today = [e["data"]["medication_id"] for e in self.store.events(self.fed_seq)
                              if e["type"] == EventType.DOSE_RELEASED]
            document, what, touched = self.maker.change(self.document, self.given(), released_today)
            outcome = self._call(lambda wall: engine.apply_schedule(wall, document, ScheduleSource.LOCAL))
            if outcome is not None and outcome.feedback == Feedback.APPLIED:
                self.document = document
                self.timezone = document["timezone"]
                self.counts["schedule_changes"] += 1
                self.counts["change: " + what.split(":")[0]] += 1
                self._follow_up(touched)
            elif outcome is not None:
                self._violate("schedule_refused", f"a valid schedule change ({what}) was refused: {outcome.detail}")
        if outcome is not None and (outcome.detail or {}).get("reason") == "clock_unsynchronized":
            self.counts["held_clock_unsynchronized"] += 1  # the cost of waiting for NTP

    def _follow_up(self, touched: list[str]) -> None:
        """After a change of what a compartment holds, a caregiver refills it at once, later, or not
        at all (then only the day's random refills will)."""
        for medication_id in touched:
            roll = self.rng.random()
            count = self.rng.choice([0, 3, 10, 30])
            engine = self.engine
            if roll < 0.4 and engine is not None:
                self.counts["refills_after_change"] += 1
                self._call(lambda wall: engine.refill(wall, medication_id, count))  # called at once
            elif roll < 0.7:
                self._later.append((self.true + timedelta(minutes=self.rng.randrange(1, 600)), medication_id, count))

    def _refills_due(self, until: datetime) -> None:
        """Refills a caregiver does some time after a change (while the device is on)."""
        for moment, medication_id, count in sorted(self._later):
            if moment <= until:
                self._later.remove((moment, medication_id, count))
                self._fix_clock(moment)
                self._advance(moment)
                engine = self.engine
                if engine is not None and self.document_has(medication_id):
                    self.counts["refills_after_change"] += 1
                    self._call(lambda wall: engine.refill(wall, medication_id, count))  # called at once

    def document_has(self, medication_id: str) -> bool:
        return any(m["id"] == medication_id for m in self.document["medications"])

    def _check_day(self) -> None:
        events = list(self.store.events(self.fed_seq))
        self.checker.context = self._context()
        self.violations += self.checker.feed(events)
        for event in events:
            if event["type"] in (EventType.DOSE_RELEASED, EventType.PRN_RELEASED):
                wall, true = self.release_walls.pop(event["event_id"], (None, None))
                if wall is not None and wall < parse_utc(event["at"]):
                    self._violate("released_while_clock_behind",
                                  f"{event['type']} logged at {event['at']} while the wall clock read "
                                  f"{format_at(wall)}: a clamped time, not a real one", event["seq"])
                if event["type"] == EventType.DOSE_RELEASED and true is not None and not \
                        parse_utc(event["data"]["window_start"]) <= true < parse_utc(event["data"]["window_end"]):
                    self._violate("released_outside_window_by_true_clock",
                                  f"{event['data']['medication_id']} released at true time {format_at(true)}, "
                                  f"outside its window [{event['data']['window_start']}, "
                                  f"{event['data']['window_end']})", event["seq"])
            elif event["type"] == EventType.DOSE_MISSED:
                true = self.true_at.pop(event["event_id"], None)
                if true is not None and true < parse_utc(event["data"]["window_end"]):
                    self._violate("missed_early_by_true_clock",
                                  f"{event['data']['medication_id']} logged missed at true time {format_at(true)}, "
                                  f"before its window closed at {event['data']['window_end']}", event["seq"])
        if events:
            self.fed_seq = events[-1]["seq"]
        if self.engine is not None and self.engine.rules.clock_trusted:
            # The engine has ticked at this moment: every window closed by its time has ended
            # (not while its clock is untrusted: windows wait for the synchronisation then).
            last = self.store.last_event()
            effective = max(truncate_ms(self.given()), parse_utc(last["at"])) if last else truncate_ms(self.given())
            self.violations += self.checker.settle(effective)

    def run(self) -> SimResult:
        self._boot()
        self._synchronise()  # installed and set up on a network: the clock is right from the start
        engine = self.engine
        if engine is None:
            raise RuntimeError("the simulated device did not start")
        outcome = self._call(lambda wall: engine.apply_schedule(wall, self.document, ScheduleSource.LOCAL))
        if outcome is not None and outcome.feedback != Feedback.APPLIED:
            self._violate("schedule_refused", f"the first schedule was refused: {outcome.detail}")
        for medication in self.document["medications"]:
            count = self.rng.choice([0, 3, 10, 30, 60])
            self._call(lambda wall: engine.refill(wall, medication["id"], count))  # called at once
        day_start = self.true
        for self.day_index in range(self.days):
            plan = self._plan(day_start)
            for moment, _, kind, args in plan:
                self._refills_due(moment)
                self._fix_clock(moment)
                self._advance(moment)
                self._do(kind, args)
            self._refills_due(day_start + DAY)
            self._fix_clock(day_start + DAY)
            self._advance(day_start + DAY)
            self._check_day()
            day_start += DAY
        ok, seq, reason = self.store.verify()
        if not ok:
            self._violate("chain", f"store.verify: {reason}", seq)
        events = self.store.event_count()
        self.store.close()
        return SimResult(self.seed, self.days, events, self.violations, dict(self.counts))

    def _fix_clock(self, until: datetime) -> None:
        """NTP corrections due before `until` (after a boot with a wrong clock)."""
        for moment in sorted(self._pending_fix):
            if moment <= until:
                self._advance(moment)
                self._pending_fix.remove(moment)
                self._synchronise()

    def _synchronise(self) -> None:
        """NTP: the clock steps to the true time, and timesyncd touches its marker."""
        self.offset = timedelta(0)
        if self.engine is not None:
            self.synced_at = self.wall().timestamp()
            self.counts["ntp_syncs"] += 1
