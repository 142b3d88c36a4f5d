"""The shape the code must keep (docs/ARCHITECTURE.md): module and function size ceilings.

The import layers are held by import-linter (``make lint``); these are the sizes nothing checks
otherwise. The goal is smaller (400 lines, 50-line functions); the ceiling here is the line no
change may cross.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = (
    "protocol",
    "runtime",
    "coordinator",
    "edge_node",
    "broker_admin",
    "testkit",
    "modelcast",
    "bench",
)
MODULE_CEILING = 600
FUNCTION_CEILING = 80


def _modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py"))


def _functions(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(), str(path))
    return [
        (f"{path.relative_to(REPO)}:{node.lineno} {node.name}", node.end_lineno - node.lineno + 1)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno
    ]


def test_the_packages_hold_python_modules() -> None:
    # a renamed package would make the checks below pass vacuously
    for pkg in PACKAGES:
        assert (REPO / pkg / "__init__.py").is_file(), pkg


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_module_over_the_ceiling(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MODULE_CEILING, f"{path.relative_to(REPO)} has {lines} lines"


def test_no_function_over_the_ceiling() -> None:
    too_long = [
        f"{name}: {length} lines"
        for path in _modules()
        for name, length in _functions(path)
        if length > FUNCTION_CEILING
    ]
    assert not too_long, "\n".join(too_long)
