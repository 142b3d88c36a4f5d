"""``ReleaseRecord``: one stored release, a signed manifest and where its bytes are."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
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
    #: not a column: set on the record of a delta's chunk stream (``delta_streams``) only
    stream: str = ""

    @property
    def release(self) -> str:
        label = f"{self.name}@{self.version}" + (f" ({self.variant})" if self.variant else "")
        return f"{label} {self.stream}" if self.stream else label

    @property
    def signed(self) -> protocol.Manifest:
        """The manifest's body, as signed."""
        envelope = Envelope.decode(self.manifest, protocol.DEFAULT_LIMITS.max_envelope_bytes)
        return protocol.Manifest.decode(envelope.body)

    @property
    def model_kind(self) -> str:
        """The kind the signed manifest records (``tensors`` or ``text-embedding``)."""
        return self.signed.model_kind

    def delta_streams(self) -> list[ReleaseRecord]:
        """A record for the chunk stream of each delta the manifest offers: served like a
        release, from the blob ``SHA256.delta`` beside this release's blob."""
        if self.stream:
            return []
        manifest = self.signed
        streams = []
        for ref in manifest.deltas:
            stream = manifest.delta_stream(ref)
            blob = Path(self.blob_path).parent / f"{ref.sha256.hex()}.delta"
            streams.append(
                replace(
                    self,
                    size=ref.size,
                    sha256=ref.sha256.hex(),
                    n_chunks=ref.n_chunks,
                    release_id=stream.release_id,
                    blob_path=str(blob),
                    stream=stream.stream or "",
                )
            )
        return streams

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
