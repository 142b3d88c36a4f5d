"""Building a release's reference profile from the model's vectors for the reference set, and
calibrating its thresholds by bootstrap on held-out reference data.

The reference vectors are shuffled (fixed seed) and split: two thirds *fit* the profile (the
centroid, the principal directions by SVD, the quantile bin edges), one third is *held out*.
For each window size, ``windows`` windows are drawn with replacement from the held-out vectors
and scored against the profile as a device's window would be: that is the spread of each figure
on data the profile was not fitted on, which is what fresh in-domain inputs look like. Each
figure's threshold starts at its ``1 - false_alarm`` quantile; then all are scaled together so
that exactly ``false_alarm / 2`` of the bootstrap windows reach a score of 1 (half the target:
windows drawn from a finite held-out set resemble each other more than fresh ones do). Floors
keep a threshold from vanishing: at least two directions must drift for ``share``.
"""

from __future__ import annotations

import numpy as np

from protocol import DriftProfile, DriftThreshold

from .drift_score import FIGURES, ProfileArrays, raw_figures
from .drift_sketch import project
from .errors import ProfileError

__all__ = ["ProfileError", "fit_profile"]

DEFAULT_DIRECTIONS = 16
DEFAULT_BINS = 10
DEFAULT_MIN_COUNT = 20
WINDOW_SIZES = (20, 50, 100, 200, 500)
BOOTSTRAP_WINDOWS = 2000
FALSE_ALARM = 0.01
#: fewer reference vectors than this cannot both fit a profile and calibrate it
MIN_REFERENCE = 60
_FLOOR = 1e-4


def fit_profile(
    vectors: np.ndarray,
    *,
    n_directions: int = DEFAULT_DIRECTIONS,
    bins: int = DEFAULT_BINS,
    min_count: int = DEFAULT_MIN_COUNT,
    window_sizes: tuple[int, ...] = WINDOW_SIZES,
    windows: int = BOOTSTRAP_WINDOWS,
    false_alarm: float = FALSE_ALARM,
    seed: int = 0,
) -> DriftProfile:
    """The calibrated profile of ``vectors`` ([n, dims], one per reference item)."""
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2 or len(x) < MIN_REFERENCE:
        raise ProfileError(
            f"a reference needs at least {MIN_REFERENCE} items (one vector each), got "
            f"{len(x) if x.ndim == 2 else x.shape}"
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    cut = len(x) * 2 // 3
    fit, held = x[order[:cut]], x[order[cut:]]
    k = min(n_directions, fit.shape[1], cut - 1)
    untested = _fit(fit, k, bins, min_count, false_alarm, len(held), windows)
    arrays = ProfileArrays.of(untested)
    thresholds = tuple(
        calibrate_size(arrays, held, n, windows, false_alarm, rng) for n in window_sizes
    )
    return DriftProfile(**{**untested.__dict__, "thresholds": thresholds})


def _fit(
    fit: np.ndarray,
    k: int,
    bins: int,
    min_count: int,
    false_alarm: float,
    held_out: int,
    windows: int,
) -> DriftProfile:
    centroid = fit.mean(axis=0)
    centred = fit - centroid
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    directions = vt[:k]
    variance = singular**2
    proj = centred @ directions.T
    edges = np.quantile(proj, np.arange(1, bins) / bins, axis=0).T  # [k, bins - 1]
    unit = centroid / (np.linalg.norm(centroid) or 1.0)
    cos = (fit @ unit) / np.maximum(np.linalg.norm(fit, axis=1), 1e-12)
    placeholder = DriftThreshold(1, 1.0, 1.0, 1.0, 1.0, 1.0)
    return DriftProfile(
        dims=fit.shape[1],
        n_directions=k,
        bins=bins,
        centroid=centroid.astype("<f4").tobytes(),
        directions=directions.astype("<f4").tobytes(),
        edges=edges.astype("<f4").tobytes(),
        ref_count=len(fit) + held_out,
        ref_cos_mean=float(cos.mean()),
        ref_cos_std=float(cos.std()),
        explained=float(variance[:k].sum() / max(variance.sum(), 1e-12)),
        min_count=min_count,
        thresholds=(placeholder,),
        held_out=held_out,
        bootstrap_windows=windows,
        false_alarm=false_alarm,
    )


def bootstrap_figures(
    arrays: ProfileArrays, held: np.ndarray, n: int, windows: int, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per-direction PSI and figures of ``windows`` windows of ``n`` vectors drawn with
    replacement from ``held`` (the calibration's null, and the measurements' windows)."""
    cos, proj, bin_of = project(arrays, held)
    return window_figures(arrays, cos, proj, bin_of, rng.integers(0, len(held), (windows, n)))


def window_figures(
    arrays: ProfileArrays,
    cos: np.ndarray,
    proj: np.ndarray,
    bin_of: np.ndarray,
    picks: np.ndarray,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Figures of the windows whose items are the rows of ``picks`` ([windows, n] indices into
    the projected vectors)."""
    p = arrays.profile
    w, n = picks.shape
    k, b = p.n_directions, p.bins
    flat = (np.arange(w)[:, None, None] * k + np.arange(k)[None, None, :]) * b + bin_of[picks]
    counts = np.bincount(flat.ravel(), minlength=w * k * b).reshape(w, k, b)
    return raw_figures(
        p.ref_cos_mean,
        np.full(w, n),
        cos[picks].sum(axis=1),
        counts.astype(np.float64),
        proj[picks].sum(axis=1),
    )


def calibrate_size(
    arrays: ProfileArrays,
    held: np.ndarray,
    n: int,
    windows: int,
    false_alarm: float,
    rng: np.random.Generator,
) -> DriftThreshold:
    """The thresholds for windows of ``n`` (see the module docstring)."""
    psi, figs = bootstrap_figures(arrays, held, n, windows, rng)
    k = arrays.profile.n_directions
    direction_psi = max(float(np.quantile(psi, 1 - false_alarm)), _FLOOR)
    figs["share"] = (psi > direction_psi).mean(axis=1)
    floors = {"psi": _FLOOR, "share": min(1.5 / k, 1.0), "distance": _FLOOR, "cosine": _FLOOR}
    limits = {f: max(float(np.quantile(figs[f], 1 - false_alarm)), floors[f]) for f in FIGURES}
    ratio = np.max(np.stack([figs[f] / limits[f] for f in FIGURES]), axis=0)
    scale = float(np.quantile(ratio, 1 - false_alarm / 2))
    t = {f: max(limits[f] * scale, floors[f]) for f in FIGURES}
    return DriftThreshold(n, t["psi"], direction_psi, t["share"], t["distance"], t["cosine"])
