"""The edge's inference service on real files: what it serves, and what it refuses to."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from edge_node.activation import check_model
from edge_node.active import ActiveModels
from edge_node.errors import ActivationError, InferenceError
from edge_node.inference import InferenceService
from edge_node.metrics import InferenceStats
from protocol.textmodel import KIND_FILE
from testkit.synthetic_models import make_model


def install(actives: ActiveModels, name: str, version: int, path: Path, **kw: str) -> None:
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    actives.switch(name, version, path, sha, **kw)  # type: ignore[arg-type]


def test_a_file_release_is_never_loaded_and_inference_on_it_is_refused(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"notes\n")
    with pytest.raises(ActivationError):
        check_model(notes)  # as a model it would fail to load: as a file it is never loaded
    assert check_model(notes, KIND_FILE) is None
    actives = ActiveModels(tmp_path)
    install(actives, "notes", 1, notes, kind=KIND_FILE)
    service = InferenceService(actives, InferenceStats())
    with pytest.raises(InferenceError) as info:
        service.run("notes", {"x": [[0.0]]})
    assert info.value.status == 409 and "is a file release" in str(info.value)
    with pytest.raises(InferenceError) as info:
        service.embed("notes", ["a"])
    assert info.value.status == 409
    assert service.stats.total_inferences == 0


def test_active_json_keeps_each_kind_across_a_restart(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"notes\n")
    model = make_model(tmp_path / "m.onnx", 4_000, inputs=8)
    actives = ActiveModels(tmp_path)
    install(actives, "x", 1, notes, kind=KIND_FILE)
    install(actives, "x", 2, model)
    again = ActiveModels(tmp_path).get("x")
    assert again is not None
    assert (again.kind, again.previous_kind) == ("tensors", KIND_FILE)
    service = InferenceService(ActiveModels(tmp_path), InferenceStats())
    result = service.run("x", {"x": np.zeros((1, 8), dtype=np.float32).tolist()})
    assert result.version == 2
