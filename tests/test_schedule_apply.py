"""Applying schedules (contract v2): a local apply never locks the clinic out, and the clinic sees it.

The clinic's schedules (from MQTT, signed) are compared only with the clinic's last one;
a local one (`dispenser schedule apply`, unsigned allowed) only with the one in force.
"""
from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone

import pytest

from dispenser.config import ConfigError, parse_config
from dispenser.engine import Engine
from dispenser.events import canonical
from dispenser.signing import generate_keypair, sign_document
from dispenser.store import Store
from support import daily, schedule

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)
DEVICE = "disp-test"
PRIVATE, PUBLIC = generate_keypair()
ROTATED_PRIVATE, ROTATED_PUBLIC = generate_keypair()


def document(version: int, issued_at: str = "2026-11-24T09:00:00Z", name: str = "A", **fields) -> dict:
    med = daily("a", 1, ["08:00"])
    med["name"] = name
    return {**schedule(med, version=version), "issued_at": issued_at, **fields}


def from_clinic(version: int, issued_at: str = "2026-11-24T09:00:00Z", key=PRIVATE, key_id="clinic-2026",
                **fields) -> bytes:
    doc = {"device_id": DEVICE, **document(version, issued_at, **fields)}
    return json.dumps(sign_document(doc, key, key_id)).encode()


class Device:
    def __init__(self, store: Store | None = None, **keys):
        self.store = store or Store.open(":memory:", DEVICE)
        keys = keys or {"clinic_public_key": PUBLIC}
        self.engine = Engine(self.store, 8, "UTC", **keys)
        self.engine.start(NOW)

    def local(self, doc: dict, now: datetime = NOW) -> dict:
        self.engine.apply_schedule(now, doc, "local")
        return self.verdict()

    def mqtt(self, payload: bytes, now: datetime = NOW) -> dict:
        self.engine.apply_schedule_payload(now, payload, "mqtt")
        return self.verdict()

    def verdict(self) -> dict:
        return [e for e in self.store.events() if e["type"] in ("schedule.applied", "schedule.rejected")][-1]

    def reason(self, verdict: dict) -> str:
        return verdict["data"].get("reason", "applied")

    def alerts(self, kind: str) -> list[dict]:
        return [e["data"] for e in self.store.events() if e["type"] == "alert.raised" and e["data"]["kind"] == kind]


def digest(doc: dict) -> str:
    body = {k: v for k, v in doc.items() if k != "signature"}
    return hashlib.sha256(canonical(body).encode()).hexdigest()


# --- the lock-out ------------------------------------------------------------------------------


def test_a_local_apply_of_the_highest_version_does_not_lock_the_clinic_out():
    device = Device()
    assert device.reason(device.mqtt(from_clinic(12))) == "applied"
    assert device.reason(device.local(document(2 ** 63 - 1))) == "applied"
    verdict = device.mqtt(from_clinic(13, "2026-11-24T10:00:00Z"))
    assert device.reason(verdict) == "applied", verdict["data"]
    assert device.engine.rules.state.schedule.version == 13
    assert device.store.current_schedule_version() == 13  # `status` and `schedule show` see the clinic's


def test_a_signed_schedule_with_the_highest_version_still_lets_a_newer_one_in_only_by_the_rules():
    device = Device()
    # 2**53 - 1: the highest integer RFC 8785 (the signed form) writes exactly; 2**63 - 1 cannot be signed.
    assert device.reason(device.mqtt(from_clinic(2 ** 53 - 1))) == "applied"
    stale = device.mqtt(from_clinic(13, "2026-11-24T10:00:00Z"))
    assert device.reason(stale) == "stale_version"  # the clinic's own numbering: it must count up


def test_the_clinic_s_first_schedule_is_applied_whatever_a_local_one_claimed():
    device = Device()
    assert device.reason(device.local(document(10 ** 18))) == "applied"
    assert device.reason(device.mqtt(from_clinic(1))) == "applied"


def test_a_local_apply_must_be_newer_than_the_schedule_in_force():
    device = Device()
    device.mqtt(from_clinic(12))
    verdict = device.local(document(12))
    assert device.reason(verdict) == "stale_version" and "in force" in verdict["data"]["problems"][0]
    assert device.reason(device.local(document(13))) == "applied"


# --- what the clinic sees ------------------------------------------------------------------------


