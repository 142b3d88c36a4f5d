"""Drift figures and score of a window of model outputs against a reference profile.

A window (``Window``) is what a device's sketch sums up: the count, the sums of each vector's
cosine to the reference centroid (and its square), the sum of its projections on the profile's
principal directions, and bin counts per direction. Windows add up, so the coordinator scores a
device over any period by adding its samples.

The figures (``figures``), for ``k`` directions of ``B`` quantile bins each:

* PSI per direction: ``sum((a - e) * ln(a / e))`` over the bins, ``e = 1/B`` (the bins are the
  reference's quantiles), ``a`` the window's share (counts + 0.5, so an empty bin is finite);
* ``psi``: their mean; ``share``: the share of directions whose PSI passes the calibrated
  ``direction_psi``;
* ``distance``: the norm of the window's mean projection, i.e. how far the window's mean is from
  the reference centroid within the principal directions (absent under differential privacy);
* ``cosine``: how much lower the window's mean cosine to the centroid is than the reference's
  (absent under differential privacy too: its noise is of the order of the figure).

The score is the largest ratio figure / calibrated threshold (``DriftThreshold`` for the
window's size): ``drifted`` when it reaches 1. A window sent with privacy noise has its PSI
thresholds raised by what the noise alone adds (``noise_allowance``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from protocol import DriftProfile, DriftSample, DriftThreshold

#: the figures a score is made of, in the order of ``DriftThreshold``'s fields after ``count``
FIGURES = ("psi", "share", "distance", "cosine")


@dataclass(frozen=True)
class ProfileArrays:
    """A profile's vectors as numpy arrays (decoded once)."""

    profile: DriftProfile
    centroid: np.ndarray  # [dims]
    unit_centroid: np.ndarray  # [dims], length 1
    directions: np.ndarray  # [k, dims]
    #: ``directions.T`` (contiguous) and the centroid's projection: ``(x - c) @ D.T`` is
    #: computed as ``x @ D.T - c @ D.T``, one product per update
    directions_t: np.ndarray  # [dims, k]
    centroid_proj: np.ndarray  # [k]
    edges: np.ndarray  # [k, bins - 1]

    @classmethod
    def of(cls, profile: DriftProfile) -> ProfileArrays:
        p = profile
        # float64 throughout: MiniLM's vectors hold values near 1e-33, whose float32 squares
        # and products underflow to subnormals, computed in microcode (5x slower, measured)
        centroid = np.frombuffer(p.centroid, dtype="<f4").astype(np.float64)
        norm = float(np.linalg.norm(centroid)) or 1.0
        directions = np.frombuffer(p.directions, "<f4").reshape(p.n_directions, p.dims)
        directions_t = np.ascontiguousarray(directions.T, dtype=np.float64)
        return cls(
            profile=p,
            centroid=centroid,
            unit_centroid=centroid / norm,
            directions=directions,
            directions_t=directions_t,
            centroid_proj=centroid @ directions_t,
            edges=np.frombuffer(p.edges, "<f4").reshape(p.n_directions, p.bins - 1).astype(float),
        )


@dataclass(frozen=True)
class Window:
    count: int
    cos_sum: float
    cos_sq_sum: float
    bins: np.ndarray  # [k, B] counts
    proj_sum: np.ndarray | None  # [k]; None when any part came with noise
    #: variance of the privacy noise in each bin count (summed over the windows added up)
    noise_var: float = 0.0

    def __add__(self, other: Window) -> Window:
        proj = (
            None
            if self.proj_sum is None or other.proj_sum is None
            else self.proj_sum + other.proj_sum
        )
        return Window(
            self.count + other.count,
            self.cos_sum + other.cos_sum,
            self.cos_sq_sum + other.cos_sq_sum,
            self.bins + other.bins,
            proj,
            self.noise_var + other.noise_var,
        )

    @classmethod
    def of_sample(cls, s: DriftSample) -> Window:
        n = s.count
        bins = np.asarray(s.bins, dtype=np.float64).reshape(s.n_directions, s.n_bins)
        proj = None if s.proj_mean is None or s.epsilon else np.asarray(s.proj_mean) * n
        noise = 0.0 if s.epsilon is None else noise_variance(s.n_directions, s.epsilon)
        return cls(n, s.cos_mean * n, (s.cos_var + s.cos_mean**2) * n, bins, proj, noise)

    def to_sample_fields(self) -> dict[str, Any]:
        """The sample's statistics (means, not sums)."""
        n = max(self.count, 1)
        mean = self.cos_sum / n
        k, b = self.bins.shape
        return {
            "count": int(self.count),
            "cos_mean": float(mean),
            "cos_var": float(max(self.cos_sq_sum / n - mean * mean, 0.0)),
            "n_directions": k,
            "n_bins": b,
            "bins": tuple(int(v) for v in self.bins.ravel()),
            "proj_mean": (
                None if self.proj_sum is None else tuple(float(v) for v in self.proj_sum / n)
            ),
        }


