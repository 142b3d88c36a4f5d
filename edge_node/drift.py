"""The device's drift monitor: one sketch (``runtime.drift_sketch``) per model version whose
release carries a drift profile, fed every inference's output vectors, taken by the telemetry
tick into ``drift`` samples (``protocol.DriftSample``).

The profile comes from the signed manifest kept beside the model file (``manifest.env``,
verified when the release was downloaded). A version without one is not sketched. Only window
statistics leave the device; with ``epsilon`` set they carry Laplace noise first
(docs/DRIFT.md).

Threads: inference threads call ``sketch_for`` (once per session load) and each sketch's
``update``; the worker's telemetry tick calls ``take``. ``_lock`` guards the sketch table only.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from protocol import DEFAULT_LIMITS, Manifest, ProtocolError
from protocol.envelope import Envelope
from runtime.drift_score import ProfileArrays, Window
from runtime.drift_sketch import DriftSketch, noisy

from .storage import MANIFEST

log = logging.getLogger("modelcast.edge")


@dataclass(frozen=True)
class TakenWindow:
    model: str
    version: int
    variant: str | None
    window: Window
    epsilon: float | None


@dataclass
class _Open:
    version: int
    path: Path  # the model file: another variant of the same version is another window
    variant: str | None
    sketch: DriftSketch


def kept_profile(directory: Path) -> tuple[str | None, ProfileArrays | None]:
    """The variant and the drift profile of the manifest kept in a release's directory."""
    try:
        raw = (directory / MANIFEST).read_bytes()
        body = Envelope.decode(raw, DEFAULT_LIMITS.max_envelope_bytes).body
        manifest = Manifest.decode(body)
    except (OSError, ProtocolError):
        return None, None
    if manifest.drift is None:
        return manifest.variant, None
    return manifest.variant, ProfileArrays.of(manifest.drift)


class DriftMonitor:
    def __init__(self, epsilon: float | None = None, seed: int | None = None) -> None:
        if epsilon is not None and epsilon <= 0:
            raise ValueError(f"the drift epsilon must be positive, got {epsilon}")
        self.epsilon = epsilon
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self._open: dict[str, _Open] = {}
        self._retiring: list[tuple[str, _Open]] = []

    def sketch_for(self, name: str, version: int, model_path: Path) -> DriftSketch | None:
        """The sketch of ``name@version`` (loaded from ``model_path``), opened on first use;
        None when its release has no drift profile. A newer version retires the older one's
        window: it is still sent if it holds enough vectors by the next sample."""
        with self._lock:
            current = self._open.get(name)
            if current is not None and (current.version, current.path) == (version, model_path):
                return current.sketch
        variant, arrays = kept_profile(model_path.parent)
        with self._lock:
            current = self._open.pop(name, None)
            if current is not None and (current.version, current.path) != (version, model_path):
                self._retiring.append((name, current))
            if arrays is None:
                return None
            opened = _Open(version, model_path, variant, DriftSketch(arrays))
            self._open[name] = opened
        log.info(
            "drift: %s@%d sketched against its reference profile (%d directions)",
            name,
            version,
            arrays.profile.n_directions,
        )
        return opened.sketch

    def take(self) -> list[TakenWindow]:
        """Every window that holds at least its profile's ``min_count`` vectors (noisy when
        ``epsilon`` is set); the others stay open. Retired windows are taken or dropped."""
        with self._lock:
            candidates = [(n, o, False) for n, o in self._open.items()]
            candidates += [(n, o, True) for n, o in self._retiring]
            self._retiring = []
        taken: list[TakenWindow] = []
        for name, opened, _retired in candidates:
            window = opened.sketch.take(opened.sketch.arrays.profile.min_count)
            if window is None:
                continue
            if self.epsilon is not None:
                window = noisy(window, self.epsilon, self._rng)
            taken.append(TakenWindow(name, opened.version, opened.variant, window, self.epsilon))
        return taken
