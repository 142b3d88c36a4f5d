"""The deltas a release offers, as its signed manifest lists them (docs/PROTOCOL.md, "Deltas").

A ``DeltaRef`` names the base release (its id, version and whole-file sha256) and describes the
delta's own bytes like a release's: size, sha256 and the sha256 of each chunk. An edge that holds
a file with ``base_sha256`` may download the delta instead of the release: it travels as a chunk
stream of its own (``Manifest.delta_stream``), verified chunk by chunk against these hashes, and
the file it makes is checked against the release's own sha256. Everything is signed with the
release's manifest, so the delta needs no signature of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .codec import field, non_negative
from .errors import MalformedMessage, OversizedMessage
from .limits import DEFAULT_LIMITS, Limits


@dataclass(frozen=True)
class DeltaRef:
    #: the base release's id (``Manifest.release_id``, 32 bytes)
    base: bytes
    base_version: int
    #: the base's whole file, as its own manifest signed it
    base_sha256: bytes
    size: int
    sha256: bytes
    chunks: bytes

    @property
    def n_chunks(self) -> int:
        return len(self.chunks) // 32

    def to_dict(self) -> dict[str, object]:
        return {
            "base": self.base,
            "base_version": self.base_version,
            "base_sha256": self.base_sha256,
            "size": self.size,
            "sha256": self.sha256,
            "chunks": self.chunks,
        }

    @classmethod
    def from_dict(cls, raw: Any, what: str, limits: Limits = DEFAULT_LIMITS) -> DeltaRef:
        if not isinstance(raw, dict):
            raise MalformedMessage(f"{what}: a delta must be a map")
        ref = cls(
            base=field(raw, "base", bytes, what),
            base_version=non_negative(field(raw, "base_version", int, what), "base_version", what),
            base_sha256=field(raw, "base_sha256", bytes, what),
            size=field(raw, "size", int, what),
            sha256=field(raw, "sha256", bytes, what),
            chunks=field(raw, "chunks", bytes, what),
        )
        return ref

    def check(self, chunk_size: int, what: str, limits: Limits = DEFAULT_LIMITS) -> None:
        for value, name in ((self.base, "base"), (self.base_sha256, "base_sha256")):
            if len(value) != 32:
                raise MalformedMessage(f"{what}: delta {name} must be 32 bytes")
        if len(self.sha256) != 32:
            raise MalformedMessage(f"{what}: delta sha256 must be 32 bytes")
        if not 0 < self.size <= limits.max_model_bytes:
            raise OversizedMessage(f"{what}: delta of {self.size} bytes outside 1..model cap")
        expected = (self.size + chunk_size - 1) // chunk_size
        if len(self.chunks) % 32 or self.n_chunks != expected:
            raise MalformedMessage(
                f"{what}: delta lists {len(self.chunks) / 32:g} chunk hashes for {self.size} "
                f"bytes in {chunk_size}-byte chunks (expected {expected})"
            )
        if self.n_chunks > limits.max_chunks:
            raise OversizedMessage(f"{what}: delta of {self.n_chunks} chunks")


@dataclass(frozen=True)
class DeltaOf:
    """What a delta's chunk stream (``Manifest.delta_stream``) is the delta of: never on the wire
    as a manifest, but part of the stream's release id, so its chunks are its own."""

    target: bytes
    base: bytes

    def to_dict(self) -> dict[str, object]:
        return {"target": self.target, "base": self.base}

    @classmethod
    def from_dict(cls, raw: Any, what: str) -> DeltaOf:
        if not isinstance(raw, dict):
            raise MalformedMessage(f"{what}: delta_of must be a map")
        return cls(field(raw, "target", bytes, what), field(raw, "base", bytes, what))
