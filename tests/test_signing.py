"""Ed25519 over the canonical schedule document (contract section 2)."""
from __future__ import annotations

import base64
import copy
import json

import pytest

from dispenser.signing import (
    SignatureError,
    canonical_document,
    generate_keypair,
    load_public_key,
    sign_document,
    verify_document,
)

DOC = {
    "schema": "dispenser.schedule/1",
    "version": 12,
    "issued_at": "2026-11-20T09:00:00Z",
    "timezone": "America/New_York",
    "medications": [{"id": "sertraline", "name": "Sertraline 50 mg — café", "compartment": 1}],
}


@pytest.fixture(scope="module")
def keys():
    return generate_keypair()


def test_canonical_form_is_the_contracts():
    doc = dict(DOC, signature={"alg": "ed25519", "key_id": "k", "value": "x"})
    expected = json.dumps(DOC, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    assert canonical_document(doc) == expected
    assert "café".encode("utf-8") in canonical_document(doc)


def test_keypair_is_raw_32_bytes(keys):
    private, public = keys
    assert len(base64.b64decode(private)) == 32
    assert len(base64.b64decode(public)) == 32


def test_sign_then_verify_round_trip(keys):
    private, public = keys
    signed = sign_document(DOC, private, "clinic-2026")
    assert signed["signature"]["alg"] == "ed25519"
    assert signed["signature"]["key_id"] == "clinic-2026"
    assert len(base64.b64decode(signed["signature"]["value"])) == 64
    assert "signature" not in DOC, "the input is not modified"
    verify_document(signed, public)
    verify_document(json.loads(json.dumps(signed)), public)  # survives the wire
    verify_document(signed, load_public_key(public))


def test_key_order_and_whitespace_do_not_matter(keys):
    private, public = keys
    signed = sign_document(DOC, private, "k")
    reordered = json.loads(json.dumps(dict(reversed(list(signed.items()))), indent=4))
    verify_document(reordered, public)


def test_resigning_replaces_the_old_signature(keys):
    private, public = keys
    twice = sign_document(sign_document(DOC, private, "old"), private, "new")
    assert twice["signature"]["key_id"] == "new"
    verify_document(twice, public)


def test_unsigned(keys):
    with pytest.raises(SignatureError) as caught:
        verify_document(DOC, keys[1])
    assert caught.value.reason == "unsigned"


def _tampered(signed):
    doc = copy.deepcopy(signed)
    doc["version"] = 13
    return doc


def _with_signature(signed, **changes):
    doc = copy.deepcopy(signed)
    doc["signature"].update(changes)
    return doc


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(_tampered, id="altered-document"),
        pytest.param(lambda s: _with_signature(s, alg="rsa"), id="wrong-alg"),
        pytest.param(lambda s: _with_signature(s, value="not base64!"), id="bad-base64"),
        pytest.param(lambda s: _with_signature(s, value=base64.b64encode(b"x" * 63).decode()), id="short"),
        pytest.param(lambda s: _with_signature(s, value=None), id="no-value"),
        pytest.param(lambda s: dict(s, signature="abc"), id="not-an-object"),
    ],
)
def test_bad_signature(keys, mangle):
    signed = sign_document(DOC, keys[0], "k")
    with pytest.raises(SignatureError) as caught:
        verify_document(mangle(signed), keys[1])
    assert caught.value.reason == "bad_signature"


def test_wrong_key_is_bad_signature(keys):
    other_public = generate_keypair()[1]
    with pytest.raises(SignatureError) as caught:
        verify_document(sign_document(DOC, keys[0], "k"), other_public)
    assert caught.value.reason == "bad_signature"


def test_nan_in_a_received_document_is_bad_signature(keys):
    signed = sign_document(DOC, keys[0], "k")
    received = json.loads(json.dumps(signed).replace('"version": 12', '"version": NaN'))
    with pytest.raises(SignatureError) as caught:
        verify_document(received, keys[1])
    assert caught.value.reason == "bad_signature"


@pytest.mark.parametrize(
    "bad, message",
    [("not base64!", "not valid base64"), (base64.b64encode(b"k" * 31).decode(), "32 raw bytes, got 31"), ("", "got 0")],
)
def test_malformed_configured_key_is_a_clear_value_error(bad, message):
    with pytest.raises(ValueError, match=message):
        load_public_key(bad)


# -- (v2) RFC 8785: the form a clinic in any language makes --------------------------------------

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from dispenser.docjson import CanonicalFormError  # noqa: E402

FRACTIONAL = {**DOC, "medications": [{
    "id": "hydroxyzine", "name": "Hydroxyzine 2.5 mg", "compartment": 3,
    "strength": {"value": 2.5, "unit": "mg"},
    "dosage": [{"asNeededBoolean": True, "timing": {"repeat": {"frequency": 1, "period": 0.5, "periodUnit": "h"}},
                "doseAndRate": [{"doseQuantity": {"value": 1.0}}], "tiny": 2.5e-7}]}]}


def _clinic_signed(doc: dict, private_b64: str, form: bytes) -> dict:
    """What a clinic system does with its own library: sign the bytes `form`, attach the signature."""
    key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(private_b64))
    return {**doc, "signature": {"alg": "ed25519", "key_id": "k", "value": base64.b64encode(key.sign(form)).decode()}}


