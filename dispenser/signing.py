"""Ed25519 signatures over the canonical schedule document (contract section 2).

The clinic signs; the device verifies before it applies a schedule from MQTT.
What is signed is the document without its `signature` key in RFC 8785's form (the
JSON Canonicalization Scheme, JCS), which is UTF-8: a clinic system in any language with
a JCS library makes the same bytes. (The event log's hash chain keeps its own form,
`events.canonical`; see docs/MQTT.md.)

    >>> private, public = generate_keypair()
    >>> signed = sign_document({"version": 1}, private, "clinic-2026")
    >>> verify_document(signed, public)          # returns None when it holds
    >>> verify_document({"version": 1}, public)
    Traceback (most recent call last):
    ...
    dispenser.signing.SignatureError: unsigned
"""
from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .docjson import CanonicalFormError, signed_form  # noqa: F401 - CanonicalFormError for callers
from .vocabulary import RejectReason

ALG = "ed25519"
KEY_BYTES = 32
SIGNATURE_BYTES = 64


class SignatureError(Exception):
    """A document that must be signed is not, or not validly.

    `reason` is the contract's rejection reason: "unsigned", "bad_signature" or
    "unknown_key" (a `key_id` that names none of the configured keys).
    """

    def __init__(self, reason: RejectReason, detail: str = ""):
        super().__init__(reason if not detail else f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class KeyFormatError(ValueError):
    """A configured key is not base64 of 32 raw bytes (a config mistake, not an attack)."""


def canonical_document(doc: dict) -> bytes:
    """The bytes that are signed: `doc` without `signature`, RFC 8785 (JCS), UTF-8.

    CanonicalFormError (a ValueError) when the document has none (docjson.signed_form).
    """
    return signed_form(doc)


def generate_keypair() -> tuple[str, str]:
    """A fresh key pair as (private_b64, public_b64), each base64 of the raw 32 bytes."""
    private = Ed25519PrivateKey.generate()
    private_raw = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public_raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return _b64(private_raw), _b64(public_raw)


def load_private_key(private_key_b64: str) -> Ed25519PrivateKey:
    """The clinic's private key from its base64; ValueError naming what is wrong."""
    return Ed25519PrivateKey.from_private_bytes(_key_bytes(private_key_b64, "private key"))


def load_public_key(public_key_b64: str) -> Ed25519PublicKey:
    """The configured clinic key; ValueError with one clear line when it is malformed.

    Called at start-up, so a typo in `[clinic] public_key` is reported as a config
    error instead of turning every schedule from the clinic into `bad_signature`.
    """
    return Ed25519PublicKey.from_public_bytes(_key_bytes(public_key_b64, "public key"))


def sign_document(doc: dict, private_key_b64: str, key_id: str) -> dict:
    """A copy of `doc` with a fresh `signature`; an existing signature is replaced.

    CanonicalFormError (a ValueError) when the document has no RFC 8785 form.
    """
    key = load_private_key(private_key_b64)
    signed = {key_: value for key_, value in doc.items() if key_ != "signature"}
    value = key.sign(canonical_document(signed))
    signed["signature"] = {"alg": ALG, "key_id": key_id, "value": _b64(value)}
    return signed


def verify_document(doc: dict, public_key: str | Ed25519PublicKey) -> None:
    """Return when `doc` is signed by `public_key`; raise SignatureError otherwise.

    No `signature` key at all is "unsigned". Anything else that fails (not an
    object, another alg, bad base64, wrong length, wrong key, altered document) is
    "bad_signature": from the device's side these are all a document it must not trust.
    `key_id` is informational only; the configured key decides.
    """
    if not isinstance(doc, dict) or "signature" not in doc:
        raise SignatureError(RejectReason.UNSIGNED)
    key = public_key if isinstance(public_key, Ed25519PublicKey) else load_public_key(public_key)
    signature = doc["signature"]
    if not isinstance(signature, dict):
        raise SignatureError(RejectReason.BAD_SIGNATURE, "signature is not an object")
    if signature.get("alg") != ALG:
        raise SignatureError(RejectReason.BAD_SIGNATURE, f"alg {signature.get('alg')!r} is not {ALG!r}")
    raw = _decode_b64(signature.get("value"))
    if raw is None or len(raw) != SIGNATURE_BYTES:
        raise SignatureError(RejectReason.BAD_SIGNATURE, "value is not base64 of 64 bytes")
    try:
        signed_bytes = canonical_document(doc)
    except (ValueError, TypeError) as exc:  # NaN, a lone surrogate, an integer beyond 2**53
        raise SignatureError(RejectReason.BAD_SIGNATURE, f"cannot have been signed ({exc})") from exc
    try:
        key.verify(raw, signed_bytes)
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise SignatureError(RejectReason.BAD_SIGNATURE, "does not verify with the clinic key") from exc


def verify_with_keys(doc: dict, keys: Mapping[str, str], public_key: str | None = None) -> str | None:
    """Verify `doc` with the clinic key its `key_id` names; return that key_id.

    `keys` ({key_id: base64}, `[clinic] keys`) lets a clinic rotate keys: a document
    names the key that signed it. A key_id none of them has is `unknown_key`, unless
    `public_key` (`[clinic] public_key`, the v1 setting, which trusts any key_id) is
    configured: then that key decides, as before.
    """
    if not isinstance(doc, dict) or "signature" not in doc:
        raise SignatureError(RejectReason.UNSIGNED)
    signature = doc["signature"]
    key_id = signature.get("key_id") if isinstance(signature, dict) else None
    key_id = key_id if isinstance(key_id, str) else None
    if key_id is not None and key_id in keys:
        verify_document(doc, keys[key_id])
    elif public_key:
        verify_document(doc, public_key)
    elif isinstance(signature, dict):
        named = "no key_id" if key_id is None else f"key_id {ascii(key_id[:40])}"  # ascii: never a lone surrogate
        raise SignatureError(RejectReason.UNKNOWN_KEY, f"{named} is not one of the configured clinic keys "
                                            f"({', '.join(sorted(keys)) or 'none'})")
    else:
        raise SignatureError(RejectReason.BAD_SIGNATURE, "signature is not an object")
    return key_id


def _key_bytes(text: Any, what: str) -> bytes:
    raw = _decode_b64(text)
    if raw is None:
        raise KeyFormatError(f"{what} is not valid base64")
    if len(raw) != KEY_BYTES:
        raise KeyFormatError(f"{what} must be base64 of {KEY_BYTES} raw bytes, got {len(raw)}")
    return raw


def _decode_b64(text: Any) -> bytes | None:
    """Strict base64 (standard alphabet, padding checked), None when it is not."""
    if not isinstance(text, str):
        return None
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return None


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")
