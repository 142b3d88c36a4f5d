"""Acceptance vectors: their wire form and caps, and running them as an edge does."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_node.activation import check_model
from edge_node.errors import AcceptanceError
from modelcast.acceptance import load_vectors, make_vectors
from protocol import (
    DEFAULT_LIMITS,
    Acceptance,
    Case,
    MalformedMessage,
    Manifest,
    OversizedMessage,
    Tensor,
)
from testkit.synthetic_models import make_model

ZERO = bytes(32)


def test_vectors_round_trip_in_the_signed_manifest_and_change_the_release_id(
    tmp_path: Path,
) -> None:
    model = make_model(tmp_path / "m.onnx", 4_000, seed=1, inputs=8)
    acceptance = load_vectors([make_vectors(model, tmp_path / "v.npz")], 1e-5)
    plain = Manifest("f", "m", 1, 10, ZERO, 4096, ZERO, 1.0, 2.0)
    signed = Manifest("f", "m", 1, 10, ZERO, 4096, ZERO, 1.0, 2.0, acceptance=acceptance)
    assert Manifest.decode(signed.encode()) == signed
    assert signed.release_id != plain.release_id and b"acceptance" not in plain.encode()


def test_an_edge_passes_its_own_outputs_and_misses_another_models(tmp_path: Path) -> None:
    model = make_model(tmp_path / "m.onnx", 4_000, seed=1, inputs=8)
    other = make_model(tmp_path / "o.onnx", 4_000, seed=2, inputs=8)
    right = load_vectors([make_vectors(model, tmp_path / "r.npz", seed=3)], 1e-5)
    error = check_model(model, acceptance=right)
    assert error is not None and error <= 1e-5
    wrong = load_vectors([make_vectors(other, tmp_path / "w.npz", seed=3)], 1e-5)
    with pytest.raises(AcceptanceError) as info:
        check_model(model, acceptance=wrong)
    assert info.value.reason == "acceptance-failed" and info.value.max_error > 1e-5
    assert "max error" in str(info.value)


def test_malformed_or_oversized_vectors_are_refused() -> None:
    good = {"dtype": "float32", "shape": [1, 2], "data": bytes(8)}
    bad_tensors = [
        {"dtype": "object", "shape": [1], "data": bytes(8)},
        {"dtype": "float32", "shape": [1, 3], "data": bytes(8)},
        {"dtype": "float32", "shape": [-1], "data": b""},
        {"dtype": "float32", "shape": [2], "data": "text"},
    ]
    for tensor in bad_tensors:
        with pytest.raises(MalformedMessage):
            Acceptance.from_dict(
                {"tolerance": 0.1, "cases": [{"inputs": {"x": tensor}, "outputs": {"y": good}}]}
            )
    with pytest.raises(MalformedMessage):
        Acceptance.from_dict(
            {"tolerance": -1, "cases": [{"inputs": {"x": good}, "outputs": {"y": good}}]}
        )
    with pytest.raises(MalformedMessage):
        Acceptance.from_dict({"tolerance": 0.1, "cases": []})
    most = DEFAULT_LIMITS.max_acceptance_bytes
    big = Tensor("uint8", (most,), bytes(most))
    with pytest.raises(OversizedMessage):
        Acceptance((Case({"x": big}, {"y": big}),), 0.1).check()
