"""Delivery throughput against chunk size (the data of ``docs/bench-chunk-size.png``).

For each chunk size the delivery of ``bench.delivery`` (median of ``reps`` paired runs)
against plain paho moving the same bytes in the same chunk size. Not a target: it shows where
the per-chunk costs (one request per half window, one hash call, one write, one state update)
stop mattering.
"""

from __future__ import annotations

from typing import Any

from .common import KIB, MB, Bench
from .delivery import measure_pair

CHUNK_SIZES = (64 * KIB, 128 * KIB, 256 * KIB, 512 * KIB, 960 * KIB)


def run(b: Bench) -> dict[str, Any]:
    size = b.size(16, 64)
    reps = int(b.pick(1, 3))
    model = b.model(size, seed=8)
    points = []
    for chunk_size in CHUNK_SIZES:
        detail = measure_pair(b, model, chunk_size, "cs", reps)
        b.progress(
            f"chunk sweep: {chunk_size // KIB} KiB: modelcast {detail['modelcast_mb_s']} MB/s, "
            f"paho {detail['raw_mb_s']} MB/s, ratio {detail['ratio']}"
        )
        points.append(detail)
    return {"chunk_sweep": {"size_bytes": size, "size_mb": size / MB, "points": points}}
