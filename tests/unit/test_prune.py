"""``modelcast prune``: magnitude pruning per tensor (what it prunes, what it skips and why),
its report (accuracy cost, size on the wire) and its errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from modelcast.cli import main
from modelcast.errors import CommandError
from modelcast.pruning import prune_model, wire_bytes
from runtime.model_check import check_model

VOCAB, DIM, OUT = 100, 64, 48


def embedding_model(path: Path) -> Path:
    """ids -> Gather(embedding) -> MatMul(w) + b + small: every kind of tensor prune meets."""
    rng = np.random.default_rng(0)
    inits = {
        "emb": rng.standard_normal((VOCAB, DIM), dtype=np.float32),
        "w": rng.standard_normal((DIM, OUT), dtype=np.float32),
        "b": rng.standard_normal((OUT,), dtype=np.float32),
        "small": rng.standard_normal((4, OUT), dtype=np.float32),
    }
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["emb", "ids"], ["e"]),
            helper.make_node("MatMul", ["e", "w"], ["ew"]),
            helper.make_node("Add", ["ew", "b"], ["ewb"]),
            helper.make_node("Add", ["ewb", "small"], ["y"]),
        ],
        "prunable",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4, OUT])],
        initializer=[numpy_helper.from_array(a, n) for n, a in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"modelcast.note": "kept"})
    onnx.save(model, str(path))
    return path


def weights(path: Path) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}


def test_each_weight_tensor_loses_its_smallest_weights_and_the_rest_is_untouched(
    tmp_path: Path,
) -> None:
    src = embedding_model(tmp_path / "m.onnx")
    out = tmp_path / "p.onnx"
    r = prune_model(src, out, 0.75)
    before, after = weights(src), weights(out)
    w0, w1 = before["w"], after["w"]
    zeroed = w1 == 0
    assert zeroed.sum() == int(0.75 * w0.size)
    assert np.abs(w0[zeroed]).max() <= np.abs(w0[~zeroed]).min()  # the smallest went
    assert np.array_equal(w1[~zeroed], w0[~zeroed])
    for name in ("emb", "b", "small"):
        assert np.array_equal(after[name], before[name]), name
    assert r.tensors_pruned == 1 and r.weights_zeroed == int(0.75 * w0.size)
    assert r.skipped == {"embedding": 1, "1-d": 1, "small": 1}
    model = onnx.load(str(out))
    assert {p.key: p.value for p in model.metadata_props} == {"modelcast.note": "kept"}
    check_model(out)  # loads and answers
    assert wire_bytes(out) < 0.8 * wire_bytes(src)


def test_zero_sparsity_changes_no_weight(tmp_path: Path) -> None:
    src = embedding_model(tmp_path / "m.onnx")
    prune_model(src, tmp_path / "p.onnx", 0.0)
    before, after = weights(src), weights(tmp_path / "p.onnx")
    assert all(np.array_equal(before[n], after[n]) for n in before)


def test_the_command_reports_the_accuracy_cost_and_the_size_on_the_wire(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = embedding_model(tmp_path / "m.onnx")
    out = tmp_path / "sub" / "p.onnx"
    assert main(["prune", str(src), "--sparsity", "0.5", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"pruned {src} -> {out}: 1 tensors at 50% sparsity" in text
    assert "tensors skipped: 1-d 1, embedding 1, small 1" in text
    assert "accuracy: outputs on generated inputs differ from the source's by" in text
    lines = {line.split(":")[0]: line for line in text.splitlines()}
    assert str(wire_bytes(out)) in lines["on the wire (pruned)"]
    assert str(wire_bytes(src)) in lines["on the wire (source)"]


@pytest.mark.parametrize("bad", ["1", "1.5", "-0.1", "half"])
def test_a_bad_sparsity_is_a_usage_error(
    tmp_path: Path, bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    src = embedding_model(tmp_path / "m.onnx")
    assert main(["prune", str(src), "--sparsity", bad, "--out", str(tmp_path / "p.onnx")]) == 2
    assert "argument --sparsity" in capsys.readouterr().err
    assert not (tmp_path / "p.onnx").exists()


def test_what_is_not_a_model_is_refused_with_its_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01 certainly not protobuf \xff" * 10)
    out = tmp_path / "p.onnx"
    assert main(["prune", str(junk), "--sparsity", "0.5", "--out", str(out)]) == 1
    assert "is not an ONNX model" in capsys.readouterr().err
    assert main(["prune", str(tmp_path / "none.onnx"), "--sparsity", "0.5", "--out", str(out)]) == 1
    assert "no such file" in capsys.readouterr().err
    src = embedding_model(tmp_path / "m.onnx")
    with pytest.raises(CommandError, match="must differ"):
        prune_model(src, src, 0.5)
    assert not out.exists()
