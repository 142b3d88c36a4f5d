"""``ReleaseRecord``: one stored release, a signed manifest and where its bytes are."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import protocol
from protocol.envelope import Envelope


@dataclass(frozen=True)
class ReleaseRecord:
    """One row of ``releases``: a signed release and where its bytes are."""

    fleet: str
    name: str
    version: int
    size: int
    sha256: str
    chunk_size: int
    n_chunks: int
    block_chunks: int
    manifest: bytes
    release_id: bytes
    blob_path: str
    created: float
    variant: str = ""  # "" when the version has a single build

    @property
    def release(self) -> str:
        return f"{self.name}@{self.version}" + (f" ({self.variant})" if self.variant else "")

    @property
    def model_kind(self) -> str:
        """The kind the signed manifest records (``tensors`` or ``text-embedding``)."""
        envelope = Envelope.decode(self.manifest, protocol.DEFAULT_LIMITS.max_envelope_bytes)
        return protocol.Manifest.decode(envelope.body).model_kind

    @property
    def short_id(self) -> bytes:
        """The 16-byte release id that chunk frames and requests carry."""
        return self.release_id[:16]

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ReleaseRecord:
        return cls(
            fleet=row["fleet"],
            name=row["name"],
            version=int(row["version"]),
            size=int(row["size"]),
            sha256=row["sha256"],
            chunk_size=int(row["chunk_size"]),
            n_chunks=int(row["n_chunks"]),
            block_chunks=int(row["block_chunks"]),
            manifest=bytes(row["manifest"]),
            release_id=bytes(row["release_id"]),
            blob_path=row["blob_path"],
            created=float(row["created"]),
            variant=row.get("variant") or "",
        )
