"""The error root of broker administration."""

from __future__ import annotations

from protocol.errors import ModelcastError


class BrokerAdminError(ModelcastError, ValueError):
    """A credentials, TLS or profile operation that cannot be done (the message says why)."""
