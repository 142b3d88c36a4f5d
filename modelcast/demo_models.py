"""The models ``modelcast demo`` ships, and the question it asks the edges.

With the ``models`` extra and the MiniLM weights installed, the demo ships the real
all-MiniLM-L6-v2: release 1 is the fp32 build, release 2 its int8 quantization, and after each
roll-out every edge answers a similarity query on its local endpoint, tokenising on the device.
Without them it ships synthetic dense models of ``--size-mb``, as before.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from testkit.synthetic_models import make_model

from .textmodels.samples import CASES

MODEL_CHOICES = ("auto", "minilm", "synthetic")


@dataclass(frozen=True)
class DemoRelease:
    path: Path
    label: str


@dataclass(frozen=True)
class DemoModels:
    name: str
    first: DemoRelease
    second: DemoRelease
    text: bool


def resolve_choice(choice: str) -> str:
    """``auto``: MiniLM where it can be built here, else the synthetic model."""
    if choice not in MODEL_CHOICES:
        raise ValueError(f"--model must be one of {', '.join(MODEL_CHOICES)}")
    if choice != "auto":
        return choice
    from .textmodels.sources import minilm_available

    return "minilm" if minilm_available() else "synthetic"


def _mb(path: Path) -> str:
    return f"{path.stat().st_size / (1 << 20):.1f} MB"


def prepare_models(
    choice: str, workdir: Path, size_bytes: int, note: Callable[[str], None]
) -> DemoModels:
    if resolve_choice(choice) == "synthetic":
        v1 = make_model(workdir / "model-v1.onnx", size_bytes, seed=1)
        v2 = make_model(workdir / "model-v2.onnx", size_bytes, seed=2)
        return DemoModels(
            "demo-model",
            DemoRelease(v1, f"synthetic, {_mb(v1)}"),
            DemoRelease(v2, f"synthetic, {_mb(v2)}"),
            text=False,
        )
    from .textmodels.build import build_minilm
    from .textmodels.quantize import quantize_model

    note("building all-MiniLM-L6-v2 from its published weights (fp32), then its int8 variant")
    built = build_minilm(workdir / "minilm")
    int8 = workdir / "minilm" / "model-int8.onnx"
    quantize_model(built.model, int8)
    return DemoModels(
        "minilm",
        DemoRelease(built.model, f"fp32, {_mb(built.model)}"),
        DemoRelease(int8, f"int8, {_mb(int8)}"),
        text=True,
    )


@dataclass(frozen=True)
class SimilarityAnswer:
    version: int
    best: str
    best_score: float
    other_scores: tuple[float, ...]
    latency_ms: float


def similarity_question() -> tuple[str, list[str]]:
    """The demo's query and its candidates (the related sentence first)."""
    case = CASES[0]
    return case.query, [case.related, *case.unrelated]


def ask_similarity(port: int, model: str, timeout: float = 30.0) -> SimilarityAnswer:
    """Ask the edge on ``port`` which candidate is closest to the demo query."""
    query, candidates = similarity_question()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/models/{model}/infer",
        data=json.dumps({"texts": [query, *candidates]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        answer = json.load(resp)
    q, *vectors = answer["embeddings"]
    scores = [sum(a * b for a, b in zip(q, v, strict=True)) for v in vectors]
    ranked = sorted(zip(scores, candidates, strict=True), reverse=True)
    return SimilarityAnswer(
        version=int(answer["version"]),
        best=ranked[0][1],
        best_score=ranked[0][0],
        other_scores=tuple(score for score, _ in ranked[1:]),
        latency_ms=float(answer["latency_ms"]),
    )
