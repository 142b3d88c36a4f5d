"""What the agent measures between two metrics samples: inferences per model version and the
process's own footprint. Inference calls come from HTTP threads; everything is locked."""

from __future__ import annotations

import math
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol import ModelStats

#: latencies kept per model and interval; beyond it, a uniform sample (enough for p95)
MAX_LATENCIES = 10_000


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of already sorted values (None for no values)."""
    if not sorted_values:
        return None
    rank = max(1, min(len(sorted_values), math.ceil(q / 100 * len(sorted_values))))
    return sorted_values[rank - 1]


@dataclass
class _Window:
    version: int
    inferences: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)


class InferenceStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, int], _Window] = {}
        self.total_inferences = 0
        self.total_errors = 0

    def record(self, model: str, version: int, latency_ms: float | None, ok: bool) -> None:
        with self._lock:
            w = self._windows.setdefault((model, version), _Window(version))
            w.inferences += 1
            self.total_inferences += 1
            if not ok:
                w.errors += 1
                self.total_errors += 1
            if latency_ms is not None and len(w.latencies) < MAX_LATENCIES:
                w.latencies.append(latency_ms)

    def take(self) -> tuple[tuple[ModelStats, ...], ModelStats]:
        """Per-model-version statistics since the previous call, and the totals."""
        with self._lock:
            windows, self._windows = self._windows, {}
        per_model: list[ModelStats] = []
        every: list[float] = []
        inferences = errors = 0
        for (name, _version), w in sorted(windows.items()):
            lat = sorted(w.latencies)
            every.extend(lat)
            inferences += w.inferences
            errors += w.errors
            per_model.append(
                ModelStats(
                    model=name,
                    version=w.version,
                    inferences=w.inferences,
                    errors=w.errors,
                    latency_p50_ms=percentile(lat, 50),
                    latency_p95_ms=percentile(lat, 95),
                )
            )
        every.sort()
        totals = ModelStats(
            "all", 0, inferences, errors, percentile(every, 50), percentile(every, 95)
        )
        return tuple(per_model), totals


class ProcessSampler:
    """CPU share since the previous sample, resident memory, free disk, uptime."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.started = time.monotonic()
        self._last_wall = self.started
        self._last_cpu = _cpu_seconds()

    def sample(self) -> dict[str, Any]:
        now = time.monotonic()
        cpu = _cpu_seconds()
        wall = now - self._last_wall
        cpu_pct = 100.0 * (cpu - self._last_cpu) / wall if wall > 0 else 0.0
        self._last_wall, self._last_cpu = now, cpu
        try:
            free = shutil.disk_usage(self.data_dir).free / (1 << 20)
        except OSError:
            free = 0.0
        return {
            "interval_s": round(wall, 3),
            "uptime_s": round(now - self.started, 3),
            "cpu_pct": round(cpu_pct, 2),
            "rss_mb": round(rss_bytes() / (1 << 20), 2),
            "disk_free_mb": round(free, 1),
        }


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def rss_bytes() -> int:
    """Current resident set size (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
