"""Bit rot on the device's disk, on real model files: finding a corrupt active file (once,
with both hashes), and what inference serves meanwhile. The repair itself: the target choice,
the downloader, the activator and the index follower's tests."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from edge_node import integrity as integrity_module
from edge_node.active import ActiveModels
from edge_node.errors import InferenceError
from edge_node.inference import InferenceService
from edge_node.integrity import ModelIntegrity
from edge_node.metrics import InferenceStats
from edge_node.storage import FINAL
from testkit.synthetic_models import make_model
from tests.support.disk import flip

INPUTS = 8


def install(data: Path, actives: ActiveModels, version: int) -> Path:
    """A real model as ``m@version``, activated (the one before it becomes the previous)."""
    path = make_model(
        data / "models" / "m" / str(version) / FINAL, 40_000, seed=version, inputs=INPUTS
    )
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    actives.switch("m", version, path, sha)
    return path


def run(service: InferenceService) -> int:
    return service.run("m", {"x": np.zeros((1, INPUTS), dtype=np.float32).tolist()}).version


@pytest.fixture
def actives(tmp_path: Path) -> ActiveModels:
    return ActiveModels(tmp_path)


# --- finding it --------------------------------------------------------------------------
def test_a_flipped_active_file_is_found_once_with_both_hashes(
    tmp_path: Path, actives: ActiveModels
) -> None:
    v1 = install(tmp_path, actives, 1)
    v2 = install(tmp_path, actives, 2)
    integrity = ModelIntegrity(actives, "d1")
    assert integrity.check_all() == [] and not integrity.found
    signed = hashlib.sha256(v2.read_bytes()).hexdigest()
    flip(v2, 20_000)
    (found,) = integrity.check_all()
    assert (found.name, found.version, found.path, found.expected) == ("m", 2, v2, signed)
    assert found.actual == hashlib.sha256(v2.read_bytes()).hexdigest() != signed
    assert found.fallback is not None and (found.fallback.version, found.fallback.path) == (1, v1)
    assert found.describe() == (
        f"{v2}: sha256 {found.actual}, signed sha256 {signed}; serving m@1 until it is repaired"
    )
    assert list(integrity.found) == [found]
    assert integrity.check("m") == found and len(integrity.found) == 1  # said once
    assert integrity.repairs() == {"m": 2}
    integrity.settled("m")
    assert integrity.repairs() == {} and integrity.corrupt("m") is None


def test_a_known_corruption_is_not_hashed_again(
    tmp_path: Path, actives: ActiveModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    flip(install(tmp_path, actives, 1), 100)
    integrity = ModelIntegrity(actives)
    hashed: list[Path] = []
    real = integrity_module.file_sha256

    def counting(path: Path) -> str | None:
        hashed.append(path)
        return real(path)

    monkeypatch.setattr(integrity_module, "file_sha256", counting)
    assert integrity.check("m") is not None and integrity.check("m") is not None
    assert len(hashed) == 1


def test_a_missing_file_is_corrupt_and_a_corrupt_previous_is_no_fallback(
    tmp_path: Path, actives: ActiveModels
) -> None:
    v1 = install(tmp_path, actives, 1)
    v2 = install(tmp_path, actives, 2)
    flip(v1, 30_000)
    v2.unlink()
    (found,) = ModelIntegrity(actives).check_all()
    assert found.actual is None and found.fallback is None
    assert found.meanwhile() == (
        "its previous version m@1 is corrupt too: no inference until it is repaired"
    )


def test_a_corruption_of_a_version_no_longer_active_is_forgotten(
    tmp_path: Path, actives: ActiveModels
) -> None:
    flip(install(tmp_path, actives, 1), 100)
    integrity = ModelIntegrity(actives)
    assert integrity.check("m") is not None
    install(tmp_path, actives, 2)  # replaced meanwhile (the activator calls settled too)
    assert integrity.corrupt("m") is None and integrity.repairs() == {}


# --- serving meanwhile -------------------------------------------------------------------
def test_inference_serves_the_previous_version_while_the_active_file_is_corrupt(
    tmp_path: Path, actives: ActiveModels
) -> None:
    install(tmp_path, actives, 1)
    v2 = install(tmp_path, actives, 2)
    good = v2.read_bytes()
    flip(v2, 20_000)
    integrity = ModelIntegrity(actives)
    service = InferenceService(actives, InferenceStats(), integrity=integrity)
    assert run(service) == 1  # checked before the session was loaded
    assert integrity.repairs() == {"m": 2} and len(integrity.found) == 1
    v2.write_bytes(good)  # repaired ...
    assert run(service) == 1  # ... but not reactivated yet
    integrity.settled("m")
    assert run(service) == 2


def test_inference_answers_503_when_no_version_verifies(
    tmp_path: Path, actives: ActiveModels
) -> None:
    flip(install(tmp_path, actives, 1), 20_000)
    flip(install(tmp_path, actives, 2), 20_000)
    service = InferenceService(actives, InferenceStats())
    with pytest.raises(InferenceError) as info:
        run(service)
    assert info.value.status == 503
    assert str(info.value) == (
        "m@2: its file on this device is corrupt (sha256 mismatch) and is being repaired; its "
        "previous version m@1 is corrupt too: no inference until it is repaired"
    )
