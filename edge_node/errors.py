"""The edge's own failures, under one root. Bad data from the wire is
``protocol.ProtocolError``; these are local."""

from __future__ import annotations

from protocol.errors import ModelcastError


class EdgeError(ModelcastError):
    """The root of the edge's errors."""


class ReportedFailure(EdgeError):
    """A failure the edge reports with a stable ``reason`` code (an event, its state topic)."""

    reason = "edge-error"

    def __str__(self) -> str:
        return f"{self.reason}: {super().__str__()}"


class StorageError(ReportedFailure):
    """A write, fsync or rename on the device failed (disk full, read-only, I/O error)."""

    reason = "write-failed"


class ActivationError(ReportedFailure):
    """The model failed to load in onnxruntime or to run one inference."""

    reason = "load-failed"


class AcceptanceError(ActivationError):
    """The model runs, but its outputs miss the release's signed acceptance vectors."""

    reason = "acceptance-failed"

    def __init__(self, message: str, *, max_error: float) -> None:
        super().__init__(message)
        self.max_error = max_error


class InferenceError(EdgeError):
    """A local inference request cannot be served (no such model, bad inputs, the model
    failed); ``status`` is the HTTP status the local endpoint answers with."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class TextModelError(EdgeError, ValueError):
    """The model cannot serve texts here: not a text model, a broken spec, no tokenizer
    library."""