def test_every_apply_carries_the_digest_and_who_signed_it():
    device = Device()
    device.mqtt(from_clinic(12))
    signed = device.verdict()["data"]
    sent = sign_document({"device_id": DEVICE, **document(12)}, PRIVATE, "clinic-2026")
    assert signed["digest"] == digest(sent) and signed["key_id"] == "clinic-2026" and signed["signed"] is True
    local = document(13)
    data = device.local(local)["data"]
    assert data["digest"] == digest(local) and data["signed"] is False and "key_id" not in data


def test_a_local_apply_raises_an_alert_carrying_its_digest_and_no_drug_name():
    device = Device()
    doc = document(13, name="Naltrexone 50 mg")
    applied = device.local(doc)
    [alert] = device.alerts("schedule_applied_locally")
    assert alert["severity"] == "info" and alert["events"] == [applied["event_id"]]
    assert digest(doc) in alert["message"] and "naltrexone" not in alert["message"].lower()
    device.mqtt(from_clinic(14, "2026-11-24T10:00:00Z"))
    assert len(device.alerts("schedule_applied_locally")) == 1  # the clinic's own: no alert


# --- bound to one device, not expired, not from the future, newer ---------------------------------


@pytest.mark.parametrize("fields, reason", [
    ({"device_id": "disp-0002"}, "wrong_device"),
    ({"expires_at": "2026-11-24T11:59:59Z"}, "expired"),
    ({"expires_at": "2026-11-24T12:00:00Z"}, "expired"),
    ({"issued_at": "2026-11-24T12:05:01Z"}, "from_the_future"),
    ({"issued_at": "2026-11-24T12:04:59Z"}, "applied"),  # within the clock skew allowed
    ({"expires_at": "2026-11-24T12:00:01Z"}, "applied"),
])
def test_a_signed_schedule_is_bound_to_this_device_and_time(fields, reason):
    device = Device()
    doc = {"device_id": DEVICE, **document(12), **fields}
    assert device.reason(device.mqtt(json.dumps(sign_document(doc, PRIVATE, "k")).encode())) == reason


def test_a_signed_schedule_that_names_no_device_is_wrong_device():
    device = Device()
    payload = json.dumps(sign_document(document(12), PRIVATE, "k")).encode()
    verdict = device.mqtt(payload)
    assert device.reason(verdict) == "wrong_device" and verdict["data"]["problems"][0].startswith("device_id")
    assert device.engine.rules.state.schedule is None


def test_a_newer_version_issued_earlier_than_the_clinic_s_last_is_stale():
    """issued_at was never checked: of two signed schedules in flight, the one issued earlier must not
    replace the later one, whatever its version says."""
    device = Device()
    device.mqtt(from_clinic(12, "2026-11-24T10:00:00Z"))
    verdict = device.mqtt(from_clinic(13, "2026-11-24T09:00:00Z"))
    assert device.reason(verdict) == "stale_version"
    assert verdict["data"]["problems"] == ["issued_at: 2026-11-24T09:00:00Z is not after 2026-11-24T10:00:00Z, "
                                           "when the clinic's last schedule was issued"]
    assert device.engine.rules.state.schedule.version == 12


def test_a_local_document_is_held_to_its_device_and_expiry_when_it_names_them():
    device = Device()
    assert device.reason(device.local(document(1, device_id="disp-0002"))) == "wrong_device"
    assert device.reason(device.local(document(1, expires_at="2026-11-24T11:00:00Z"))) == "expired"
    assert device.reason(device.local(document(1, issued_at="2026-12-24T11:00:00Z"))) == "applied"
    assert device.alerts("schedule_rejected") == []  # a person at the device sees the answer there


@pytest.mark.parametrize("fields, problem", [
    ({"device_id": ""}, "device_id: must be a non-empty string"),
    ({"device_id": 7}, "device_id: must be a non-empty string"),
    ({"expires_at": "tomorrow"}, "expires_at: must be an ISO date-time"),
    ({"expires_at": "2026-11-25T00:00:00"}, "expires_at: must be an ISO date-time"),
])
def test_device_id_and_expires_at_are_checked_by_the_parser(fields, problem):
    verdict = Device().local(document(1, **fields))
    assert verdict["data"]["reason"] == "invalid_schema"
    assert any(p.startswith(problem) for p in verdict["data"]["problems"]), verdict["data"]["problems"]


# --- one version, applied twice ----------------------------------------------------------------


