"""A schedule document as JSON: read with no key named twice, written in RFC 8785 form.

Contract section 2. Reading and the signed form live together because they answer one
question: which document did the clinic sign?

**Reading.**
`json.loads` keeps the last of two equal keys; a parser in another language may keep the
first. A clinic that checks a document with one and a device that reads it with the
other would then disagree about what was signed (a decoy `"version"` first, the real one
last), so a document with a duplicated key anywhere is not a document: it is refused as
`invalid_json` before anything else, wherever a schedule is parsed from bytes or text
(`Engine.apply_schedule_payload`, `schedule.load_schedule_file`, `cli._read_json` for
`schedule apply` and the clinic's `sign` and `push`).

**The signed form** is RFC 8785, the JSON Canonicalization Scheme (JCS), through the
`rfc8785` package, so that a clinic system in any language with a JCS library makes the
same bytes. `digest` (in `schedule.applied`) hashes the same bytes.

    >>> loads('{"version": 2, "medications": []}')
    {'version': 2, 'medications': []}
    >>> loads('{"medications": [{"id": "a", "id": "b"}]}')
    Traceback (most recent call last):
    ...
    dispenser.docjson.DuplicateKeyError: medications[0]: the key "id" is given twice
"""
from __future__ import annotations

import hashlib
import json
import re
from typing import Any


class DuplicateKeyError(json.JSONDecodeError):
    """A JSON object names one key twice; `path` is the field path of that object.

    A JSONDecodeError, so every reader that already refuses bad JSON refuses this too.
    The parser's hook cannot see where in the text the object was, so `lineno`/`colno`
    are not meaningful here: the message names the field path instead.
    """

    def __init__(self, path: str, key: str):
        message = f"{path or '(document)'}: the key {_quoted(key)} is given twice"
        ValueError.__init__(self, message)
        self.msg, self.doc, self.pos, self.lineno, self.colno = message, "", 0, 1, 1
        self.path, self.key = path, key

    def __str__(self) -> str:
        return self.msg

    def __reduce__(self) -> tuple[type[DuplicateKeyError], tuple[str, str]]:
        return self.__class__, (self.path, self.key)


class _Twice(dict):
    """An object whose text named `duplicate` twice (found again below to name its path)."""

    duplicate = ""


def loads(text: str | bytes) -> Any:
    """`json.loads`, refusing a duplicated key anywhere with DuplicateKeyError (a JSONDecodeError).

    RecursionError (nesting too deep) and other JSONDecodeErrors pass through as from `json.loads`.
    """
    duplicated = False

    def pairs(items: list[tuple[str, Any]]) -> dict:
        nonlocal duplicated
        obj = dict(items)
        if len(obj) == len(items):
            return obj
        seen: set[str] = set()
        twice = _Twice(obj)
        for key, _ in items:
            if key in seen:
                twice.duplicate = key
                break
            seen.add(key)
        duplicated = True
        return twice

    value = json.loads(text, object_pairs_hook=pairs)
    found = _first_twice(value) if duplicated else None
    if found is not None:
        raise DuplicateKeyError(*found)
    return value


def _first_twice(value: Any) -> tuple[str, str] | None:
    """(field path, key) of the first object, in document order, that named a key twice."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, _Twice):
            return path, item.duplicate
        if isinstance(item, dict):
            children = [(_field(path, key), child) for key, child in item.items()]
        elif isinstance(item, list):
            children = [(f"{path}[{index}]", child) for index, child in enumerate(item)]
        else:
            continue
        stack.extend(reversed(children))
    return None


MAX_PATH = 200  # a path into 64 KiB of nesting could be long; the problem line stays short


def _quoted(key: str) -> str:
    """A key as JSON text in ASCII (a lone surrogate must not reach the log), at most 64 characters."""
    return json.dumps(key[:64], ensure_ascii=True) + ("..." if len(key) > 64 else "")


def _field(path: str, key: str) -> str:
    """The field path one key further: `a.b` for a plain key, `a["x y"]` for any other."""
    step = (f".{key}" if path else key) if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", key) else f"[{_quoted(key)}]"
    return (path + step)[:MAX_PATH]


class CanonicalFormError(ValueError):
    """A document RFC 8785 has no form for, so nobody can have signed it.

    NaN and infinities, text that is not Unicode (a lone surrogate), and integers beyond
    ±(2**53 - 1): JCS writes numbers as IEEE doubles do, and a larger integer would read
    back as another number (2**63 - 1 as 9223372036854775808).
    """


def signed_form(document: dict) -> bytes:
    """The bytes a clinic signs: `document` without `signature`, in RFC 8785 (JCS) form, UTF-8.

    For a document without fractional numbers this equals the event log's canonical form
    (`events.canonical`, UTF-8); with them it differs (`1.0` is `1`, `2.5e-7` stays
    `2.5e-7` where Python writes `2.5e-07`). CanonicalFormError when there is no JCS form.

        >>> signed_form({"version": 2, "period": 0.5, "x": 1.0, "signature": {}})
        b'{"period":0.5,"version":2,"x":1}'
    """
    import rfc8785  # pure Python and small, but only needed where a document is signed or applied
    body = {key: value for key, value in document.items() if key != "signature"}
    try:
        return rfc8785.dumps(body)
    except rfc8785.CanonicalizationError as error:
        raise CanonicalFormError(f"no RFC 8785 form: {error}") from None


def digest(document: dict) -> str:
    """sha256 (hex) of the signed form: the `digest` a `schedule.applied` carries.

    A document with no RFC 8785 form (only a local one: it cannot have been signed, say a
    `version` of 2**63 - 1) is hashed in the event log's canonical form instead.
    """
    try:
        data = signed_form(document)
    except CanonicalFormError:
        from .events import canonical
        data = canonical({key: value for key, value in document.items() if key != "signature"}).encode("utf-8")
    return hashlib.sha256(data).hexdigest()
