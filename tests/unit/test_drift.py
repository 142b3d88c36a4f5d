"""Drift: the profile and the sample on the wire (caps, reasons), the device's sketch, the
score, and the calibration, on synthetic embeddings (the MiniLM figures are in
tests/models/test_drift_minilm.py)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from protocol import DEFAULT_LIMITS, DriftProfile, DriftSample, Manifest, ProtocolError
from runtime.drift_profile import ProfileError, fit_profile
from runtime.drift_score import ProfileArrays, Window, noise_allowance, psi_rows, score
from runtime.drift_sketch import DriftSketch, noisy

DIMS = 48


def cloud(rng: np.random.Generator, n: int, shift: float = 0.0) -> np.ndarray:
    """Unit vectors around one point, spread along a few latent directions; ``shift`` moves
    the mean along latent direction 0 and adds a new one."""
    latent = np.eye(DIMS)[1:9] * np.linspace(0.5, 0.15, 8)[:, None]
    x = np.eye(DIMS)[0] + rng.normal(size=(n, 8)) @ latent + rng.normal(0, 0.03, (n, DIMS))
    x[:, 1] += shift
    x[:, 20] += shift
    return x / np.linalg.norm(x, axis=1, keepdims=True)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def profile() -> DriftProfile:
    return fit_profile(cloud(np.random.default_rng(0), 300), n_directions=8, windows=500)


def window_of(profile: DriftProfile, vectors: np.ndarray) -> Window:
    sketch = DriftSketch(ProfileArrays.of(profile))
    sketch.update(vectors)
    window = sketch.take(1)
    assert window is not None
    return window


def sample_of(window: Window, **changes: Any) -> DriftSample:
    fields: dict[str, Any] = {
        "device": "d1",
        "boot": "b",
        "seq": 3,
        "ts": 1.0,
        "model": "m",
        "version": 2,
    }
    return dataclasses.replace(DriftSample(**fields, **window.to_sample_fields()), **changes)


# --- the profile in the manifest -----------------------------------------------------------
def manifest(**changes: Any) -> Manifest:
    base = Manifest("f", "m", 1, 100, b"\x01" * 32, 4096, b"\x02" * 32, 1.0, 2.0)
    return dataclasses.replace(base, **changes)


def test_the_profile_travels_signed_in_the_manifest_under_64_kib(profile: DriftProfile) -> None:
    m = manifest(drift=profile)
    assert Manifest.decode(m.encode()) == m
    assert profile.encoded_size < 64 * 1024
    assert m.release_id != manifest().release_id  # the profile is part of what is signed


def test_a_manifest_without_a_profile_keeps_its_bytes() -> None:
    assert b"drift" not in manifest().encode()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"centroid": b"\x00" * 8}, "centroid must be"),
        ({"n_directions": 65}, "directions outside"),
        ({"bins": 1}, "bins outside"),
        ({"min_count": 0}, "min_count"),
        ({"thresholds": ()}, "threshold rows"),
    ],
)
def test_a_bad_profile_is_refused_with_a_reason(
    profile: DriftProfile, change: dict[str, object], reason: str
) -> None:
    raw = dataclasses.replace(profile, **change).to_dict()  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match=reason):
        DriftProfile.from_dict(raw)


def test_a_profile_larger_than_the_cap_is_refused(profile: DriftProfile) -> None:
    small = dataclasses.replace(DEFAULT_LIMITS, max_drift_profile_bytes=1000)
    with pytest.raises(ProtocolError, match="exceeds 1000"):
        DriftProfile.from_dict(profile.to_dict(), small)


def test_thresholds_are_looked_up_by_the_largest_size_not_above_the_window(
    profile: DriftProfile,
) -> None:
    sizes = [t.count for t in profile.thresholds]
    assert profile.threshold_for(1).count == sizes[0]
    assert profile.threshold_for(sizes[1]).count == sizes[1]
    assert profile.threshold_for(sizes[1] + 1).count == sizes[1]
    assert profile.threshold_for(10**9).count == sizes[-1]


# --- the sample on the wire ----------------------------------------------------------------
def test_a_drift_sample_round_trips_and_stays_under_2_kib(profile: DriftProfile) -> None:
    sample = sample_of(window_of(profile, cloud(np.random.default_rng(1), 50)))
    data = sample.encode()
    assert len(data) <= 2048
    assert DriftSample.decode(data) == sample
    full = dataclasses.replace(
        sample, n_directions=16, n_bins=10, bins=(10**6,) * 160, proj_mean=(-1.5,) * 16
    )
    assert len(full.encode()) <= 2048  # the default shape, with large counts


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"bins": (1, 2)}, "bins must be"),
        ({"proj_mean": (0.1,)}, "proj_mean must hold"),
        ({"epsilon": -1.0}, "epsilon must be positive"),
        ({"cos_var": -0.5}, "cos_var must be"),
        ({"n_bins": 40}, "outside the caps"),
        ({"device": "a/b"}, "device id"),
    ],
)
def test_a_bad_drift_sample_is_refused_with_a_reason(
    profile: DriftProfile, change: dict[str, object], reason: str
) -> None:
    sample = sample_of(window_of(profile, cloud(np.random.default_rng(1), 30)), **change)
    with pytest.raises(ProtocolError, match=reason):
        DriftSample.decode(sample.encode())


def test_an_oversized_drift_sample_is_refused_before_decoding(profile: DriftProfile) -> None:
    sample = sample_of(window_of(profile, cloud(np.random.default_rng(1), 30)), boot="b" * 3000)
    with pytest.raises(ProtocolError, match="exceeds the cap of 2048"):
        DriftSample.decode(sample.encode())


# --- the sketch ----------------------------------------------------------------------------
def test_windows_add_up_to_the_window_of_everything(profile: DriftProfile) -> None:
    rng = np.random.default_rng(2)
    a, b = cloud(rng, 40), cloud(rng, 25)
    both, whole = (
        window_of(profile, a) + window_of(profile, b),
        window_of(profile, np.vstack([a, b])),
    )
    assert both.count == whole.count == 65
    np.testing.assert_array_equal(both.bins, whole.bins)
    assert both.proj_sum is not None and whole.proj_sum is not None
    np.testing.assert_allclose(both.proj_sum, whole.proj_sum, rtol=1e-5)
    assert both.cos_sum == pytest.approx(whole.cos_sum, rel=1e-5)
    assert whole.bins.sum() == 65 * profile.n_directions


def test_a_window_below_the_minimum_stays_open(profile: DriftProfile) -> None:
    sketch = DriftSketch(ProfileArrays.of(profile))
    rng = np.random.default_rng(3)
    sketch.update(cloud(rng, 10))
    assert sketch.take(20) is None
    sketch.update(cloud(rng, 10))
    sketch.update(np.ones((3, DIMS + 1)))  # another width: not counted
    taken = sketch.take(20)
    assert taken is not None and taken.count == 20
    assert sketch.count == 0


def test_a_sample_carries_the_window_it_was_made_of(profile: DriftProfile) -> None:
    window = window_of(profile, cloud(np.random.default_rng(4), 50))
    again = Window.of_sample(DriftSample.decode(sample_of(window).encode()))
    assert again.count == window.count
    np.testing.assert_array_equal(again.bins, window.bins)
    assert again.cos_sum == pytest.approx(window.cos_sum, rel=1e-6)
    assert score(profile, again).score == pytest.approx(score(profile, window).score, rel=1e-4)


# --- the score -----------------------------------------------------------------------------
def test_psi_is_zero_for_the_reference_shares_and_grows_with_the_shift() -> None:
    even = np.full((1, 10), 100.0)
    skewed = np.array([[300.0, *[700 / 9] * 9]])
    assert psi_rows(even)[0] == pytest.approx(0.0)
    assert psi_rows(skewed)[0] > 0.1


def test_in_domain_windows_pass_and_shifted_ones_are_flagged(profile: DriftProfile) -> None:
    rng = np.random.default_rng(5)
    fresh = [score(profile, window_of(profile, cloud(rng, 50))) for _ in range(100)]
    shifted = [score(profile, window_of(profile, cloud(rng, 50, 1.0))) for _ in range(100)]
    assert sum(s.drifted for s in fresh) <= 3
    assert sum(s.drifted for s in shifted) >= 95
    flagged = shifted[0].to_dict()
    assert flagged["drifted"] is True and len(flagged["psi_per_direction"]) == 8  # type: ignore[arg-type]


def test_a_window_below_the_profiles_minimum_is_never_flagged(profile: DriftProfile) -> None:
    rng = np.random.default_rng(6)
    tiny = score(profile, window_of(profile, cloud(rng, profile.min_count - 1, 2.0)))
    assert tiny.score >= 1 and not tiny.drifted


def test_noise_for_privacy_drops_the_means_and_keeps_counts_whole(profile: DriftProfile) -> None:
    rng = np.random.default_rng(7)
    window = window_of(profile, cloud(rng, 500))
    private = noisy(window, 1.0, rng)
    assert private.proj_sum is None
    assert np.all(private.bins >= 0) and np.all(private.bins == np.rint(private.bins))
    assert private.bins.sum() != window.bins.sum()
    figures = score(profile, private).figures
    assert figures["distance"] is None and figures["cosine"] is None
    sample = sample_of(private, epsilon=1.0)
    assert DriftSample.decode(sample.encode()).proj_mean is None


# --- calibration ---------------------------------------------------------------------------
def test_a_reference_too_small_to_calibrate_is_refused() -> None:
    with pytest.raises(ProfileError, match="at least 60"):
        fit_profile(cloud(np.random.default_rng(8), 59))


def test_thresholds_are_calibrated_per_window_size(profile: DriftProfile) -> None:
    sizes = [t.count for t in profile.thresholds]
    assert sizes == [20, 50, 100, 200, 500]
    assert profile.thresholds[0].psi > profile.thresholds[2].psi  # small windows: more noise
    assert profile.held_out == 100 and profile.ref_count == 300
    assert 0 < profile.explained <= 1


def test_privacy_noise_alone_does_not_raise_an_alarm(profile: DriftProfile) -> None:
    """The PSI thresholds of a noisy window are raised by what the noise alone adds."""
    rng = np.random.default_rng(9)
    fresh = [noisy(window_of(profile, cloud(rng, 500)), 2.0, rng) for _ in range(20)]
    assert all(w.noise_var > 0 for w in fresh)
    assert sum(score(profile, w).drifted for w in fresh) <= 1
    moved = noisy(window_of(profile, cloud(rng, 500, 1.0)), 2.0, rng)
    assert score(profile, moved).drifted
    pooled = fresh[0] + fresh[1]
    assert pooled.noise_var == pytest.approx(2 * fresh[0].noise_var)
    assert noise_allowance(8, 10, 50, 100.0, 0.01)[0] > noise_allowance(8, 10, 50, 1.0, 0.01)[0]
