"""The edge's own failures. Bad data from the wire is ``protocol.ProtocolError``; these are
local."""

from __future__ import annotations


class EdgeError(Exception):
    reason = "edge-error"

    def __str__(self) -> str:
        return f"{self.reason}: {super().__str__()}"


class StorageError(EdgeError):
    """A write, fsync or rename on the device failed (disk full, read-only, I/O error)."""

    reason = "write-failed"


class ActivationError(EdgeError):
    """The model failed to load in onnxruntime or to run one inference."""

    reason = "load-failed"


class AcceptanceError(ActivationError):
    """The model runs, but its outputs miss the release's signed acceptance vectors."""

    reason = "acceptance-failed"

    def __init__(self, message: str, *, max_error: float) -> None:
        super().__init__(message)
        self.max_error = max_error
