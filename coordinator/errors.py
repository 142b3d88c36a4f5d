"""The coordinator's errors, under one root. Bad data from devices is ``protocol.ProtocolError``
(rejected, counted, logged); these are what an operator's request or the coordinator's own files
can run into. Each is also the built-in error its callers always caught (``ValueError`` for a
refused request, ``OSError`` for an unreadable blob)."""

from __future__ import annotations

from protocol.errors import ModelcastError


class CoordinatorError(ModelcastError):
    """The root of the coordinator's errors."""


class RegistryError(CoordinatorError, ValueError):
    """A release or deployment the registry refuses (the message says why)."""


class RolloutError(CoordinatorError, ValueError):
    """A rollout command that cannot be carried out (the message says why)."""


class KeyOperationError(CoordinatorError, ValueError):
    """A key operation the key directory does not allow, or a key file that is unusable."""


class ChunkSourceError(CoordinatorError, OSError):
    """A blob that is missing, unreadable or shorter than its release says."""
