"""A message's words are right for every count: "within 1 minute", "within 15 minutes";
and still name no drug (test_care_ladder.py checks every kind)."""
from __future__ import annotations

import ast
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from dispenser.care import message
from dispenser.care.config import AlertSettings, Patient
from dispenser.care.ladder import CLINIC, PEOPLE, AlertState, plan
from dispenser.care.message import compose, noun, plural

T0 = datetime(2026, 11, 24, 17, 0, tzinfo=timezone.utc)
SAM = Patient("disp-0001", "Sam", notify=("json://h/people",), clinic_notify=("json://h/clinic",),
              escalate_after_min=15, timezone="America/New_York")


def escalated_body(patient: Patient) -> str:
    held = AlertState("a-7", "disp-0001", "dose_missed", "warning", "people", T0, T0, rung=PEOPLE, notified_at=T0)
    sends = plan(T0 + timedelta(minutes=patient.escalate_after_min), [held], {patient.device: patient},
                 AlertSettings(batch_s=10))
    [send] = [send for send in sends if send.rung == CLINIC]
    return compose(patient, send, "https://care.example.org", {"a-7": "tok"})[1]


@pytest.mark.parametrize(("minutes", "words"), [(1, "within 1 minute."), (2, "within 2 minutes."),
                                                (15, "within 15 minutes."), (90, "within 90 minutes.")])
def test_the_clinics_message_says_how_long_in_the_right_words(minutes, words):
    body = escalated_body(replace(SAM, escalate_after_min=minutes))
    assert f"Not acknowledged by Sam's people {words}" in body
    assert "1 minutes" not in body and "(s)" not in body


def test_a_count_and_its_noun():
    assert [plural(n, "minute") for n in (0, 1, 2)] == ["0 minutes", "1 minute", "2 minutes"]
    assert noun(1, "check-in") == "check-in" and noun(3, "check-in") == "check-ins"
    assert plural(2, "person", "people") == "2 people"


def test_no_text_of_the_messages_leaves_a_plural_to_the_reader():
    source = Path(message.__file__).read_text()
    texts = [node.value for node in ast.walk(ast.parse(source))
             if isinstance(node, ast.Constant) and isinstance(node.value, str)]
    assert not [text for text in texts if "(s)" in text]
