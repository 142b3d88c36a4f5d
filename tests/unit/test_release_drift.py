"""``modelcast release --reference``: the profile built from the staged copy is signed into
the manifest; what cannot make one is refused and stores nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import protocol
from coordinator.errors import RegistryError
from coordinator.keystore import ReleaseKeys, init_keys
from coordinator.registry import Registry
from modelcast.cli import EXIT_FAILED, main
from protocol.envelope import Envelope
from protocol.textmodel import KIND_FILE, KIND_TENSORS
from runtime.drift_profile import fit_profile
from testkit.synthetic_models import make_model
from tests.unit.test_drift import cloud


def test_the_profile_is_built_from_the_staged_copy_and_signed(
    registry: Registry, keys: ReleaseKeys, tmp_path: Path
) -> None:
    model = make_model(tmp_path / "m.onnx", 4096, inputs=4)
    profile = fit_profile(cloud(np.random.default_rng(0), 90), windows=100)
    seen: list[tuple[Path, str]] = []

    def build(path: Path, kind: str) -> protocol.DriftProfile:
        seen.append((path, kind))
        return profile

    record = registry.add_release(model, name="m", version=1, keys=keys, profile=build)
    assert seen and seen[0][1] == KIND_TENSORS and seen[0][0] != model  # the copy, not the source
    body = Envelope.decode(record.manifest, 10**6).body
    assert protocol.Manifest.decode(body).drift == profile


def test_a_reference_that_cannot_make_a_profile_is_refused(
    registry: Registry, keys: ReleaseKeys, tmp_path: Path
) -> None:
    model = make_model(tmp_path / "m.onnx", 4096, inputs=4)

    def failing(path: Path, kind: str) -> protocol.DriftProfile:
        raise ValueError("a reference of texts needs a text-embedding model")

    with pytest.raises(RegistryError, match="drift reference: a reference of texts needs"):
        registry.add_release(model, name="m", version=1, keys=keys, profile=failing)
    with pytest.raises(RegistryError, match="a file release is never run"):
        registry.add_release(
            model, name="m", version=1, keys=keys, profile=failing, model_kind=KIND_FILE
        )
    assert registry.releases("default") == []


def test_the_cli_refuses_a_reference_too_small_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    init_keys(tmp_path / "k")
    model = make_model(tmp_path / "m.onnx", 4096, inputs=4)
    ref = tmp_path / "ref.txt"
    ref.write_text("one text\n\nanother\n", encoding="utf-8")
    common = ["--db", str(tmp_path / "c.db"), "--keys", str(tmp_path / "k")]
    args = ["release", str(model), "--name", "m", "--version", "1", "--reference", str(ref)]
    assert main([*args, *common]) == EXIT_FAILED
    assert "2 texts; a reference holds 60 to 100000" in capsys.readouterr().err
