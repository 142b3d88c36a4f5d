"""The runtime's errors: what it was given cannot be used (a broker URL, a credentials file, an
ONNX file, TLS options). Each is also a ``ValueError``, as the callers' checks always were."""

from __future__ import annotations

from protocol.errors import ModelcastError


class SetupError(ModelcastError, ValueError):
    """A setting or file handed to the runtime is unusable; the message names it and why."""
