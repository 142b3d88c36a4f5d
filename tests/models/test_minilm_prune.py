"""``modelcast prune`` on the real MiniLM: what it prunes and skips, that the result is still a
text model the edge serves, and the accuracy and wire figures it reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelcast.cli import main
from modelcast.pruning import prune_model, text_cosines, wire_bytes
from modelcast.textmodels.samples import SENTENCES
from protocol.textmodel import KIND_TEXT_EMBEDDING
from runtime.onnxmeta import read_model_kind
from tests.support.minilm import BuiltMiniLM


def test_pruned_minilm_stays_a_text_model_close_to_the_source_and_smaller_on_the_wire(
    minilm: BuiltMiniLM, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "pruned.onnx"
    r = prune_model(minilm.fp32, out, 0.3)
    assert r.tensors_pruned == 36  # the MatMul weights of 6 layers (q, k, v, o, 2 dense)
    assert r.skipped["embedding"] == 2 and r.skipped["1-d"] > 0  # word/position tables, biases
    assert read_model_kind(out) == KIND_TEXT_EMBEDDING  # the metadata survived
    cosines = text_cosines(minilm.fp32, out, list(SENTENCES))
    assert 0.85 < min(cosines) < 0.9999  # changed, and not broken
    assert wire_bytes(out) < 0.9 * wire_bytes(minilm.fp32)
    assert main(["prune", str(minilm.fp32), "--sparsity", "0.3", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"accuracy: cosine to the source on {len(SENTENCES)} sentences: min" in text
