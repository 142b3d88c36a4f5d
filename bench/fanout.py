"""``fanout_publish_ratio``: chunk bytes the coordinator published to deliver one release to N
edges (20; quick: 10), divided by the model size.

The edges are ``modelcast edge`` subprocesses, all online before the deploy; the figure is the
coordinator's own ``bytes_published`` counter (chunk frames, header included) once every edge
reports ``verified``. Sending to each device separately would give N; the broker's fan-out of one
publication per chunk gives 1. The model is as large as the delivery figure's (32 MB quick,
64 MB full; the first window of chunks can go out once per wave of devices that start together,
a cost that a larger model amortises).

How far apart the devices drift (and so how often a chunk is published again for the ones that
fell behind) depends on CPU scheduling when N edges share two cores; the run is repeated
(``REPS``, each with fresh edges and a fresh fleet) and the median reported, with every value.
"""

from __future__ import annotations

import statistics
from typing import Any

from .common import MB, Bench, edges_running, reached

REPS = 3


def one_rollout(b: Bench, n_edges: int, size: int, rep: int) -> dict[str, Any]:
    model = b.model(size, seed=2)
    fleet = b.fleet("fan")
    registry = b.registry(fleet)
    record = b.release(registry, fleet, model)
    service = b.coordinator(fleet)
    b.progress(f"fanout: run {rep + 1}/{REPS}: starting {n_edges} edges")
    try:
        with (
            b.watch(fleet) as watch,
            edges_running([b.edge(fleet, f"edge-{i}") for i in range(n_edges)]) as edges,
        ):
            watch.wait_online([e.device for e in edges], 120, edges)
            registry.deploy(record.name, record.version, fleet=fleet)
            for e in edges:
                watch.wait_state(e.device, reached("verified", "activating", "active"), 300, e)
            published = service.bytes_published
            chunks = service.chunks_published
            duplicates = sum(
                max((s.duplicates for s in watch.states(e.device)), default=0) for e in edges
            )
            sched = service.scheduler
    finally:
        service.stop()
        registry.close()
    ratio = published / record.size
    b.progress(
        f"fanout: run {rep + 1}/{REPS}: {chunks} chunks published for {record.n_chunks}: "
        f"{ratio:.3f}"
    )
    return {
        "ratio": round(ratio, 3),
        "size_bytes": record.size,
        "n_chunks": record.n_chunks,
        "chunks_published": chunks,
        "bytes_published": published,
        "chunks_requested": sched.chunks_requested,
        "chunks_coalesced": sched.chunks_coalesced,
        "duplicates_at_edges": duplicates,
    }


def run(b: Bench) -> dict[str, Any]:
    n_edges = int(b.pick(10, 20))
    size = b.size(32, 64)
    b.progress(f"fanout: {size / MB:.0f} MB to {n_edges} edges, median of {REPS} rollouts")
    runs = [one_rollout(b, n_edges, size, rep) for rep in range(REPS)]
    ratio = statistics.median(r["ratio"] for r in runs)
    return {
        "fanout_publish_ratio": round(ratio, 3),
        "fanout": {
            "edges": n_edges,
            "naive_ratio": n_edges,
            "ratios": [r["ratio"] for r in runs],
            "runs": runs,
        },
    }
