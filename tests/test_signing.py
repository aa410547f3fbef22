"""Ed25519 over the canonical schedule document (contract section 2)."""
from __future__ import annotations

import base64
import copy
import doctest
import json

import pytest

from dispenser import signing
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


def test_doctests():
    assert doctest.testmod(signing).failed == 0


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
