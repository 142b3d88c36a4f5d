"""``delivery_ratio``: a full modelcast delivery to one edge against plain paho.

modelcast side: the coordinator (in this process) and one edge (``modelcast edge`` subprocess,
``--http off``), online before the deploy. Timed from ``Registry.deploy`` to the arrival of the
edge's retained state ``verified``: the signed index and manifest, every chunk verified and
written to disk, the whole-file sha256; activation (onnxruntime) excluded. Baseline: the same
bytes, in the same chunk size, from a plain paho publisher to a plain paho subscriber through the
same broker (``bench.baseline``). Throughput ratio = baseline seconds / modelcast seconds.

The two alternate, ``reps`` times each; each pair, measured back to back, gives a ratio under the
same load, and the figure is the median of those ratios. On a shared machine the load changes
within seconds: a ratio of each side's best time would pair moments that did not coincide (one
lucky baseline run on an idle machine swings it by a third), the median of paired ratios does
not. Every time, and the ratio of the best times, are in the JSON details.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol import DEFAULT_CHUNK_SIZE

from .baseline import raw_transfer, read_chunks
from .common import MB, Bench, reached


@dataclass
class Delivery:
    seconds: float
    chunks_published: int
    bytes_published: int


def modelcast_delivery(
    b: Bench, model: Path, chunk_size: int, *, label: str = "dlv", timeout: float = 300.0
) -> Delivery:
    """One delivery of ``model`` to a fresh edge in a fresh fleet."""
    fleet = b.fleet(label)
    registry = b.registry(fleet)
    record = b.release(registry, fleet, model, chunk_size=chunk_size)
    service = b.coordinator(fleet)
    try:
        with b.watch(fleet) as watch:
            edge = b.edge(fleet, "edge-0")
            try:
                watch.wait_online([edge.device], 30, [edge])
                start = time.monotonic()
                registry.deploy(record.name, record.version, fleet=fleet)
                done, _ = watch.wait_state_received(
                    edge.device, reached("verified", "activating", "active"), timeout, edge
                )
            finally:
                edge.stop()
        return Delivery(done - start, service.chunks_published, service.bytes_published)
    finally:
        service.stop()
        registry.close()


def measure_pair(b: Bench, model: Path, chunk_size: int, label: str, reps: int) -> dict[str, Any]:
    """``reps`` alternating runs of paho and modelcast: the median of their paired ratios, and
    the details."""
    size = model.stat().st_size
    chunks = read_chunks(model, chunk_size)
    raw: list[float] = []
    mc: list[float] = []
    published = 0
    for _ in range(reps):
        raw.append(raw_transfer(b.url, f"bench/raw/{b.fleet(label)}", chunks))
        run = modelcast_delivery(b, model, chunk_size, label=label)
        mc.append(run.seconds)
        published = run.chunks_published
    best_raw, best_mc = min(raw), min(mc)
    paired = [r / m for r, m in zip(raw, mc, strict=True)]
    return {
        "size_bytes": size,
        "chunk_size": chunk_size,
        "reps": reps,
        "modelcast_s": [round(t, 3) for t in mc],
        "raw_s": [round(t, 3) for t in raw],
        "paired_ratios": [round(r, 3) for r in paired],
        "ratio": round(statistics.median(paired), 3),
        "best_ratio": round(best_raw / best_mc, 3),
        "modelcast_mb_s": round(size / MB / statistics.median(mc), 1),
        "raw_mb_s": round(size / MB / statistics.median(raw), 1),
        "best_modelcast_mb_s": round(size / MB / best_mc, 1),
        "best_raw_mb_s": round(size / MB / best_raw, 1),
        "chunks_published": published,
    }


def run(b: Bench) -> dict[str, Any]:
    size = b.size(32, 100)
    reps = 5
    model = b.model(size)
    b.progress(
        f"delivery: {size / MB:.0f} MB in {DEFAULT_CHUNK_SIZE // 1024} KiB chunks, "
        f"{reps} pairs (modelcast vs plain paho)"
    )
    detail = measure_pair(b, model, DEFAULT_CHUNK_SIZE, "dlv", reps)
    b.progress(
        f"delivery: modelcast {detail['modelcast_mb_s']} MB/s, paho {detail['raw_mb_s']} MB/s"
    )
    return {"delivery_ratio": detail["ratio"], "delivery": detail}
