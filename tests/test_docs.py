"""Documentation that cannot fall behind: every command and config key is in the docs."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from dispenser.cli import build_parser
from dispenser.config import KNOWN

ROOT = Path(__file__).resolve().parents[1]
DOCS = "\n".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])


def commands() -> list[str]:
    names = []
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                nested = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
                names += [f"{name} {n}" for a in nested for n in a.choices] or [name]
    return names


@pytest.mark.parametrize("command", commands())
def test_every_command_is_in_the_readme(command):
    assert f"dispenser {command}" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("table, key", [(t, k) for t, keys in KNOWN.items() if keys for k in sorted(keys)])
def test_every_config_key_is_documented(table, key):
    assert f"{key} =" in DOCS or f"`{table}.{key}`" in DOCS, f"[{table}] {key} is not documented"
