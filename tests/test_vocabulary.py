"""The vocabulary (dispenser/vocabulary.py): one word for each thing, the same bytes on the wire and on disk."""
import json
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from support import DEMO

from dispenser.events import Draft, canonical, event_hash
from dispenser.report import OUTCOMES
from dispenser.store import Store, StoreError
from dispenser.vocabulary import (AdherenceOutcome, AlertKind, EventType, FailReason, Feedback, HoldReason,
                                  LidDuring, ReleaseOutcome, Severity)

T0 = datetime(2026, 11, 21, 13, 0, 0, tzinfo=timezone.utc)
CONTRACT = Path(__file__).resolve().parents[2] / "shared" / "CONTRACT.md"

# CONTRACT section 3, "Types, at least", and section 6's dose.held.
CONTRACT_TYPES = """device.started device.stopped device.fault schedule.applied schedule.rejected dose.due
dose.reminder dose.released dose.taken dose.unconfirmed dose.missed dose.skipped dose.release_failed
dose.release_uncertain prn.released prn.denied stock.low stock.empty stock.refilled checkin.recorded
alert.raised dose.held""".split()


def test_every_contract_event_type_is_a_member():
    assert set(CONTRACT_TYPES) <= {member.value for member in EventType}


@pytest.mark.skipif(not CONTRACT.exists(), reason="the contract lives beside the repository")
def test_the_contract_names_no_event_type_the_vocabulary_lacks():
    section3 = CONTRACT.read_text().split("## 3. Events")[1].split("## 4.")[0]
    named = set(re.findall(r"`((?:device|schedule|dose|prn|stock|checkin|alert)\.[a-z_]+)`", section3))
    assert named and named <= {member.value for member in EventType}


def test_what_the_worked_example_logs_is_all_in_the_vocabulary():
    """Every type, alert kind and severity a real run writes is a member: a word spelt in one
    place only (a typo, a word added without the vocabulary) shows up here."""
    result = subprocess.run([sys.executable, "-m", "dispenser", "simulate", "--scenario", str(DEMO / "first-day.toml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    alerts = [e["data"] for e in events if e["type"] == EventType.ALERT_RAISED]
    assert events and alerts
    assert {e["type"] for e in events} <= {m.value for m in EventType}
    assert {a["kind"] for a in alerts} <= {m.value for m in AlertKind}
    assert {a["severity"] for a in alerts} <= {m.value for m in Severity}


SENSOR_STEPS = """
[[step]]
at = "2026-11-24T07:00:00"
do = "jam"
compartment = 1
[[step]]
at = "2026-11-24T08:00:00"
do = "press"
[[step]]
at = "2026-11-24T08:01:00"
do = "lid_open"
[[step]]
at = "2026-11-24T08:02:00"
do = "lid_close"
[[step]]
at = "2026-11-24T15:00:00"
do = "lid_open"
[[step]]
at = "2026-11-24T15:03:00"
do = "lid_close"
"""


def test_what_the_lid_and_the_drop_sensor_log_is_all_in_the_vocabulary(tmp_path):
    """A jammed release, a lid opened during a release and one opened for nothing: the words
    the sensors added (lid.opened, lid.closed, jam, release, lid_opened) are members."""
    (tmp_path / "schedule.json").write_text((DEMO / "schedule.json").read_text())
    path = tmp_path / "s.toml"
    path.write_text('start = "2026-11-24T06:00:00"\nuntil = "2026-11-25T06:00:00"\nschedule = "schedule.json"\n'
                    f"[stock]\nsertraline = 28\nnaltrexone = 5\nhydroxyzine = 10\n{SENSOR_STEPS}")
    result = subprocess.run([sys.executable, "-m", "dispenser", "simulate", "--scenario", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    types = {e["type"] for e in events}
    assert {EventType.LID_OPENED, EventType.LID_CLOSED, EventType.DOSE_RELEASE_FAILED} <= types
    assert types <= {m.value for m in EventType}
    alerts = [e["data"] for e in events if e["type"] == EventType.ALERT_RAISED]
    assert AlertKind.LID_OPENED in {a["kind"] for a in alerts}
    assert {a["kind"] for a in alerts} <= {m.value for m in AlertKind}
    failed = [e["data"]["reason"] for e in events if e["type"] == EventType.DOSE_RELEASE_FAILED]
    assert failed == [FailReason.JAM]
    during = [e["data"].get("during") for e in events if e["type"] == EventType.LID_OPENED]
    assert during == [LidDuring.RELEASE, None]


@pytest.mark.parametrize("member", [*EventType, *AlertKind, *Severity, *HoldReason, *Feedback, *FailReason,
                                    *LidDuring])
def test_a_member_is_its_string_in_json(member):
    assert json.dumps(member) == json.dumps(member.value)
    assert json.dumps({member: member}) == json.dumps({member.value: member.value})
    assert f"{member}" == str(member) == member.value
    assert hash(member) == hash(member.value)


def test_an_event_hashes_the_same_with_members_or_strings():
    with_members = {"type": EventType.DOSE_HELD, "data": {"reason": HoldReason.MIN_GAP,
                                                          "severity": Severity.WARNING}}
    with_strings = {"type": "dose.held", "data": {"reason": "min_gap", "severity": "warning"}}
    assert canonical(with_members) == canonical(with_strings)
    assert event_hash("0" * 64, with_members) == event_hash("0" * 64, with_strings)


def test_the_log_stores_members_as_their_strings_and_reads_back_plain_strings():
    with Store.open(":memory:", "disp-0001") as store:
        [written] = store.append([Draft(EventType.DOSE_HELD, {"reason": HoldReason.UNLOADED})], T0)
        [read] = store.events()
        raw = store.db.execute("SELECT type, data FROM events").fetchone()
    assert raw == ("dose.held", '{"reason":"unloaded"}')  # SQLite holds the bare strings
    assert type(read["type"]) is str and read["type"] == EventType.DOSE_HELD == "dose.held"
    assert read["data"]["reason"] == "unloaded"
    assert read["hash"] == written["hash"]


def test_release_outcomes_and_adherence_outcomes_are_different_words():
    assert {o.value for o in ReleaseOutcome} == {"done", "failed", "uncertain"}
    # The report's columns, in the order `dispenser report` prints them; pending is never one.
    assert [o.value for o in OUTCOMES] == ["on_time", "late", "confirmed_late", "unconfirmed", "missed",
                                           "skipped", "failed"]
    assert AdherenceOutcome.PENDING not in OUTCOMES


def test_a_release_outcome_outside_the_vocabulary_is_refused_by_name():
    with Store.open(":memory:", "disp-0001") as store:
        [release] = store.append([Draft(EventType.DOSE_RELEASED, {"medication_id": "a", "quantity": 1,
                                                                   "compartment": 1})], T0)
        with pytest.raises(StoreError, match=r"is not one of \['done', 'failed', 'uncertain'\]"):
            store.complete_release(release["event_id"], "ok", T0)
        store.complete_release(release["event_id"], ReleaseOutcome.DONE, T0)
        assert store.open_releases() == []


def test_no_feedback_is_falsy_and_every_other_is_not():
    assert not Feedback.NONE
    assert all(member for member in Feedback if member is not Feedback.NONE)


def test_the_care_service_has_words_for_every_alert_kind_a_device_raises():
    """The care service's notification table is keyed by the device's words: a kind added on
    the device (lid_opened, pill_unexpected) is never notified as "another alert"."""
    from dispenser.care.message import KINDS
    assert set(AlertKind) <= set(KINDS)
