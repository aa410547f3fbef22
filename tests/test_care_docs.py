"""docs/CARE.md cannot fall behind the care service: every key of care.toml and every
`dispenser care` command is in it."""
from __future__ import annotations

from pathlib import Path

import pytest

from dispenser.care.config import KNOWN
from test_docs import commands

CARE_DOC = (Path(__file__).resolve().parents[1] / "docs" / "CARE.md").read_text()


@pytest.mark.parametrize("table, key", [(t, k) for t, keys in KNOWN.items() for k in sorted(keys)])
def test_every_care_config_key_is_in_care_md(table, key):
    assert f"\n{key} =" in CARE_DOC or f"`{table}.{key}`" in CARE_DOC, f"[{table}] {key} is not in docs/CARE.md"


@pytest.mark.parametrize("command", [c for c in commands() if c.startswith("care ")])
def test_every_care_command_is_in_care_md(command):
    assert f"`dispenser {command}" in CARE_DOC


def test_there_are_care_commands():
    assert {"care serve", "care status", "care ack", "care link"} <= set(commands())
