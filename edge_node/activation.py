"""The last gate before a model becomes active: it must load in onnxruntime and run once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from protocol import Acceptance, Tensor
from protocol.textmodel import KIND_TEXT_EMBEDDING

from .errors import AcceptanceError, ActivationError, TextModelError
from .text import TextEmbedder, session_kind

DTYPES: dict[str, Any] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int16)": np.int16,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


#: ``fill(shape, dtype)``: an array for one model input
Fill = Callable[[list[int], Any], np.ndarray]


def model_inputs(
    session: Any, fill: Fill, *, error: Callable[[str], Exception] = ActivationError
) -> dict[str, np.ndarray]:
    """One array per input the model declares, made by ``fill`` with the input's shape (its
    symbolic dimensions 1) and numpy dtype; ``error(message)`` is raised for an input type
    numpy has no dtype for here."""
    feeds: dict[str, np.ndarray] = {}
    for inp in session.get_inputs():
        dtype = DTYPES.get(inp.type)
        if dtype is None:
            raise error(f"input {inp.name!r} has unsupported type {inp.type}")
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
        feeds[inp.name] = fill(shape, dtype)
    return feeds


def sample_inputs(session: Any) -> dict[str, np.ndarray]:
    """Zero-filled inputs shaped from the model's signature; symbolic dimensions become 1."""
    return model_inputs(session, lambda shape, dtype: np.zeros(shape, dtype=dtype))


def load_session(path: Path, threads: int = 1) -> Any:
    import onnxruntime as ort  # deferred: ~33 MB of RSS, only once a model is there

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 4  # we report failures ourselves, with the device and release
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own hierarchy (Fail, InvalidGraph, ...)
        raise ActivationError(f"onnxruntime cannot load {path.name}: {exc}") from None


def check_model(
    path: Path, kind: str | None = None, acceptance: Acceptance | None = None
) -> float | None:
    """Load ``path`` and run one inference; raise ``ActivationError`` if either fails. This is
    what keeps a model that is signed and whole, but broken, off the device.

    ``kind`` is what the release's manifest says the model is; the file must declare the same.
    A text-embedding model must embed a probe text with its own tokenizer (so a device that
    cannot tokenise refuses it here, with the reason, instead of failing every request later);
    any other model runs once on zero-filled sample inputs. With ``acceptance`` vectors, also
    run those and return the largest error (``AcceptanceError`` when it exceeds the tolerance).
    """
    session = load_session(path)
    try:
        declared = session_kind(session)
        if kind is not None and declared != kind:
            raise ActivationError(f"the release says {kind} but the file declares {declared}")
        if declared == KIND_TEXT_EMBEDDING:
            TextEmbedder(session).check()
        else:
            session.run(None, sample_inputs(session))
    except ActivationError:
        raise
    except TextModelError as exc:
        raise ActivationError(f"text model: {exc}") from None
    except Exception as exc:
        raise ActivationError(f"test inference failed: {exc}") from None
    return None if acceptance is None else run_acceptance(session, acceptance)


def _array(t: Tensor) -> np.ndarray:
    return np.frombuffer(t.data, dtype=np.dtype(t.dtype).newbyteorder("<")).reshape(t.shape)


def run_acceptance(session: Any, acceptance: Acceptance) -> float:
    """Run every case on this device's runtime; the largest absolute error over all outputs."""
    worst = 0.0
    for i, case in enumerate(acceptance.cases):
        names = sorted(case.outputs)
        try:
            got = session.run(names, {k: _array(t) for k, t in case.inputs.items()})
        except Exception as exc:
            raise AcceptanceError(
                f"acceptance case {i} failed to run: {exc}", max_error=float("inf")
            ) from None
        for name, value in zip(names, got, strict=True):
            want = _array(case.outputs[name])
            value = np.asarray(value)
            if value.shape != want.shape:
                raise AcceptanceError(
                    f"acceptance case {i}: output {name!r} has shape {list(value.shape)}, "
                    f"expected {list(want.shape)}",
                    max_error=float("inf"),
                )
            diff = np.abs(value.astype(np.float64) - want.astype(np.float64))
            error = float(np.max(diff)) if diff.size else 0.0
            worst = max(worst, error if np.isfinite(error) else float("inf"))
    if worst > acceptance.tolerance:
        raise AcceptanceError(
            f"acceptance vectors missed: max error {worst:.6g} exceeds tolerance "
            f"{acceptance.tolerance:g}",
            max_error=worst,
        )
    return worst