def test_the_clinic_may_reuse_a_version_a_local_apply_took_and_a_restart_folds_the_right_one(tmp_path):
    store = Store.open(tmp_path / "d.db", DEVICE)
    device = Device(store)
    device.mqtt(from_clinic(12))
    assert device.reason(device.local(document(13, name="Local"))) == "applied"
    assert device.reason(device.mqtt(from_clinic(13, "2026-11-24T10:00:00Z", name="Clinic"))) == "applied"
    assert device.engine.rules.state.schedule.medications[0].name == "Clinic"
    store.close()
    again = Engine(Store.open(tmp_path / "d.db", DEVICE), 8, "UTC", clinic_public_key=PUBLIC)
    assert again.rules.state.schedule.version == 13 and again.rules.state.schedule.medications[0].name == "Clinic"
    # and the clinic's last stays the reference: its version 13 again is a replay
    assert again.store.last_applied("mqtt")["version"] == 13


# --- keys: rotation and unknown_key --------------------------------------------------------------


def test_configured_keys_verify_by_key_id_and_an_unknown_key_id_is_unknown_key():
    device = Device(clinic_keys={"clinic-2026": PUBLIC, "clinic-2027": ROTATED_PUBLIC})
    assert device.reason(device.mqtt(from_clinic(12, key_id="clinic-2026"))) == "applied"
    rotated = from_clinic(13, "2026-11-24T10:00:00Z", key=ROTATED_PRIVATE, key_id="clinic-2027")
    assert device.reason(device.mqtt(rotated)) == "applied"
    assert device.verdict()["data"]["key_id"] == "clinic-2027"
    unknown = device.mqtt(from_clinic(14, "2026-11-24T11:00:00Z", key_id="clinic-2099"))
    assert device.reason(unknown) == "unknown_key" and "clinic-2099" in unknown["data"]["problems"][0]
    lying = device.mqtt(from_clinic(14, "2026-11-24T11:00:00Z", key=ROTATED_PRIVATE, key_id="clinic-2026"))
    assert device.reason(lying) == "bad_signature"


def test_the_v1_public_key_still_trusts_any_key_id():
    device = Device(clinic_public_key=PUBLIC)
    assert device.reason(device.mqtt(from_clinic(12, key_id="anything"))) == "applied"


def test_clinic_keys_in_the_config():
    config = parse_config({"clinic": {"keys": {"clinic-2026": PUBLIC, "clinic-2027": ROTATED_PUBLIC}}})
    assert config.clinic_keys == {"clinic-2026": PUBLIC, "clinic-2027": ROTATED_PUBLIC}
    with pytest.raises(ConfigError, match=r"^config: clinic.keys.old must be the base64 of a raw 32-byte"):
        parse_config({"clinic": {"keys": {"old": "abc"}}})
    with pytest.raises(ConfigError, match="clinic.keys must be a table"):
        parse_config({"clinic": {"keys": "abc"}})


def test_no_key_at_all_still_refuses_every_schedule_from_mqtt():
    store = Store.open(":memory:", DEVICE)
    engine = Engine(store, 8, "UTC")
    engine.start(NOW)
    engine.apply_schedule_payload(NOW, from_clinic(12), "mqtt")
    assert [e["data"]["reason"] for e in store.events() if e["type"] == "schedule.rejected"] == ["unsigned"]



@pytest.mark.parametrize("issued_at", ["2026-11-24T09:00Z", "2026-11-24 09:00:00+00:00", "20261124T090000Z"])
def test_a_schedule_applied_under_the_older_iso_reading_still_starts_the_device(issued_at):
    """issued_at once took any spelling datetime.fromisoformat reads (the schema even allowed no
    seconds); such a document may be the one in force. It is refused as new, but a start reads it
    again from the log: the device keeps giving doses by it."""
    from dispenser.events import Draft
    from dispenser.logcheck import check_store
    from dispenser.schedule import ScheduleError, parse_schedule
    old = document(1, issued_at)
    old["medications"][0]["separate_from"] = [{"ingredient": "x" * 65, "hours": 2}]  # once unlimited too
    with pytest.raises(ScheduleError):
        parse_schedule(old)
    store = Store.open(":memory:", DEVICE)
    store.append([Draft("schedule.applied", {"version": 1, "source": "local", "issued_at": "2026-11-24T09:00:00Z",
                                             "digest": hashlib.sha256(canonical(old).encode()).hexdigest(),
                                             "signed": False}, "")], NOW, schedule_document=old)
    engine = Engine(store, 8, "America/New_York")
    engine.start(NOW)
    assert engine.view.schedule_version == 1
    engine.refill(NOW, "a", 5)
    assert engine.press(datetime(2026, 11, 25, 13, 0, tzinfo=timezone.utc)).feedback == "released"
    assert check_store(store, until=datetime(2026, 11, 26, tzinfo=timezone.utc)) == []
