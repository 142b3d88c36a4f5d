"""Bytes on the link against cut frequency (the data of ``docs/bench-cuts.png``).

The delivery of ``bench.flaky`` (a rate-capped link through the fault proxy) with connections
cut every 0.5-1 s, 1-3 s, 3-6 s, and never: bytes that crossed the link over the model size.
"""

from __future__ import annotations

from typing import Any

from testkit.faultproxy import SecondsSpec

from .common import MB, Bench
from .flaky import RATE, flaky_delivery

CASES: tuple[tuple[str, SecondsSpec], ...] = (
    ("none", None),
    ("3-6 s", (3.0, 6.0)),
    ("1-3 s", (1.0, 3.0)),
    ("0.5-1 s", (0.5, 1.0)),
)


def run(b: Bench) -> dict[str, Any]:
    size = b.size(8, 24)
    points = []
    for label, cuts in CASES:
        detail = flaky_delivery(b, size, cuts)
        detail["label"] = label
        b.progress(
            f"cut sweep: cuts every {label}: ratio {detail['ratio']} "
            f"({detail['cuts']} cuts, {detail['seconds']} s)"
        )
        points.append(detail)
    return {
        "cut_sweep": {
            "size_bytes": size,
            "size_mb": size / MB,
            "rate_bytes_per_s": RATE,
            "points": points,
        }
    }
