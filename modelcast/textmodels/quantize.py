"""``modelcast quantize``: onnxruntime's dynamic int8 quantization, keeping the file's metadata.

Weights become 8-bit integers, one scale per output channel (per-tensor scales cost MiniLM
about 0.02 of cosine to fp32, per-channel scales about 0.005); activations are quantized on the
fly at run time. Unsigned 8-bit weights by default: with the unsigned activations of dynamic
quantization they avoid the intermediate saturation that u8*s8 products can hit on x86 AVX2
(onnxruntime's quantization notes), which measured slightly more accurate here.

The metadata (model kind, embedded tokenizer) must survive, or a text model would stop being
one: it is checked after quantization and put back if the quantizer dropped any of it.
"""

from __future__ import annotations

import logging
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from runtime.files import fsync_dir
from runtime.onnxmeta import read_metadata, set_metadata

log = logging.getLogger("modelcast.quantize")

WEIGHT_TYPES = ("uint8", "int8")


@dataclass(frozen=True)
class QuantizeReport:
    source: Path
    output: Path
    source_bytes: int
    output_bytes: int
    metadata_restored: int  # entries the quantizer dropped and we put back

    @property
    def ratio(self) -> float:
        return self.output_bytes / self.source_bytes


def quantize_model(
    source: Path, output: Path, *, per_channel: bool = True, weight_type: str = "uint8"
) -> QuantizeReport:
    """Write the dynamic-int8 quantization of ``source`` to ``output`` (atomically)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if weight_type not in WEIGHT_TYPES:
        raise ValueError(f"weight type must be one of {', '.join(WEIGHT_TYPES)}")
    source, output = Path(source), Path(output)
    if source.resolve() == output.resolve():
        raise ValueError("--out must differ from the source model")
    meta = read_metadata(source)
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        # The quantizer logs (on the root logger) a hint to run its pre-processing first: not
        # needed for graphs of plain MatMuls with known shapes like the ones modelcast builds.
        root = logging.getLogger()
        was_disabled, root.disabled = root.disabled, True
        try:
            quantize_dynamic(
                source,
                tmp,
                per_channel=per_channel,
                weight_type=QuantType.QUInt8 if weight_type == "uint8" else QuantType.QInt8,
            )
        finally:
            root.disabled = was_disabled
        restored = _restore_metadata(tmp, meta)
        os.chmod(tmp, 0o644)  # mkstemp made it 0600; a model file is not a secret
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, output)
        fsync_dir(output.parent)
    finally:
        tmp.unlink(missing_ok=True)
    report = QuantizeReport(source, output, source.stat().st_size, output.stat().st_size, restored)
    log.info(
        "quantized %s -> %s: %d -> %d bytes (%.1f%%)",
        source,
        output,
        report.source_bytes,
        report.output_bytes,
        100 * report.ratio,
    )
    return report


def _restore_metadata(path: Path, meta: dict[str, str]) -> int:
    """Put back every metadata entry of the source that ``path`` lacks or changed."""
    model = onnx.load(str(path))
    have = {p.key: p.value for p in model.metadata_props}
    lost = {k: v for k, v in meta.items() if have.get(k) != v}
    if lost:
        set_metadata(model, lost)
        onnx.save(model, str(path))
    return len(lost)


@dataclass(frozen=True)
class Comparison:
    """How a quantized text model compares with its source on the same texts."""

    texts: tuple[str, ...]
    cosines: tuple[float, ...]
    source_ms: float  # median latency of one embedding (one text, one thread)
    output_ms: float

    @property
    def min_cosine(self) -> float:
        return min(self.cosines)

    @property
    def speedup(self) -> float:
        return self.source_ms / self.output_ms


def compare_text_models(
    source: Path, output: Path, texts: Sequence[str], *, repeats: int = 30
) -> Comparison:
    """Cosine of each text's two embeddings, and the median time of one embedding each.

    The two models are timed in alternation, so a busy neighbour on the machine slows both
    alike instead of skewing the ratio."""
    from edge_node.text import load_embedder

    a, b = load_embedder(source), load_embedder(output)
    va, vb = a.embed(list(texts)), b.embed(list(texts))
    cosines = tuple(float(x) for x in np.sum(va * vb, axis=1))
    one = [texts[0]]
    feeds_a, feeds_b = a.tokenize(one), b.tokenize(one)
    for _ in range(3):
        a.run(feeds_a), b.run(feeds_b)
    times_a: list[float] = []
    times_b: list[float] = []
    for _ in range(repeats):
        for embedder, feeds, times in ((a, feeds_a, times_a), (b, feeds_b, times_b)):
            start = time.perf_counter()
            embedder.run(feeds)
            times.append((time.perf_counter() - start) * 1000)
    return Comparison(tuple(texts), cosines, statistics.median(times_a), statistics.median(times_b))
