"""``ModelcastError``, the root of every error modelcast raises on purpose, and the two roots of
everything that can go wrong with bytes from the wire.

Each package has its own root under ``ModelcastError`` (``protocol.ProtocolError``,
``runtime.errors.SetupError``, ``coordinator.errors.CoordinatorError``,
``edge_node.errors.EdgeError``, ``broker_admin.errors.BrokerAdminError``,
``testkit.errors.TestkitError``, ``modelcast.errors.CommandError``); the command line maps them to
exit codes in one place (``modelcast.cli.exits``). It lives here, in the lowest layer, because
every package may import ``protocol`` and none may import upwards.

Modelled on python-tuf: ``ProtocolError`` means *the data is bad* (malformed, oversized, unsigned,
mis-signed, expired, stale, out of range); the caller rejects it, counts it and carries on.
``SequenceError`` means *the caller used a state object out of order*: a bug, not an attack.
Transport errors (broker gone, socket cut) never appear here: ``protocol`` does no I/O; they live in
``edge_node.errors`` and ``runtime.errors``.
"""

from __future__ import annotations


class ModelcastError(Exception):
    """The root of every error modelcast raises on purpose (``except ModelcastError`` catches
    them all, and nothing that is a plain bug)."""


class ProtocolError(ModelcastError):
    """Bad data. ``reason`` is a short stable code (used in metrics and on the state topic)."""

    reason = "invalid"

    def __init__(self, detail: str, *, reason: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if reason is not None:
            self.reason = reason

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


class MalformedMessage(ProtocolError):
    """Not decodable, wrong types, missing or unknown fields, bad topic name."""

    reason = "malformed"


class OversizedMessage(ProtocolError):
    """Larger than the configured cap: refused before it is decoded."""

    reason = "oversized"


class UnsupportedVersion(ProtocolError):
    """A schema version this build does not speak."""

    reason = "unsupported-version"


class SignatureError(ProtocolError):
    """Unsigned, signed by an untrusted key, or a signature that does not verify."""

    reason = "bad-signature"


class ExpiredError(ProtocolError):
    """A manifest, index or key certificate past its expiry (freeze protection)."""

    reason = "expired"


class StaleError(ProtocolError):
    """Older than what the receiver already has (rollback / replay protection)."""

    reason = "stale"


class ChunkRejected(ProtocolError):
    """A chunk whose hash, index, length or release does not match the manifest."""

    reason = "bad-chunk"


class DigestMismatch(ProtocolError):
    """The whole-file sha256 does not match the manifest."""

    reason = "digest-mismatch"


class SequenceError(ModelcastError, RuntimeError):
    """A state object was driven out of order (e.g. a chunk committed before it was accepted)."""
