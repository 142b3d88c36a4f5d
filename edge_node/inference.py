"""Local inference on the active model: the Python API behind the HTTP endpoint.

Inputs and outputs never leave the device; only counts and latencies go into telemetry.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .activation import DTYPES, load_session
from .active import ActiveModels
from .metrics import InferenceStats


class InferenceError(Exception):
    """The request cannot be served (no such model, bad inputs, the model failed)."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class InferenceResult:
    model: str
    version: int
    outputs: dict[str, np.ndarray]
    latency_ms: float


class InferenceService:
    """Runs the active version of a model. Sessions are cached per (name, version), so an
    activation switches callers to the new version on their next call."""

    def __init__(self, actives: ActiveModels, stats: InferenceStats, threads: int = 1) -> None:
        self.actives = actives
        self.stats = stats
        self.threads = threads
        self._lock = threading.Lock()
        self._sessions: dict[str, tuple[int, Any]] = {}

    def models(self) -> dict[str, int]:
        return self.actives.versions()

    def _session(self, name: str) -> tuple[int, Any]:
        active = self.actives.get(name)
        if active is None:
            raise InferenceError(f"no active model named {name!r}", status=404)
        with self._lock:
            cached = self._sessions.get(name)
            if cached is None or cached[0] != active.version:
                cached = (active.version, load_session(active.path, self.threads))
                self._sessions[name] = cached
            return cached

    def run(self, name: str, inputs: dict[str, Any]) -> InferenceResult:
        version, session = self._session(name)
        try:
            feeds = _feeds(session, inputs)
        except InferenceError:
            self.stats.record(name, version, None, ok=False)
            raise
        start = time.perf_counter()
        try:
            outputs = session.run(None, feeds)
        except Exception as exc:
            self.stats.record(name, version, None, ok=False)
            raise InferenceError(f"{name}@{version} failed: {exc}", status=500) from None
        latency_ms = (time.perf_counter() - start) * 1000
        self.stats.record(name, version, latency_ms, ok=True)
        names = [o.name for o in session.get_outputs()]
        return InferenceResult(name, version, dict(zip(names, outputs, strict=True)), latency_ms)


def _feeds(session: Any, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
    feeds: dict[str, np.ndarray] = {}
    expected = {i.name: i for i in session.get_inputs()}
    unknown = set(inputs) - set(expected)
    if unknown:
        raise InferenceError(
            f"unknown inputs {sorted(unknown)}; the model takes {sorted(expected)}"
        )
    for name, spec in expected.items():
        if name not in inputs:
            raise InferenceError(f"missing input {name!r}")
        try:
            feeds[name] = np.asarray(inputs[name], dtype=DTYPES.get(spec.type, np.float32))
        except (TypeError, ValueError) as exc:
            raise InferenceError(f"input {name!r}: {exc}") from None
    return feeds
