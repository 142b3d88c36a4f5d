"""The ``active.json`` record of what is active: each version's kind and signed sha256, the
previous version kept for rollback, across restarts and across the agent's own versions."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from edge_node.active import ActiveModels
from edge_node.storage import FINAL, MANIFEST
from tests.support.edge_fakes import pieces, release


def install(data: Path, actives: ActiveModels, version: int) -> Path:
    """A file as ``m@version``, activated (the one before it becomes the previous)."""
    path = data / "models" / "m" / str(version) / FINAL
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"model %d" % version)
    actives.switch("m", version, path, hashlib.sha256(path.read_bytes()).hexdigest())
    return path


@pytest.fixture
def actives(tmp_path: Path) -> ActiveModels:
    return ActiveModels(tmp_path)


def test_a_new_version_makes_the_active_one_previous_with_its_signed_sha256(
    tmp_path: Path, actives: ActiveModels
) -> None:
    v1 = install(tmp_path, actives, 1)
    v2 = install(tmp_path, actives, 2)
    again = ActiveModels(tmp_path).get("m")
    assert again is not None and (again.version, again.path) == (2, v2)
    assert (again.previous_version, again.previous_path) == (1, v1)
    assert again.previous_sha256 == hashlib.sha256(v1.read_bytes()).hexdigest()


def test_reactivating_the_active_version_keeps_its_previous_one(
    tmp_path: Path, actives: ActiveModels
) -> None:
    v1 = install(tmp_path, actives, 1)
    v2 = install(tmp_path, actives, 2)
    sha = hashlib.sha256(v2.read_bytes()).hexdigest()
    again = actives.switch("m", 2, v2, sha)
    assert (again.previous_version, again.previous_path) == (1, v1)
    assert again.previous_sha256 == hashlib.sha256(v1.read_bytes()).hexdigest()
    assert v1.exists()


def test_an_older_record_finds_the_previous_hash_in_the_manifest_kept_beside_it(
    tmp_path: Path,
) -> None:
    chunks = pieces(3)
    rel = release(version=1, chunks=chunks)
    directory = tmp_path / "models" / "m" / "1"
    directory.mkdir(parents=True)
    (directory / MANIFEST).write_bytes(rel.envelope)
    pointer = {
        "m": {
            "version": 2,
            "path": str(tmp_path / "models" / "m" / "2" / FINAL),
            "sha256": "00" * 32,
            "previous_version": 1,
            "previous_path": str(directory / FINAL),
        }
    }
    (tmp_path / "active.json").write_text(json.dumps(pointer))
    active = ActiveModels(tmp_path).get("m")
    assert active is not None and active.previous_sha256 == rel.manifest.sha256.hex()
