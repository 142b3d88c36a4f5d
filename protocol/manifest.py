"""The release manifest: what a model release is, chunk by chunk, and how it is verified."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, replace

from .acceptance import Acceptance
from .codec import (
    SCHEMA_VERSION,
    check_schema_version,
    field,
    non_negative,
    optional,
    pack,
    unpack_map,
)
from .delta_ref import DeltaOf, DeltaRef
from .drift import DriftProfile
from .envelope import KeyCertificate, TrustedRoot, seal
from .errors import ExpiredError, MalformedMessage, OversizedMessage
from .limits import DEFAULT_BLOCK_CHUNKS, DEFAULT_LIMITS, Limits
from .names import check_name
from .signing import SigningKey
from .textmodel import KIND_TENSORS, MODEL_KINDS

KIND_MANIFEST = "manifest"
FORMAT_ONNX = "onnx"


def chunk_count(size: int, chunk_size: int) -> int:
    return (size + chunk_size - 1) // chunk_size


@dataclass(frozen=True)
class Manifest:
    """One release of one model. ``chunks`` is the sha256 of every chunk, concatenated.

    ``model_kind`` says how the edge serves it (protocol/textmodel.py): ``tensors`` (the
    default, omitted from the body so older manifests keep their bytes) or ``text-embedding``.
    """

    fleet: str
    name: str
    version: int
    size: int
    sha256: bytes
    chunk_size: int
    chunks: bytes
    created: float
    expires: float
    block_chunks: int = DEFAULT_BLOCK_CHUNKS
    format: str = FORMAT_ONNX
    model_kind: str = KIND_TENSORS
    #: one of several builds of the same version (``fp32``, ``int8``); None: the only one
    variant: str | None = None
    #: inputs, expected outputs and a tolerance each edge checks before activating
    acceptance: Acceptance | None = None
    #: the reference profile edges compare their inputs with (protocol/drift.py); None: no
    #: drift figures for this release
    drift: DriftProfile | None = None
    #: deltas from earlier releases an edge holding one of them may download instead
    deltas: tuple[DeltaRef, ...] = ()
    #: set on the stream of one delta only (``delta_stream``), never on a signed manifest
    delta_of: DeltaOf | None = None

    @property
    def n_chunks(self) -> int:
        return len(self.chunks) // 32

    @property
    def n_blocks(self) -> int:
        return chunk_count(self.n_chunks, self.block_chunks)

    @property
    def release(self) -> str:
        variant = f" ({self.variant})" if self.variant else ""
        return f"{self.name}@{self.version}{variant}"

    def chunk_hash(self, index: int) -> bytes:
        return self.chunks[index * 32 : index * 32 + 32]

    def chunk_length(self, index: int) -> int:
        if index < self.n_chunks - 1:
            return self.chunk_size
        return self.size - self.chunk_size * (self.n_chunks - 1)

    def block_of(self, index: int) -> int:
        return index // self.block_chunks

    def block_range(self, block: int) -> range:
        start = block * self.block_chunks
        return range(start, min(start + self.block_chunks, self.n_chunks))

    @property
    def release_id(self) -> bytes:
        """The identity of a release (32 bytes): sha256 over everything that defines its bytes,
        but not over its signing times, so a manifest re-signed with a later expiry is the same
        release. Chunk frames carry its first 16 bytes, so a chunk of another release is refused.
        """
        fields: list[object] = [
            "modelcast-release-v1",
            self.fleet,
            self.name,
            self.version,
            self.format,
            self.size,
            self.sha256,
            self.chunk_size,
            self.block_chunks,
            self.chunks,
        ]
        # Optional fields join, named, only when set: releases without them keep their ids.
        # Not the deltas offered: they do not change the release's bytes, and an edge that
        # predates them ignores the field and must compute the same id.
        extra = self._optional_fields()
        extra.pop("deltas", None)
        if extra:
            fields.append(extra)
        return hashlib.sha256(pack(fields)).digest()

    def _optional_fields(self) -> dict[str, object]:
        """The optional fields that are set, by wire name, in wire order."""
        extra: dict[str, object] = {}
        if self.model_kind != KIND_TENSORS:
            extra["model_kind"] = self.model_kind
        if self.variant:
            extra["variant"] = self.variant
        if self.acceptance is not None:
            extra["acceptance"] = self.acceptance.to_dict()
        if self.drift is not None:
            extra["drift"] = self.drift.to_dict()
        if self.deltas:
            extra["deltas"] = [d.to_dict() for d in self.deltas]
        if self.delta_of is not None:
            extra["delta_of"] = self.delta_of.to_dict()
        return extra

    def delta_stream(self, ref: DeltaRef) -> Manifest:
        """The chunk stream of ``ref`` (one of ``deltas``): chunked, requested, verified and
        resumed like a release, under an id of its own (its chunk topics: ``stream``)."""
        return replace(
            self,
            size=ref.size,
            sha256=ref.sha256,
            chunks=ref.chunks,
            acceptance=None,
            drift=None,
            deltas=(),
            delta_of=DeltaOf(target=self.release_id, base=ref.base),
        )

    @property
    def stream(self) -> str | None:
        """The chunk topic level of a delta's stream (None: the release's own chunks)."""
        return None if self.delta_of is None else f"~delta-{self.delta_of.base[:8].hex()}"

    def encode(self) -> bytes:
        optional_fields = self._optional_fields()
        kind = {}  # written after "format" (as before variants existed), the rest at the end
        if "model_kind" in optional_fields:
            kind["model_kind"] = optional_fields.pop("model_kind")
        return pack(
            {
                "v": SCHEMA_VERSION,
                "fleet": self.fleet,
                "name": self.name,
                "version": self.version,
                "format": self.format,
                **kind,
                "size": self.size,
                "sha256": self.sha256,
                "chunk_size": self.chunk_size,
                "block_chunks": self.block_chunks,
                "chunks": self.chunks,
                "created": self.created,
                "expires": self.expires,
                **optional_fields,
            }
        )

    @classmethod
    def decode(cls, body: bytes, limits: Limits = DEFAULT_LIMITS) -> Manifest:
        what = "manifest"
        obj = unpack_map(body, limits.max_envelope_bytes, what)
        check_schema_version(obj, what)
        m = cls(
            fleet=check_name(field(obj, "fleet", str, what), "fleet"),
            name=check_name(field(obj, "name", str, what), "model name"),
            version=non_negative(field(obj, "version", int, what), "version", what),
            format=optional(obj, "format", str, what, FORMAT_ONNX),
            model_kind=optional(obj, "model_kind", str, what, KIND_TENSORS),
            size=field(obj, "size", int, what),
            sha256=field(obj, "sha256", bytes, what),
            chunk_size=field(obj, "chunk_size", int, what),
            block_chunks=optional(obj, "block_chunks", int, what, DEFAULT_BLOCK_CHUNKS),
            chunks=field(obj, "chunks", bytes, what),
            created=field(obj, "created", float, what),
            expires=field(obj, "expires", float, what),
            variant=(
                None
                if obj.get("variant") is None
                else check_name(field(obj, "variant", str, what), "variant")
            ),
            acceptance=(
                None
                if obj.get("acceptance") is None
                else Acceptance.from_dict(obj["acceptance"], limits)
            ),
            drift=None
            if obj.get("drift") is None
            else DriftProfile.from_dict(obj["drift"], limits),
            deltas=_deltas(obj.get("deltas"), what, limits),
            delta_of=(
                None if obj.get("delta_of") is None else DeltaOf.from_dict(obj["delta_of"], what)
            ),
        )
        m.check(limits)
        return m

    def check(self, limits: Limits = DEFAULT_LIMITS) -> None:
        """Internal consistency: every number agrees with every other, within the caps."""
        what = f"manifest {self.name}@{self.version}"
        if len(self.sha256) != 32:
            raise MalformedMessage(f"{what}: sha256 must be 32 bytes")
        if self.format != FORMAT_ONNX:
            raise MalformedMessage(f"{what}: format {self.format!r} is not {FORMAT_ONNX!r}")
        if self.model_kind not in MODEL_KINDS:
            raise MalformedMessage(
                f"{what}: model kind {self.model_kind!r} is not one of {', '.join(MODEL_KINDS)}"
            )
        low, high = limits.min_chunk_size, limits.max_chunk_size
        if not low <= self.chunk_size <= high:
            raise MalformedMessage(f"{what}: chunk size {self.chunk_size} outside {low}..{high}")
        if not 1 <= self.block_chunks <= limits.max_block_chunks:
            raise MalformedMessage(
                f"{what}: block_chunks {self.block_chunks} outside 1..{limits.max_block_chunks}"
            )
        if self.size <= 0:
            raise MalformedMessage(f"{what}: size must be positive")
        if self.size > limits.max_model_bytes:
            raise OversizedMessage(f"{what}: {self.size} bytes exceeds {limits.max_model_bytes}")
        if len(self.chunks) % 32:
            raise MalformedMessage(f"{what}: chunk hash list is not a multiple of 32 bytes")
        if self.n_chunks != chunk_count(self.size, self.chunk_size):
            raise MalformedMessage(
                f"{what}: {self.n_chunks} chunk hashes for {self.size} bytes in "
                f"{self.chunk_size}-byte chunks "
                f"(expected {chunk_count(self.size, self.chunk_size)})"
            )
        if self.n_chunks > limits.max_chunks:
            raise OversizedMessage(f"{what}: {self.n_chunks} chunks exceeds {limits.max_chunks}")
        if self.expires <= self.created:
            raise MalformedMessage(f"{what}: expires before it was created")
        if self.acceptance is not None:
            self.acceptance.check(limits)
        if self.drift is not None:
            self.drift.check(limits)
        if len(self.deltas) > limits.max_deltas:
            raise OversizedMessage(f"{what}: {len(self.deltas)} deltas exceeds {limits.max_deltas}")
        for ref in self.deltas:
            ref.check(self.chunk_size, what, limits)

    def sign(self, key: SigningKey, cert: bytes) -> bytes:
        return seal(KIND_MANIFEST, self.encode(), key, cert)


def _deltas(raw: object, what: str, limits: Limits) -> tuple[DeltaRef, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise MalformedMessage(f"{what}: deltas must be a list")
    if len(raw) > limits.max_deltas:
        raise OversizedMessage(f"{what}: {len(raw)} deltas exceeds {limits.max_deltas}")
    return tuple(DeltaRef.from_dict(d, what, limits) for d in raw)


@dataclass(frozen=True)
class VerifiedManifest:
    """A manifest whose signature chain checked out, with the facts needed to trust its chunks."""

    manifest: Manifest
    id: bytes
    signer: KeyCertificate
    envelope: bytes


def open_manifest(
    trust: TrustedRoot, data: bytes, *, now: float, fleet: str | None = None
) -> VerifiedManifest:
    """Verify signature chain, schema, consistency, expiry and (optionally) the fleet."""
    body, cert = trust.open(data, KIND_MANIFEST, now)
    manifest = Manifest.decode(body, trust.limits)
    if now >= manifest.expires:
        raise ExpiredError(f"manifest {manifest.release} expired at {manifest.expires}")
    if fleet is not None and manifest.fleet != fleet:
        raise MalformedMessage(f"manifest {manifest.release} is for fleet {manifest.fleet!r}")
    return VerifiedManifest(manifest, manifest.release_id, cert, bytes(data))


def hash_chunks(blocks: Iterable[bytes]) -> tuple[bytes, bytes, int]:
    """sha256 of each chunk and of the whole, from an iterable of chunk-sized pieces.

    Returns ``(whole_sha256, concatenated_chunk_hashes, size)``. The caller reads the file in
    ``chunk_size`` pieces, so this never holds more than one chunk.
    """
    whole = hashlib.sha256()
    hashes = bytearray()
    size = 0
    for piece in blocks:
        whole.update(piece)
        hashes += hashlib.sha256(piece).digest()
        size += len(piece)
    return whole.digest(), bytes(hashes), size
