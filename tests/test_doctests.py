"""Every docstring example in the product runs: an example that drifted from the code fails here.

Examples that need a real device, a broker or a file say `# doctest: +SKIP` where they stand.
"""
from __future__ import annotations

import doctest
import importlib
import logging
import pkgutil
from pathlib import Path

import pytest

import dispenser

ROOT = Path(__file__).resolve().parents[1]


def modules_with_examples() -> list[str]:
    """Every module of the package (and the harness beside the tests) whose source shows `>>>`."""
    names = []
    for info in pkgutil.walk_packages(dispenser.__path__, "dispenser."):
        spec = importlib.util.find_spec(info.name)
        if spec and spec.origin and spec.origin.endswith(".py") and ">>>" in Path(spec.origin).read_text():
            names.append(info.name)
    for path in sorted((ROOT / "harness").glob("*.py")):
        if ">>>" in path.read_text():
            names.append(f"harness.{path.stem}")
    return sorted(names)


MODULES = modules_with_examples()


def test_the_examples_are_found():
    assert len(MODULES) >= 20 and "dispenser.virtual" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    root = logging.getLogger("dispenser")  # journal's example configures it, as the daemon does
    saved = root.handlers[:], root.level, root.propagate
    try:
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    finally:
        root.handlers[:], root.level, root.propagate = saved
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed"
