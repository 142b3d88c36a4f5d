"""Synthetic ONNX models for the demo, tests and benchmarks (real graphs onnxruntime runs).

``make_model`` writes ``Y = X @ W + b`` with seeded random weights sized to roughly the bytes
asked for; ``make_failing_model`` writes one that loads but fails when run (a Reshape to a shape
its input cannot take), the case an activation check exists to catch.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(model.SerializeToString())
    os.replace(tmp, path)
    return path


def make_model(
    path: Path,
    size_bytes: int = 1 << 20,
    *,
    seed: int = 0,
    inputs: int = 256,
    batch: int | str = "batch",
) -> Path:
    """A dense layer whose float32 weights take about ``size_bytes``. ``batch``: the batch
    dimension, symbolic by default; a number makes a model that fails on any other batch size
    (it passes the activation check, which runs batch 1, and errors at serving time)."""
    outputs = max(1, math.ceil(size_bytes / (4 * inputs)))
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((inputs, outputs), dtype=np.float32)
    bias = rng.standard_normal((outputs,), dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["y"]),
        ],
        f"dense_{seed}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, inputs])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, outputs])],
        initializer=[numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="modelcast"
    )
    model.ir_version = 8
    return _save(model, path)


def make_failing_model(path: Path) -> Path:
    """Loads fine in onnxruntime, fails on the first inference."""
    shape = numpy_helper.from_array(np.array([7, 3], dtype=np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        "fails_at_run",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [7, 3])],
        initializer=[shape],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="modelcast"
    )
    model.ir_version = 8
    return _save(model, path)


def make_slow_model(path: Path, *, inputs: int = 16, width: int = 256, matmuls: int = 30) -> Path:
    """Takes ``x`` [1, inputs] like ``make_model(inputs=inputs)`` but is deliberately slow: the
    hidden vector is broadcast to a ``width`` x ``width`` matrix and multiplied ``matmuls``
    times (one shared weight, so the file stays small). For latency gates."""
    rng = np.random.default_rng(7)
    w_in = (rng.standard_normal((inputs, width)) / np.sqrt(inputs)).astype(np.float32)
    w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
    shape = np.array([width, width], dtype=np.int64)
    nodes = [
        helper.make_node("MatMul", ["x", "w_in"], ["h"]),
        helper.make_node("Expand", ["h", "shape"], ["m0"]),
    ]
    for i in range(matmuls):
        nodes.append(helper.make_node("MatMul", [f"m{i}", "w"], [f"m{i + 1}"]))
    nodes.append(helper.make_node("ReduceMean", [f"m{matmuls}"], ["y"], axes=[0], keepdims=1))
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, inputs])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])],
        initializer=[
            numpy_helper.from_array(w_in, "w_in"),
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(shape, "shape"),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="modelcast"
    )
    model.ir_version = 8
    return _save(model, path)


def perturb_model(
    src: Path,
    dst: Path,
    *,
    tensors: set[str] | None = None,
    noise: float = 1e-3,
    seed: int = 1,
    doc: str | None = None,
) -> Path:
    """A new version of the model at ``src``: each float initializer in ``tensors`` (all, if
    None) times ``1 + noise * N(0, 1)``, as training moves weights; the rest unchanged. ``doc``
    replaces the model's doc string (a new release of identical weights)."""
    model = onnx.load(str(src))
    rng = np.random.default_rng(seed)
    for i, init in enumerate(model.graph.initializer):
        if (tensors is not None and init.name not in tensors) or init.data_type != 1:
            continue
        a = numpy_helper.to_array(init)
        moved = (a * (1 + noise * rng.standard_normal(a.shape))).astype(np.float32)
        model.graph.initializer[i].CopyFrom(numpy_helper.from_array(moved, init.name))
    if doc is not None:
        model.doc_string = doc
    return _save(model, dst)
