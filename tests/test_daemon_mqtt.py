"""The real daemon process (`dispenser run`, simulated hardware) against a real Mosquitto:
schedules from the clinic applied or refused with the right reason, every event delivered."""
from __future__ import annotations

import copy
import json
import signal
import subprocess
import sys

import pytest

from broker import Clinic
from inprocess import dispenser
from dispenser.signing import generate_keypair, sign_document
from support import contract_schedule
from waiting import HANG

DEVICE = "disp-0001"
BASE = f"pilldispenser/{DEVICE}"


def device_config(tmp_path, broker, public: str, extra: str = ""):
    """The config of a simulated device on the test's broker that trusts the clinic's key."""
    config = tmp_path / "config.toml"
    config.write_text(
        f'[device]\nid = "{DEVICE}"\ntimezone = "America/New_York"\n[hardware]\nbackend = "sim"\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nkeepalive = 5\ntls = false\n'
        f'[clinic]\npublic_key = "{public}"\n[storage]\ndb = "{tmp_path / "d.db"}"\n{extra}')
    return config


@pytest.fixture
def setup(tmp_path, broker):
    private, public = generate_keypair()
    config = device_config(tmp_path, broker, public)
    clinic = Clinic(broker).connect(f"{BASE}/#")
    daemon = subprocess.Popen([sys.executable, "-m", "dispenser", "run", "--config", str(config)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        online = clinic.wait_for(lambda: any(json.loads(p).get("online") for p in clinic.on(f"{BASE}/status")), HANG)
        assert online, daemon.stderr.read() if daemon.poll() is not None else "the daemon never came online"
        yield clinic, private, daemon, config
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(20)
        clinic.close()


def events(clinic: Clinic) -> list[dict]:
    seen, unique = set(), []
    for event in clinic.json_on(f"{BASE}/events"):
        if event["event_id"] not in seen:
            seen.add(event["event_id"])
            unique.append(event)
    return unique


def answer(clinic: Clinic, count: int) -> list[dict]:
    """Wait until `count` schedule answers arrived, and return them in order."""
    kinds = ("schedule.applied", "schedule.rejected")
    assert clinic.wait_for(lambda: len([e for e in events(clinic) if e["type"] in kinds]) >= count, HANG)
    return [e for e in events(clinic) if e["type"] in kinds]


def for_device(version: int = 12, issued_at: str = "2026-11-20T09:00:00Z", **fields) -> dict:
    """The contract's schedule as the clinic sends it to this device (v2: naming it)."""
    return {**contract_schedule(), "version": version, "issued_at": issued_at, "device_id": DEVICE, **fields}


def test_schedules_from_the_clinic_are_applied_or_refused_with_the_reason(setup):
    clinic, private, daemon, config = setup
    _, other_key = None, generate_keypair()[0]
    v12 = sign_document(for_device(), private, "clinic-2026")
    newer = for_device(13, "2026-11-20T10:00:00Z")
    bad_compartment = copy.deepcopy(newer)
    bad_compartment["medications"][0]["compartment"] = 9
    wrong_schema = copy.deepcopy(newer)
    wrong_schema["medications"][0]["dosage"][0]["timing"]["repeat"]["periodUnit"] = "mo"
    tampered = sign_document(newer, private, "clinic-2026")
    tampered["medications"][0]["compartment"] = 4  # changed after signing
    payloads = [
        (json.dumps(v12), "applied", None),
        (json.dumps(v12), "rejected", "stale_version"),
        (json.dumps(newer), "rejected", "unsigned"),
        (json.dumps(sign_document(newer, other_key, "someone")), "rejected", "bad_signature"),
        (json.dumps(tampered), "rejected", "bad_signature"),
        (json.dumps(sign_document(wrong_schema, private, "clinic-2026")), "rejected", "invalid_schema"),
        (json.dumps(sign_document(bad_compartment, private, "clinic-2026")), "rejected", "unknown_compartment"),
        ("{not json", "rejected", "invalid_json"),
        ("x" * (65 * 1024), "rejected", "too_large"),
        (json.dumps(sign_document({**newer, "device_id": "disp-0002"}, private, "clinic-2026")),
         "rejected", "wrong_device"),
        (json.dumps(sign_document({**newer, "expires_at": "2026-01-01T00:00:00Z"}, private, "clinic-2026")),
         "rejected", "expired"),
        (json.dumps(sign_document({**newer, "issued_at": "2099-01-01T00:00:00Z"}, private, "clinic-2026")),
         "rejected", "from_the_future"),
        (json.dumps(sign_document(newer, private, "clinic-2026")), "applied", None),
    ]
    for i, (payload, _, _) in enumerate(payloads, start=1):
        assert not clinic.publish(f"{BASE}/schedule/set", payload).is_failure
        answer(clinic, i)  # one at a time, so the answers pair with the payloads
    answers = answer(clinic, len(payloads))
    got = [(e["type"].split(".")[1], e["data"].get("reason")) for e in answers]
    assert got == [(kind, reason) for _, kind, reason in payloads]
    assert all(e["data"]["source"] == "mqtt" for e in answers)
    assert [e["data"]["version"] for e in answers if e["type"] == "schedule.applied"] == [12, 13]

    # Every event arrived, in seq order without gaps (after dedup on event_id).
    seqs = [e["seq"] for e in events(clinic)]
    assert seqs == list(range(1, len(seqs) + 1))
    # Rejections from the clinic raise caregiver alerts on the alerts topic too: one per cause
    # an hour (two bad_signature: one alert), so a flood cannot flood the caregiver.
    alerts = clinic.json_on(f"{BASE}/alerts")
    assert len({a["event_id"] for a in alerts if a["data"]["kind"] == "schedule_rejected"}) == 10
    # The retained state follows the schedule in force.
    assert clinic.wait_for(lambda: any(json.loads(p).get("schedule_version") == 13
                                       for p in clinic.on(f"{BASE}/state")), 20)

    status = dispenser("status", "--config", config)
    assert "version 13" in status.stdout and "connected since" in status.stdout

    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(20) == 0
    assert clinic.wait_for(lambda: json.loads(clinic.on(f"{BASE}/status")[-1]) .get("online") is False, HANG)


def test_clinic_push_wait_reports_the_devices_answer(setup, tmp_path):
    """`dispenser clinic push --wait`: the clinician learns at once whether the device took it."""
    clinic, private, daemon, config = setup
    signed = tmp_path / "v12.signed.json"
    signed.write_text(json.dumps(sign_document(for_device(), private, "clinic-2026")))
    unsigned = for_device(13, "2026-11-20T10:00:00Z")
    (tmp_path / "v13.json").write_text(json.dumps(unsigned))

    def push(path, *extra):
        return dispenser("clinic", "push", path, "--device", DEVICE, "--config", config, "--wait", "20", *extra)

    applied = push(signed)
    assert applied.returncode == 0, applied.stderr
    assert f"{DEVICE} applied schedule version 12" in applied.stdout
    stale = push(signed)
    assert stale.returncode == 1 and "rejected schedule version 12: stale_version" in stale.stderr
    refused = push(tmp_path / "v13.json", "--allow-unsigned")
    assert refused.returncode == 1 and "rejected schedule version 13: unsigned" in refused.stderr
    assert [e["data"]["version"] for e in events(clinic) if e["type"] == "schedule.applied"] == [12]
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(20) == 0
    later = for_device(14, "2026-11-20T11:00:00Z")
    (tmp_path / "v14.json").write_text(json.dumps(sign_document(later, private, "clinic-2026")))
    offline = dispenser("clinic", "push", tmp_path / "v14.json", "--device", DEVICE, "--config", config, "--wait", "1")
    assert offline.returncode == 1, offline.stdout  # queued in the device's session, unanswered for now
    assert "no answer from disp-0001 within 1 s" in offline.stderr and len(offline.stderr.splitlines()) == 1


def test_the_real_daemon_waits_for_ntp_then_tells_the_clinic_its_clock_is_set(tmp_path, broker):
    """`dispenser run` with `[clock] trust = "synchronized"`: held until the marker is touched."""
    private, public = generate_keypair()
    marker = tmp_path / "synchronized"  # timesyncd's marker, not touched yet: no sync since boot
    config = device_config(tmp_path, broker, public, f'[clock]\ntrust = "synchronized"\nmarker = "{marker}"\n')
    clinic = Clinic(broker).connect(f"{BASE}/#")
    daemon = subprocess.Popen([sys.executable, "-m", "dispenser", "run", "--config", str(config)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def state() -> dict:
            payloads = clinic.on(f"{BASE}/state")
            return json.loads(payloads[-1]) if payloads else {}

        assert clinic.wait_for(lambda: state().get("clock_trusted") is False, HANG), \
            daemon.stderr.read() if daemon.poll() is not None else state()
        assert [e["type"] for e in events(clinic)][:2] == ["clock.unsynchronized", "device.started"]
        marker.touch()  # NTP answers; the next input finds it
        signed = sign_document(for_device(), private, "clinic-2026")
        assert not clinic.publish(f"{BASE}/schedule/set", json.dumps(signed)).is_failure
        [applied] = answer(clinic, 1)
        kinds = [e["type"] for e in events(clinic)]
        assert applied["type"] == "schedule.applied"
        assert kinds.index("clock.synchronized") < kinds.index("schedule.applied")
        assert clinic.wait_for(lambda: state().get("clock_trusted") is True, HANG)
        status = dispenser("status", "--config", config)
        assert "clock         synchronised by NTP" in status.stdout
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(20)
        clinic.close()
