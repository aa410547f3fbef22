"""The ladder is a pure function of now and the alerts' state: people first, the clinic
after escalate_after_min unacknowledged, quiet hours, alerts of one burst in one message;
and a message names the patient and never a drug."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, time, timedelta, timezone

import pytest

from dispenser.care.config import AlertSettings, CareConfigError, Patient, QuietHours, parse_care_config
from dispenser.care.ladder import CLINIC, PEOPLE, AlertState, offline_due, plan
from dispenser.care.message import KINDS, compose

T0 = datetime(2026, 11, 24, 17, 0, tzinfo=timezone.utc)       # 12:00 in New York
SAM = Patient("disp-0001", "Sam", notify=("json://h/people",), clinic_notify=("json://h/clinic",),
              escalate_after_min=15, quiet_hours=QuietHours(time(22, 0), time(7, 0)), timezone="America/New_York")
SETTINGS = AlertSettings(batch_s=10)


def alert(alert_id: str = "a1", received: datetime = T0, **changes) -> AlertState:
    base = AlertState(alert_id, "disp-0001", "dose_missed", "warning", "people", received, received)
    return replace(base, **changes)


def sends(now: datetime, *alerts: AlertState, patient: Patient = SAM) -> list[tuple[int, tuple[str, ...]]]:
    return [(send.rung, tuple(a.alert_id for a in send.alerts))
            for send in plan(now, list(alerts), {patient.device: patient}, SETTINGS)]


def test_a_new_alert_waits_for_its_burst_then_goes_to_the_people():
    assert sends(T0 + timedelta(seconds=9), alert()) == []
    assert sends(T0 + timedelta(seconds=10), alert()) == [(PEOPLE, ("a1",))]


def test_alerts_that_arrive_together_go_as_one_message():
    burst = [alert(f"a{i}", T0 + timedelta(seconds=3 * i)) for i in range(5)]
    assert sends(T0 + timedelta(seconds=15), *burst) == []          # the newest came 3 s ago
    assert sends(T0 + timedelta(seconds=22), *burst) == [(PEOPLE, ("a0", "a1", "a2", "a3", "a4"))]


def test_a_steady_stream_cannot_hold_the_first_back_forever():
    stream = [alert(f"a{i:02}", T0 + timedelta(seconds=5 * i)) for i in range(13)]
    assert sends(T0 + timedelta(seconds=60), *stream) == [(PEOPLE, tuple(a.alert_id for a in stream))]


def test_escalation_to_the_clinic_after_escalate_after_min_unacknowledged():
    told = alert(rung=PEOPLE, notified_at=T0)
    assert sends(T0 + timedelta(minutes=14, seconds=59), told) == []
    assert sends(T0 + timedelta(minutes=15), told) == [(CLINIC, ("a1",))]
    assert sends(T0 + timedelta(minutes=15), replace(told, acked=True)) == []
    assert sends(T0 + timedelta(hours=5), replace(told, rung=CLINIC)) == []     # the ladder's top


def test_an_escalation_never_waits_for_a_new_burst():
    told = alert("old", rung=PEOPLE, notified_at=T0)
    new = alert("new", T0 + timedelta(minutes=15) - timedelta(seconds=2))
    assert sends(T0 + timedelta(minutes=15), told, new) == [(CLINIC, ("old",))]
    later = T0 + timedelta(minutes=15, seconds=8)
    assert sends(later, replace(told, rung=CLINIC), new) == [(PEOPLE, ("new",))]


def test_clinic_alerts_and_patients_without_people_go_to_the_clinic_at_once():
    assert sends(T0 + timedelta(seconds=10), alert(audience="clinic")) == [(CLINIC, ("a1",))]
    alone = replace(SAM, notify=())
    assert sends(T0 + timedelta(seconds=10), alert(), patient=alone) == [(CLINIC, ("a1",))]
    nobody = replace(SAM, notify=(), clinic_notify=())
    assert sends(T0 + timedelta(seconds=10), alert(), patient=nobody) == []


def test_quiet_hours_hold_all_but_critical_until_morning():
    night = datetime(2026, 11, 25, 4, 0, tzinfo=timezone.utc)      # 23:00 in New York
    warning, critical = alert("w", night), alert("c", night, severity="critical")
    assert sends(night + timedelta(minutes=1), warning, critical) == [(PEOPLE, ("c",))]
    morning = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)   # 07:00
    assert sends(morning - timedelta(seconds=1), warning) == []
    assert sends(morning, warning) == [(PEOPLE, ("w",))]


def test_a_failed_send_waits_for_its_retry():
    failed = alert(retry_at=T0 + timedelta(minutes=1))
    assert sends(T0 + timedelta(seconds=30), failed) == []
    assert sends(T0 + timedelta(minutes=1), failed) == [(PEOPLE, ("a1",))]


def test_unknown_devices_are_told_to_nobody():
    stranger = replace(alert(), device="disp-9999")
    assert sends(T0 + timedelta(hours=1), stranger) == []


def test_offline_from_the_last_will_or_silence_after_offline_after_min():
    limit = timedelta(minutes=SAM.offline_after_min)
    assert offline_due(False, T0, T0, SAM, T0 + limit - timedelta(seconds=1)) is None
    assert offline_due(False, T0, T0, SAM, T0 + limit) == T0
    assert offline_due(True, T0, T0, SAM, T0 + timedelta(days=3)) is None      # connected, only idle
    assert offline_due(None, None, T0, SAM, T0 + limit) == T0                   # never a status: silence
    assert offline_due(None, None, None, SAM, T0 + limit) is None


DRUGS = ["naltrexone", "Naltrexone 25 mg", "sertraline", "Sertraline 50 mg", "hydroxyzine", "Hydroxyzine 25 mg"]


@pytest.mark.parametrize("kind", [*KINDS, "naltrexone_missed", "Sertraline 50 mg"])
def test_a_message_names_the_patient_kind_severity_when_and_how_to_ack_but_no_drug(kind):
    held = alert("a-7", kind=kind, rung=PEOPLE, notified_at=T0, at=T0 - timedelta(minutes=20))
    [send] = plan(T0 + timedelta(minutes=15), [held], {SAM.device: SAM}, SETTINGS)
    title, body = compose(SAM, send, "https://care.example.org", {"a-7": "tok"})
    text = title + "\n" + body
    assert "Sam" in title and "warning" in text
    assert "Tue 24 Nov 11:40 (America/New_York)" in body
    assert "https://care.example.org/ack/a-7?token=tok" in body and "dispenser care ack a-7" in body
    assert "Not acknowledged by Sam's people within 15 minutes" in body
    assert not [drug for drug in DRUGS if drug.lower() in text.lower()]


def test_a_burst_of_hundreds_is_one_message_that_lists_the_first_ten():
    burst = [alert(f"a{i:03}", T0, kind="log_fork", severity="critical", audience="clinic") for i in range(300)]
    [send] = plan(T0 + timedelta(seconds=10), burst, {SAM.device: SAM}, SETTINGS)
    title, body = compose(SAM, send, "https://c", {a.alert_id: "t" for a in burst})
    assert title == "Sam: 300 alerts, the most severe critical"
    assert body.count("acknowledge:") == 10 and body.endswith("... and 290 more: `dispenser care status` lists every open alert")


def test_the_config_refuses_what_would_silently_tell_nobody(tmp_path):
    base = {"patient": [{"device": "disp-0001", "name": "Sam"}]}
    with pytest.raises(CareConfigError, match="patient\\[0\\].clinic_notfy: unknown key"):
        parse_care_config({"patient": [{"device": "d", "name": "S", "clinic_notfy": []}]})
    with pytest.raises(CareConfigError, match='quiet_hours: must be "HH:MM-HH:MM"'):
        parse_care_config({"patient": [{"device": "d", "name": "S", "quiet_hours": "22-7"}]})
    with pytest.raises(CareConfigError, match="unknown table"):
        parse_care_config({**base, "patients": []})
    with pytest.raises(CareConfigError, match="named twice"):
        parse_care_config({"patient": base["patient"] * 2})
    with pytest.raises(CareConfigError, match="database.url"):
        parse_care_config({"database": {"url": "mysql://x"}})
    config = parse_care_config({**base, "web": {"listen": "0.0.0.0:9000"}})
    assert config.public_url == "http://0.0.0.0:9000" and config.patient("disp-0001").escalate_after_min == 15