def test_the_signed_form_is_rfc_8785_written_out_by_hand():
    """Independent of any library: numbers as ECMAScript writes them, keys in UTF-16 order."""
    doc = {"b": 1.0, "a": 0.5, "c": 2.5e-7, "d": 1e21, "e": -0.0, "\ue000": "x", "\U0001f600": "é\u2028",
           "signature": {"value": "ignored"}}
    assert canonical_document(doc) == ('{"a":0.5,"b":1,"c":2.5e-7,"d":1e+21,"e":0,'
                                       '"\U0001f600":"é\u2028","\ue000":"x"}').encode("utf-8")
    # Python's json.dumps(sort_keys=True) writes 1.0, 2.5e-07, -0.0 and puts U+E000 first: other bytes.
    assert json.dumps({k: v for k, v in doc.items() if k != "signature"}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8") != canonical_document(doc)


def test_a_document_with_fractional_numbers_signed_with_rfc8785_verifies(keys):
    import rfc8785
    private, public = keys
    body = json.loads(json.dumps(FRACTIONAL))
    signed = _clinic_signed(body, private, rfc8785.dumps(body))
    verify_document(signed, public)
    verify_document(json.loads(json.dumps(signed, indent=2)), public)  # whatever whitespace it travels in
    assert sign_document(body, private, "k")["signature"] == signed["signature"]  # Ed25519 is deterministic


def test_the_same_document_signed_over_the_old_python_form_is_refused(keys):
    """Compatibility: one signed form. A v1 signature over a document without fractional numbers
    is byte-for-byte the same (test_canonical_form_is_the_contracts); one over a fraction must be
    signed again with the v2 `clinic sign`."""
    private, public = keys
    old_form = json.dumps(FRACTIONAL, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    with pytest.raises(SignatureError) as caught:
        verify_document(_clinic_signed(FRACTIONAL, private, old_form), public)
    assert caught.value.reason == "bad_signature"
    verify_document(_clinic_signed(DOC, private, json.dumps(DOC, sort_keys=True, separators=(",", ":"),
                                                             ensure_ascii=False).encode("utf-8")), public)


def test_an_integer_beyond_2_to_the_53_has_no_signed_form(keys):
    """RFC 8785 numbers are doubles: 2**63 - 1 would read back as another number, so it cannot be signed."""
    private, public = keys
    with pytest.raises(CanonicalFormError, match="RFC 8785"):
        sign_document({**DOC, "version": 2 ** 63 - 1}, private, "k")
    sign_document({**DOC, "version": 2 ** 53 - 1}, private, "k")
    forged = {**sign_document(DOC, private, "k"), "version": 2 ** 63 - 1}
    with pytest.raises(SignatureError) as caught:
        verify_document(forged, public)
    assert caught.value.reason == "bad_signature" and "cannot have been signed" in str(caught.value)


# -- (v2) a duplicated key is no document -----------------------------------------------------------

from datetime import datetime, timezone  # noqa: E402

from support import as_needed, schedule  # noqa: E402

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)


def _device(public: str):
    from dispenser.engine import Engine
    from dispenser.store import Store
    store = Store.open(":memory:", "disp-test")
    engine = Engine(store, 8, "UTC", clinic_public_key=public)
    engine.start(NOW)
    return engine, store


def _verdicts(store) -> list[dict]:
    return [e["data"] for e in store.events() if e["type"] in ("schedule.applied", "schedule.rejected")]


def test_a_half_hour_period_signed_by_the_clinic_is_applied_with_the_digest_of_the_signed_bytes(keys):
    import hashlib
    private, public = keys
    doc = {**schedule(as_needed("hydroxyzine", 3, every_h=0.5)), "device_id": "disp-test"}
    signed = sign_document(doc, private, "clinic-2026")
    engine, store = _device(public)
    engine.apply_schedule_payload(NOW, json.dumps(signed).encode(), "mqtt")
    [applied] = _verdicts(store)
    assert applied.get("reason") is None and applied["signed"] is True, applied
    assert applied["digest"] == hashlib.sha256(canonical_document(signed)).hexdigest()


def test_a_decoy_duplicate_key_is_refused_invalid_json_before_the_signature(keys):
    """`json.loads` keeps the last of two keys, a verifier in another language may keep the first:
    whichever one the clinic checked, the device must not apply the other."""
    private, public = keys
    doc = {**schedule(as_needed("hydroxyzine", 3)), "device_id": "disp-test", "version": 5}
    payload = json.dumps(sign_document(doc, private, "clinic-2026"))
    decoy = payload.replace('{"schema"', '{"version": 900, "schema"', 1).encode()
    engine, store = _device(public)
    engine.apply_schedule_payload(NOW, decoy, "mqtt")
    nested = payload.replace('"periodUnit": "h"', '"periodUnit": "h", "period": 0.01', 1).encode()
    engine.apply_schedule_payload(NOW, nested, "mqtt")
    first, second = _verdicts(store)
    assert first["reason"] == second["reason"] == "invalid_json"
    assert first["problems"] == ['payload: (document): the key "version" is given twice']
    assert second["problems"] == ['payload: medications[0].dosage[0].timing.repeat: the key "period" is given twice']
    assert engine.rules.state.schedule is None and store.verify()[0]
    engine.apply_schedule_payload(NOW, payload.encode(), "mqtt")
    assert engine.rules.state.schedule.version == 5


def test_a_duplicate_under_a_key_that_is_not_unicode_is_refused_and_logged(keys):
    """The problem line names the path in ASCII: a lone surrogate must not reach the log."""
    engine, store = _device(keys[1])
    engine.apply_schedule_payload(NOW, b'{"\\ud800": {"a": 1, "a": 2}}', "mqtt")
    engine.apply_schedule_payload(NOW, b'{"deep": ' * 300 + b'{"k": 1, "k": 2}' + b"}" * 300, "mqtt")
    surrogate, deep = _verdicts(store)
    assert surrogate["reason"] == "invalid_json" and surrogate["problems"] == [
        'payload: ["\\ud800"]: the key "a" is given twice']
    assert deep["reason"] == "invalid_json" and len(deep["problems"][0]) < 260
    assert store.verify()[0]
