"""Local inference on the active model: the Python API behind the HTTP endpoint.

``run`` feeds named tensors to any model; ``embed`` takes texts for a text-embedding model
(tokenised here, on the device; see text.py). Inputs and outputs never leave the device; only
counts and latencies go into telemetry, and, for a release with a drift profile, each vector
updates the drift sketch (drift.py) before it is returned.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from protocol.textmodel import KIND_FILE, KIND_TEXT_EMBEDDING
from runtime.model_check import DTYPES

from .activation import load_session
from .active import ActiveModel, ActiveModels
from .drift import DriftMonitor
from .errors import ActivationError, InferenceError, TextModelError
from .integrity import ModelIntegrity
from .metrics import InferenceStats
from .text import TextEmbedder, check_texts, session_kind

if TYPE_CHECKING:
    from runtime.drift_sketch import DriftSketch


@dataclass(frozen=True)
class InferenceResult:
    model: str
    version: int
    outputs: dict[str, np.ndarray]
    latency_ms: float


@dataclass(frozen=True)
class EmbeddingResult:
    model: str
    version: int
    vectors: np.ndarray  # [texts, dimensions], rows of unit length
    latency_ms: float  # tokenising included


@dataclass(frozen=True)
class _Loaded:
    version: int
    session: Any
    embedder: TextEmbedder | None  # set for a text-embedding model
    sketch: DriftSketch | None = None  # set when the release carries a drift profile


class InferenceService:
    """Runs the active version of a model. Sessions are cached per (name, version), so an
    activation switches callers to the new version on their next call. A session is only ever
    loaded from a file that matched its signed sha256 just before (``integrity``); while the
    active file is corrupt, the previous version is served if its file matches, and otherwise
    the call is refused with 503."""

    def __init__(
        self,
        actives: ActiveModels,
        stats: InferenceStats,
        threads: int = 1,
        integrity: ModelIntegrity | None = None,
        drift: DriftMonitor | None = None,
    ) -> None:
        self.actives = actives
        self.stats = stats
        self.threads = threads
        self.integrity = integrity or ModelIntegrity(actives)
        self.drift = drift
        self._lock = threading.Lock()
        self._sessions: dict[str, _Loaded] = {}

    def models(self) -> dict[str, int]:
        return self.actives.versions()

    def _load(self, name: str) -> _Loaded:
        active = self.actives.get(name)
        if active is None:
            raise InferenceError(f"no active model named {name!r}", status=404)
        if active.kind == KIND_FILE:
            raise InferenceError(
                f"{name}@{active.version} is a file release (model_kind {KIND_FILE}): it is "
                "delivered and verified on this device, never run",
                status=409,
            )
        with self._lock:
            cached = self._sessions.get(name)
            if cached is not None and cached.version == active.version:
                return cached
            version, path = self._verified(active)
            if cached is None or cached.version != version:
                cached = self._open(name, version, path)
                self._sessions[name] = cached
            return cached

    def _verified(self, active: ActiveModel) -> tuple[int, Path]:
        """The version to load a session of, and its file, checked against its signed sha256:
        the active one, or while that is corrupt the previous one if its file matches (503 if
        neither does)."""
        corruption = self.integrity.check(active.name)
        if corruption is None:
            return active.version, active.path
        fallback = corruption.fallback
        if fallback is None or fallback.kind == KIND_FILE:
            raise InferenceError(
                f"{active.name}@{active.version}: its file on this device is corrupt (sha256 "
                f"mismatch) and is being repaired; {corruption.meanwhile()}",
                status=503,
            )
        return fallback.version, fallback.path

    def _open(self, name: str, version: int, path: Path) -> _Loaded:
        try:
            session = load_session(path, self.threads)
        except ActivationError as exc:
            raise InferenceError(f"{name}@{version}: {exc}", status=500) from None
        embedder = None
        try:
            if session_kind(session) == KIND_TEXT_EMBEDDING:
                embedder = TextEmbedder(session)
        except TextModelError as exc:  # activation checked it: only if the host changed
            raise InferenceError(f"{name}@{version}: {exc}", status=500) from None
        sketch = None if self.drift is None else self.drift.sketch_for(name, version, path)
        return _Loaded(version, session, embedder, sketch)

    def embed(self, name: str, texts: list[str]) -> EmbeddingResult:
        """One vector per text from text-embedding model ``name`` (400 if it is not one)."""
        loaded = self._load(name)
        if loaded.embedder is None:
            raise InferenceError(
                f"{name}@{loaded.version} is not a text-embedding model: send "
                '{"inputs": {...}} instead of texts'
            )
        start = time.perf_counter()
        try:
            feeds = loaded.embedder.tokenize(check_texts(texts))
        except TextModelError as exc:
            self.stats.record(name, loaded.version, None, ok=False)
            raise InferenceError(str(exc)) from None
        try:
            vectors = loaded.embedder.run(feeds)
        except Exception as exc:
            self.stats.record(name, loaded.version, None, ok=False)
            raise InferenceError(f"{name}@{loaded.version} failed: {exc}", status=500) from None
        latency_ms = (time.perf_counter() - start) * 1000
        self.stats.record(name, loaded.version, latency_ms, ok=True)
        if loaded.sketch is not None:  # counted, then dropped: vectors never leave the device
            loaded.sketch.update(vectors)
        return EmbeddingResult(name, loaded.version, vectors, latency_ms)

    def run(self, name: str, inputs: dict[str, Any]) -> InferenceResult:
        loaded = self._load(name)
        version, session = loaded.version, loaded.session
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