@dataclass(frozen=True)
class DriftScore:
    count: int
    psi: tuple[float, ...]  # per direction
    figures: dict[str, float | None]  # psi, share, distance, cosine
    score: float
    drifted: bool
    threshold: DriftThreshold

    def to_dict(self) -> dict[str, object]:
        return {
            "count": self.count,
            "score": round(self.score, 4),
            "drifted": self.drifted,
            **{k: None if v is None else round(v, 5) for k, v in self.figures.items()},
            "psi_per_direction": [round(v, 4) for v in self.psi],
        }


def laplace_scale(n_directions: int, epsilon: float) -> float:
    """The Laplace scale of the privacy noise: one vector changes the count, the cosine sum,
    its square and one bin per direction by at most 1 each (L1 sensitivity ``k + 3``)."""
    return (n_directions + 3) / epsilon


def noise_variance(n_directions: int, epsilon: float) -> float:
    return 2 * laplace_scale(n_directions, epsilon) ** 2


def noise_allowance(
    n_directions: int, bins: int, count: float, noise_var: float, false_alarm: float
) -> tuple[float, float]:
    """How much privacy noise of ``noise_var`` per bin raises the ``1 - false_alarm``
    quantiles of the mean PSI and of one direction's PSI of a window of ``count`` vectors
    from the reference: simulated (fixed seed, so a score is reproducible) and added to the
    calibrated thresholds, so noise alone does not raise alarms."""
    rng = np.random.default_rng(0)
    shape = (400, n_directions)
    clean = rng.multinomial(max(int(count), 1), [1.0 / bins] * bins, size=shape).astype(float)
    noisy = np.maximum(np.rint(clean + rng.normal(0.0, noise_var**0.5, clean.shape)), 0.0)
    pc, pn = psi_rows(clean), psi_rows(noisy)
    q = 1 - false_alarm
    mean = float(np.quantile(pn.mean(axis=1), q) - np.quantile(pc.mean(axis=1), q))
    one = float(np.quantile(pn, q) - np.quantile(pc, q))
    return max(mean, 0.0), max(one, 0.0)


def psi_rows(bins: np.ndarray) -> np.ndarray:
    """PSI of each row (any leading shape) of bin counts against equal shares."""
    b = bins.shape[-1]
    expected = 1.0 / b
    smoothed = bins + 0.5
    actual = smoothed / smoothed.sum(axis=-1, keepdims=True)
    return ((actual - expected) * np.log(actual / expected)).sum(axis=-1)  # type: ignore[no-any-return]


def raw_figures(
    ref_cos_mean: float,
    count: np.ndarray,
    cos_sum: np.ndarray,
    bins: np.ndarray,
    proj_sum: np.ndarray | None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per-direction PSI and the figures other than ``share``, for a batch of windows
    (leading axis), as the calibration computes them for thousands at once."""
    n = np.maximum(count, 1)
    psi = psi_rows(bins)
    out = {"psi": psi.mean(axis=-1)}
    if proj_sum is not None:  # exact sums (no noise): the figures of the means as well
        out["distance"] = np.linalg.norm(proj_sum / n[..., None], axis=-1)
        out["cosine"] = ref_cos_mean - cos_sum / n
    return psi, out


def score(profile: DriftProfile, window: Window) -> DriftScore:
    t = profile.threshold_for(window.count)
    if window.noise_var > 0:
        k, b = window.bins.shape
        extra_mean, extra_one = noise_allowance(
            k, b, window.bins.sum() / k, window.noise_var, profile.false_alarm
        )
        t = replace(t, psi=t.psi + extra_mean, direction_psi=t.direction_psi + extra_one)
    psi, figs = raw_figures(
        profile.ref_cos_mean,
        np.asarray([window.count]),
        np.asarray([window.cos_sum]),
        window.bins[None],
        None if window.proj_sum is None else window.proj_sum[None],
    )
    figures: dict[str, float | None] = {
        "psi": float(figs["psi"][0]),
        "share": float((psi[0] > t.direction_psi).mean()),
        "distance": float(figs["distance"][0]) if "distance" in figs else None,
        "cosine": float(figs["cosine"][0]) if "cosine" in figs else None,
    }
    limits = {"psi": t.psi, "share": t.share, "distance": t.distance, "cosine": t.cosine}
    ratio = max(v / limits[k] for k, v in figures.items() if v is not None)
    return DriftScore(
        count=window.count,
        psi=tuple(float(v) for v in psi[0]),
        figures=figures,
        score=float(ratio),
        drifted=bool(window.count >= profile.min_count and ratio >= 1.0),
        threshold=t,
    )
