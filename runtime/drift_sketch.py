"""The device's drift sketch: every inference's output vectors update a window of sums and bin
counts against the release's reference profile (see ``drift_score`` for what they mean). Only
the window's statistics ever leave the device; the vectors are dropped once counted.

An update is one small matrix product (``vectors @ directions.T``: 384 x 16 for MiniLM) and a
comparison with the bin edges: bench ``drift_overhead_pct`` measures it against the inference.

``noisy`` adds Laplace noise for epsilon-differential privacy to a window before it is sent
(docs/DRIFT.md has the argument): one vector adds 1 to the count, at most 1 to the cosine sum
and to its square (cosines are in [-1, 1]) and 1 to one bin of each of the ``k`` directions, so
the L1 sensitivity is ``k + 3`` and each value gets noise of scale ``(k + 3) / epsilon``; the
projection sums (unbounded in L1 across 16 directions) are not sent at all.
"""

from __future__ import annotations

import threading

import numpy as np

from .drift_score import ProfileArrays, Window, laplace_scale, noise_variance


def project(arrays: ProfileArrays, vectors: np.ndarray) -> tuple[np.ndarray, ...]:
    """Cosine of each vector to the centroid, its projections on the directions and its bin
    on each direction: ``(cos [m], proj [m, k], bin [m, k])``."""
    x = np.asarray(vectors, dtype=np.float64)  # see ProfileArrays.of
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    cos = (x @ arrays.unit_centroid) / np.maximum(norms, 1e-12)
    proj = x @ arrays.directions_t - arrays.centroid_proj
    bins = (proj[:, :, None] > arrays.edges).sum(axis=2)
    return np.clip(cos, -1.0, 1.0), proj, bins


#: vectors an update holds before they are counted in one batch
FOLD_AT = 256


class DriftSketch:
    """The open window of one model version on one device. Thread-safe (inference threads
    ``update``, the telemetry tick ``take``s).

    ``update`` only keeps the vectors (a list append under the lock); they are counted in
    batches, by the update that brings ``FOLD_AT`` of them or by ``take``: right after an
    inference each numpy call costs several times what it does warm, so one vectorised batch
    of many vectors costs a fraction of counting each alone (bench ``drift_overhead_pct``).
    Vectors wait on the device, in memory, until the next telemetry tick at the latest."""

    def __init__(self, arrays: ProfileArrays) -> None:
        self.arrays = arrays
        p = arrays.profile
        self._offsets = np.arange(p.n_directions) * p.bins
        self._size = p.n_directions * p.bins
        self._lock = threading.Lock()
        self._pending: list[np.ndarray] = []
        self._pending_count = 0
        self._reset()

    def _reset(self) -> None:
        p = self.arrays.profile
        self._count = 0
        self._cos_sum = 0.0
        self._cos_sq_sum = 0.0
        self._proj_sum = np.zeros(p.n_directions, dtype=np.float64)
        self._bins = np.zeros(self._size, dtype=np.int64)

    def update(self, vectors: np.ndarray) -> None:
        """Count ``vectors`` ([m, dims]); vectors of another width are ignored."""
        if vectors.ndim != 2 or vectors.shape[1] != self.arrays.profile.dims or not len(vectors):
            return
        with self._lock:
            self._pending.append(vectors)
            self._pending_count += len(vectors)
            if self._pending_count < FOLD_AT:
                return
            self._fold_locked()

    def _fold_locked(self) -> None:
        """Count the pending vectors in one batch (under ``_lock``)."""
        if not self._pending:
            return
        vectors = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        self._pending, self._pending_count = [], 0
        cos, proj, bins = project(self.arrays, vectors)
        self._count += len(vectors)
        self._cos_sum += float(cos.sum())
        self._cos_sq_sum += float((cos * cos).sum())
        self._proj_sum += proj.sum(axis=0)
        self._bins += np.bincount((bins + self._offsets).ravel(), minlength=self._size)

    @property
    def count(self) -> int:
        with self._lock:
            return self._count + self._pending_count

    def take(self, min_count: int) -> Window | None:
        """The window, and a new one opened, once it holds ``min_count`` vectors; else None
        (the window stays open and goes on counting)."""
        p = self.arrays.profile
        with self._lock:
            if self._count + self._pending_count < min_count:
                return None
            self._fold_locked()
            window = Window(
                self._count,
                self._cos_sum,
                self._cos_sq_sum,
                self._bins.reshape(p.n_directions, p.bins).astype(np.float64),
                self._proj_sum.copy(),
            )
            self._reset()
        return window


def noisy(window: Window, epsilon: float, rng: np.random.Generator) -> Window:
    """``window`` with Laplace noise for ``epsilon``-differential privacy (see the module
    docstring); counts are rounded and kept >= 0, and the projection sums are dropped."""
    k = window.bins.shape[0]
    scale = laplace_scale(k, epsilon)
    bins = np.maximum(np.rint(window.bins + rng.laplace(0, scale, window.bins.shape)), 0)
    count = max(round(window.count + rng.laplace(0, scale)), 0)
    return Window(
        count,
        float(window.cos_sum + rng.laplace(0, scale)),
        float(max(window.cos_sq_sum + rng.laplace(0, scale), 0.0)),
        bins,
        None,
        window.noise_var + noise_variance(k, epsilon),
    )
