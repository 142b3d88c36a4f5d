"""Does a model file load in onnxruntime and answer? The check the edge runs before it activates
a release and the coordinator runs before it signs one, so that a file that is whole but broken
is refused once, at release, and still never goes live on a device whose runtime differs.

``check_model`` loads the file, checks the kind it declares against the release's, runs one
inference (sample inputs, or the caller's probe for a text model) and, given acceptance vectors,
runs every case and returns the largest error. Failures are ``ModelCheckError`` (reason
``load-failed``) and ``AcceptanceMiss`` (``acceptance-failed``), whose messages name the file,
the runtime's own message, and for acceptance vectors the case and the largest error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from protocol import Acceptance, ProtocolError, Tensor
from protocol.textmodel import KIND_TEXT_EMBEDDING, model_kind_of

from .errors import AcceptanceMiss, ModelCheckError

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
#: ``probe(session)``: the one inference of a text-embedding model (the edge embeds a text with
#: the model's own tokenizer); raises ``ModelCheckError`` saying why it failed
Probe = Callable[[Any], None]


def model_inputs(
    session: Any, fill: Fill, *, error: Callable[[str], Exception] = ModelCheckError
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


def load_session(path: Path, threads: int = 1, *, label: str | None = None) -> Any:
    """An onnxruntime session of ``path`` on the CPU (``ModelCheckError`` naming ``label``,
    default the file's name, and onnxruntime's message if it does not load; ``label`` also
    replaces the path in that message: the coordinator loads a staged copy under another
    name)."""
    import onnxruntime as ort  # deferred: ~33 MB of RSS, only once a model is there

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 4  # we report failures ourselves, with the device and release
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own hierarchy (Fail, InvalidGraph, ...)
        said = str(exc) if label is None else str(exc).replace(str(path), label)
        raise ModelCheckError(f"onnxruntime cannot load {label or path.name}: {said}") from None


def session_kind(session: Any) -> str:
    """The model kind the loaded file declares in its metadata (``ModelCheckError`` if its
    declaration is unknown)."""
    try:
        return model_kind_of(dict(session.get_modelmeta().custom_metadata_map))
    except ProtocolError as exc:
        raise ModelCheckError(str(exc)) from None


def check_model(
    path: Path,
    kind: str | None = None,
    acceptance: Acceptance | None = None,
    *,
    text_probe: Probe | None = None,
    label: str | None = None,
) -> float | None:
    """Load ``path`` and run one inference; with ``acceptance`` vectors, run those too and
    return the largest error (None without vectors). See the module docstring.

    ``kind`` is what the release says the model is; the file must declare the same. A
    text-embedding model answers ``text_probe`` when one is given (the edge's, with the
    tokenizer), and zero-filled sample inputs otherwise, like any other model.
    """
    session = load_session(path, label=label)
    declared = session_kind(session)
    if kind is not None and declared != kind:
        raise ModelCheckError(f"the release says {kind} but the file declares {declared}")
    try:
        if declared == KIND_TEXT_EMBEDDING and text_probe is not None:
            text_probe(session)
        else:
            session.run(None, sample_inputs(session))
    except ModelCheckError:
        raise
    except Exception as exc:
        raise ModelCheckError(f"test inference failed: {exc}") from None
    return None if acceptance is None else run_acceptance(session, acceptance)


def _array(t: Tensor) -> np.ndarray:
    return np.frombuffer(t.data, dtype=np.dtype(t.dtype).newbyteorder("<")).reshape(t.shape)


def run_acceptance(session: Any, acceptance: Acceptance) -> float:
    """Run every case on this runtime; the largest absolute error over all outputs
    (``AcceptanceMiss`` naming the case, output and error when it exceeds the tolerance)."""
    worst, worst_case, worst_output = 0.0, 0, ""
    for i, case in enumerate(acceptance.cases):
        for name, error in _case_errors(session, i, case.inputs, case.outputs):
            if not worst_output or error > worst:
                worst, worst_case, worst_output = error, i, name
    if worst > acceptance.tolerance:
        raise AcceptanceMiss(
            f"acceptance vectors missed: max error {worst:.6g} in case {worst_case} (output "
            f"{worst_output!r}) exceeds tolerance {acceptance.tolerance:g}",
            max_error=worst,
            case=worst_case,
        )
    return worst


def _case_errors(
    session: Any, i: int, inputs: Mapping[str, Tensor], outputs: Mapping[str, Tensor]
) -> list[tuple[str, float]]:
    """The largest absolute error of each output of case ``i`` (infinite: not finite)."""
    names = sorted(outputs)
    try:
        got = session.run(names, {k: _array(t) for k, t in inputs.items()})
    except Exception as exc:
        raise AcceptanceMiss(
            f"acceptance case {i} failed to run: {exc}", max_error=float("inf"), case=i
        ) from None
    errors = []
    for name, value in zip(names, got, strict=True):
        want = _array(outputs[name])
        value = np.asarray(value)
        if value.shape != want.shape:
            raise AcceptanceMiss(
                f"acceptance case {i}: output {name!r} has shape {list(value.shape)}, "
                f"expected {list(want.shape)}",
                max_error=float("inf"),
                case=i,
            )
        diff = np.abs(value.astype(np.float64) - want.astype(np.float64))
        error = float(np.max(diff)) if diff.size else 0.0
        errors.append((name, error if np.isfinite(error) else float("inf")))
    return errors
