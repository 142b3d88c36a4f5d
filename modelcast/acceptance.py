"""Making and reading acceptance vectors (``modelcast acceptance make``, ``release --acceptance``).

A vector file is an ``.npz`` holding one case: arrays ``in.NAME`` (the model's inputs) and
``out.NAME`` (the outputs expected for them). ``make`` writes one by running the model on
seeded random inputs on this machine; each edge then checks it reproduces those outputs on its
own hardware and runtime within the release's tolerance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from protocol import Acceptance, Case, Tensor
from runtime.model_check import load_session, model_inputs


def _tensor(array: np.ndarray) -> Tensor:
    array = np.ascontiguousarray(array)
    little = array.astype(array.dtype.newbyteorder("<"), copy=False)
    return Tensor(str(array.dtype.name), tuple(int(d) for d in array.shape), little.tobytes())


def make_vectors(model: Path, out: Path, *, seed: int = 0) -> Path:
    """Run ``model`` on seeded random inputs (symbolic dimensions 1) and save inputs and
    outputs as one case."""
    session = load_session(model)
    rng = np.random.default_rng(seed)

    def random_input(shape: list[int], dtype: Any) -> np.ndarray:
        if np.issubdtype(dtype, np.floating):
            return rng.standard_normal(shape).astype(dtype)
        return rng.integers(0, 2, size=shape).astype(dtype)

    feeds = model_inputs(session, random_input, error=ValueError)
    names = [o.name for o in session.get_outputs()]
    outputs = session.run(names, feeds)
    arrays = {f"in.{k}": v for k, v in feeds.items()}
    arrays.update({f"out.{k}": np.asarray(v) for k, v in zip(names, outputs, strict=True)})
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]
    return out


def load_vectors(paths: list[Path], tolerance: float) -> Acceptance:
    """Read ``.npz`` vector files (one case each) into signed-manifest form."""
    cases = []
    for path in paths:
        with np.load(path, allow_pickle=False) as npz:
            inputs = {k[3:]: _tensor(npz[k]) for k in npz.files if k.startswith("in.")}
            outputs = {k[4:]: _tensor(npz[k]) for k in npz.files if k.startswith("out.")}
        if not inputs or not outputs:
            raise ValueError(f"{path}: needs in.NAME and out.NAME arrays")
        cases.append(Case(inputs, outputs))
    acceptance = Acceptance(tuple(cases), float(tolerance))
    acceptance.check()
    return acceptance
