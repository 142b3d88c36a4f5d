"""How well the calibrated drift thresholds do on the written data of tests/data/drift, with a
real text model: the false-alarm rate on fresh in-domain windows, the detection rate on windows
of other domains, and on windows of 30 % other domain and 70 % in-domain.

The profile is fitted (and calibrated) on support_reference.txt only. Fresh in-domain windows
are drawn without replacement from support_fresh.txt (texts the profile never saw); shifted
ones from cooking.txt and sports.txt. Each window is scored as the coordinator scores a
device's window (sketch, then ``runtime.drift_score.score``).

``python -m tests.support.drift_eval MODEL.onnx`` prints the table docs/DRIFT.md shows.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from protocol import DriftProfile
from runtime.drift_profile import fit_profile
from runtime.drift_score import ProfileArrays, score
from runtime.drift_sketch import DriftSketch, noisy

DATA = Path(__file__).parents[1] / "data" / "drift"
SIZES = (20, 50, 100)
WINDOWS = 1000
MIX = 0.3


def texts(name: str) -> list[str]:
    return [t for t in (DATA / name).read_text(encoding="utf-8").splitlines() if t.strip()]


@dataclass(frozen=True)
class Vectors:
    reference: np.ndarray
    fresh: np.ndarray
    shifted: dict[str, np.ndarray]


def embed_data(model: Path) -> Vectors:
    from edge_node.text import load_embedder

    embedder = load_embedder(model)

    def embed(name: str) -> np.ndarray:
        t = texts(name)
        return np.concatenate([embedder.embed(t[i : i + 64]) for i in range(0, len(t), 64)])

    shifted = {name: embed(f"{name}.txt") for name in ("cooking", "sports")}
    return Vectors(embed("support_reference.txt"), embed("support_fresh.txt"), shifted)


def flagged_window(
    profile: DriftProfile,
    arrays: ProfileArrays,
    x: np.ndarray,
    epsilon: float | None = None,
    rng: np.random.Generator | None = None,
) -> bool:
    sketch = DriftSketch(arrays)
    sketch.update(x)
    window = sketch.take(1)
    assert window is not None
    if epsilon is not None:
        window = noisy(window, epsilon, rng or np.random.default_rng(0))
    return score(profile, window).drifted


def rates(
    profile: DriftProfile,
    v: Vectors,
    n: int,
    windows: int = WINDOWS,
    seed: int = 1,
    epsilon: float | None = None,
) -> dict[str, float]:
    """Share of flagged windows of ``n`` vectors: fresh in-domain, each other domain, each
    other domain mixed in at 30 % (with privacy noise of ``epsilon``, if given)."""
    rng = np.random.default_rng(seed)
    arrays = ProfileArrays.of(profile)

    def flagged(profile: DriftProfile, arrays: ProfileArrays, x: np.ndarray) -> bool:
        return flagged_window(profile, arrays, x, epsilon, rng)

    def draw(pool: np.ndarray, k: int) -> np.ndarray:
        return pool[rng.choice(len(pool), k, replace=False)]

    out = {"fresh": np.mean([flagged(profile, arrays, draw(v.fresh, n)) for _ in range(windows)])}
    k = round(n * MIX)
    for name, pool in v.shifted.items():
        out[name] = np.mean([flagged(profile, arrays, draw(pool, n)) for _ in range(windows)])
        out[f"{name} 30%"] = np.mean(
            [
                flagged(profile, arrays, np.vstack([draw(pool, k), draw(v.fresh, n - k)]))
                for _ in range(windows)
            ]
        )
    return {name: float(rate) for name, rate in out.items()}


def main(argv: list[str]) -> int:
    v = embed_data(Path(argv[0]))
    profile = fit_profile(v.reference)
    print(f"profile: {profile.encoded_size} bytes, explains {profile.explained:.0%}")
    for n in SIZES:
        r = rates(profile, v, n)
        print(f"n={n}: " + ", ".join(f"{k} {100 * x:.1f}%" for k, x in r.items()))
    for epsilon in (1.0, 10.0):
        r = rates(profile, v, 100, windows=300, epsilon=epsilon)
        print(
            f"n=100 epsilon={epsilon:g}: " + ", ".join(f"{k} {100 * x:.1f}%" for k, x in r.items())
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
