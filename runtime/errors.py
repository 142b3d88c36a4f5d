"""The runtime's errors: what it was given cannot be used (a broker URL, a credentials file, an
ONNX file, TLS options). Each is also a ``ValueError``, as the callers' checks always were."""

from __future__ import annotations

from protocol.errors import ModelcastError


class SetupError(ModelcastError, ValueError):
    """A setting or file handed to the runtime is unusable; the message names it and why."""


class ListenError(SetupError):
    """A listening socket could not be opened; the message names the address, the cause and
    the flags that choose another (``runtime.listen``)."""

    def __init__(self, message: str, *, address: tuple[str, int], errno: int | None = None) -> None:
        super().__init__(message)
        self.address = address
        self.errno = errno


class ModelCheckError(SetupError):
    """A model file does not load in onnxruntime, or fails its one test inference
    (``runtime.model_check``). The edge reports it as ``load-failed``; the coordinator refuses
    the release."""

    reason = "load-failed"


class AcceptanceMiss(ModelCheckError):
    """The model runs, but its outputs miss the release's acceptance vectors: ``case`` is the
    case with the largest error (or the one that could not run, or answered the wrong shape:
    then ``max_error`` is infinite), ``max_error`` that error."""

    reason = "acceptance-failed"

    def __init__(self, message: str, *, max_error: float, case: int | None = None) -> None:
        super().__init__(message)
        self.max_error = max_error
        self.case = case


class ProfileError(SetupError):
    """A drift reference cannot make a profile: too few vectors, or not one vector per item
    (``runtime.drift_profile``)."""
