"""``modelcast prune``: magnitude pruning, per tensor, and what it costs and saves.

In each weight tensor it prunes, the ``sparsity`` fraction of weights with the smallest
magnitudes becomes exactly zero (per tensor, not over the whole model: a global threshold
would empty the tensors whose weights are small by construction). What it never prunes, and
why (each skipped tensor is counted under its reason):

* ``not-float``: integer tensors (shapes, indices, quantized weights): zeroing them changes
  what they mean, not how much they weigh;
* ``1-d``: biases, LayerNorm scales and shifts, and scalars: few bytes, and each element
  steers a whole channel;
* ``small``: tensors under ``MIN_ELEMENTS`` elements: nothing to gain;
* ``embedding``: the table of a ``Gather`` (token and position embeddings): pruning it erases
  tokens outright instead of thinning a sum;
* ``quantization``: anything a quantization operator reads (scales, zero points).

The report says the accuracy cost (a text-embedding model: the cosine of each built-in
sentence's embedding to the source's; any other: the outputs' difference on generated inputs)
and the size on the wire: the file cut in chunks of the default size, each compressed as the
coordinator does (``protocol.ChunkCompressor``), before and after.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from protocol import DEFAULT_CHUNK_SIZE, ChunkCompressor
from runtime.files import write_atomic

from .errors import CommandError

#: tensors with fewer elements are never pruned
MIN_ELEMENTS = 1024
_QUANT_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear")


@dataclass(frozen=True)
class PruneResult:
    source: Path
    output: Path
    sparsity: float
    tensors_pruned: int
    weights_zeroed: int
    weights_total: int  # every element of every float initializer
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> tensors


def load_model(path: Path) -> onnx.ModelProto:
    """The ONNX model in ``path`` (``CommandError`` saying why when it is not one)."""
    try:
        model = onnx.load(str(path))
    except FileNotFoundError:
        raise CommandError(f"{path}: no such file") from None
    except Exception as exc:  # protobuf's DecodeError and friends
        raise CommandError(f"{path} is not an ONNX model: {exc}") from None
    if not model.graph.node:
        raise CommandError(f"{path} is not an ONNX model: it has no graph")
    return model


def prune_model(source: Path, output: Path, sparsity: float) -> PruneResult:
    """Write ``source`` pruned to ``sparsity`` per tensor to ``output`` (atomically)."""
    if not 0.0 <= sparsity < 1.0:
        raise CommandError(f"sparsity {sparsity} is not a fraction in [0, 1)")
    if source.resolve() == output.resolve():
        raise CommandError("--out must differ from the source model")
    model = load_model(source)
    protected = _protected(model)
    skipped: Counter[str] = Counter()
    pruned = zeroed = total = 0
    for init in model.graph.initializer:
        w = numpy_helper.to_array(init)
        if np.issubdtype(w.dtype, np.floating):
            total += w.size
        why = _skip_reason(init.name, w, protected)
        if why is not None:
            skipped[why] += 1
            continue
        k = int(sparsity * w.size)
        if k == 0:
            continue
        flat = w.reshape(-1).copy()
        flat[np.argpartition(np.abs(flat), k - 1)[:k]] = 0
        init.CopyFrom(numpy_helper.from_array(flat.reshape(w.shape), init.name))
        pruned += 1
        zeroed += k
    write_atomic(output, model.SerializeToString())
    return PruneResult(source, output, sparsity, pruned, zeroed, total, dict(skipped))


def _protected(model: onnx.ModelProto) -> dict[str, str]:
    """Initializers that must not be pruned whatever their shape: name -> reason."""
    out: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type == "Gather" and node.input:
            out.setdefault(node.input[0], "embedding")
        if node.op_type in _QUANT_OPS or node.op_type.startswith("QLinear"):
            for name in node.input[1:]:
                out.setdefault(name, "quantization")
    return out


def _skip_reason(name: str, w: np.ndarray, protected: dict[str, str]) -> str | None:
    if not np.issubdtype(w.dtype, np.floating):
        return "not-float"
    if w.ndim < 2:
        return "1-d"
    if w.size < MIN_ELEMENTS:
        return "small"
    return protected.get(name)


def wire_bytes(path: Path, chunk_size: int = DEFAULT_CHUNK_SIZE) -> int:
    """What ``path`` costs on the wire: each chunk compressed as the coordinator sends it (one
    zstd context for the file, as the coordinator's sender keeps one)."""
    compressor = ChunkCompressor()
    with path.open("rb") as f:
        chunks = iter(lambda: f.read(chunk_size), b"")
        return sum(len(compressor.compress(c) or c) for c in chunks)


@dataclass(frozen=True)
class OutputDifference:
    """Source against pruned outputs on the same generated inputs."""

    max_abs: float
    relative: float  # ||pruned - source|| / ||source|| over every output


def output_difference(source: Path, output: Path, *, seed: int = 0) -> OutputDifference:
    """Both models run on the same random inputs (floats standard normal, integers 0..9)."""
    from runtime.model_check import load_session, model_inputs

    rng = np.random.default_rng(seed)

    def fill(shape: list[int], dtype: Any) -> np.ndarray:
        if np.issubdtype(dtype, np.floating):
            return rng.standard_normal(shape).astype(dtype)
        return rng.integers(0, 10, shape).astype(dtype)

    a, b = load_session(source), load_session(output)
    feeds = model_inputs(a, fill, error=CommandError)
    outs_a, outs_b = a.run(None, feeds), b.run(None, feeds)
    return _difference(
        (np.asarray(x, dtype=np.float64) for x in outs_a),
        (np.asarray(y, dtype=np.float64) for y in outs_b),
    )


def _difference(xs: Iterable[np.ndarray], ys: Iterable[np.ndarray]) -> OutputDifference:
    max_abs = 0.0
    diff_sq = ref_sq = 0.0
    for x, y in zip(xs, ys, strict=True):
        max_abs = max(max_abs, float(np.max(np.abs(x - y))) if x.size else 0.0)
        diff_sq += float(np.sum((x - y) ** 2))
        ref_sq += float(np.sum(x**2))
    return OutputDifference(max_abs, (diff_sq**0.5) / (ref_sq**0.5) if ref_sq else diff_sq**0.5)


def text_cosines(source: Path, output: Path, texts: list[str]) -> list[float]:
    """The cosine of each text's embedding by ``output`` to its embedding by ``source``."""
    from edge_node.text import load_embedder

    va, vb = load_embedder(source).embed(texts), load_embedder(output).embed(texts)
    return [float(x) for x in np.sum(va * vb, axis=1)]
