"""Building a release: check the request, copy the model into the content-addressed blob store
while hashing it chunk by chunk, read the model kind from the copy, check that the copy loads,
runs once and meets its acceptance vectors (the check each edge runs before activating it, so a
broken release is caught before any device downloads it), and sign the manifest. A ``file``
release (asked for explicitly) is any bytes and is never loaded.

No database here: ``releases.ReleaseStore.add_release`` stores what this builds.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import protocol
from protocol.manifest import chunk_count
from protocol.textmodel import KIND_FILE
from runtime.errors import ModelCheckError
from runtime.files import StagedFile

from .delta_build import build_deltas
from .errors import RegistryError
from .keystore import ReleaseKeys
from .release_record import ReleaseRecord

DEFAULT_EXPIRES_IN = 90 * 86400.0


class ProfileBuilder(Protocol):
    """Builds the drift reference profile of the model at ``path`` (of ``kind``): the
    application embeds its reference set with the model (``modelcast release --reference``).
    Raises ``ValueError`` saying why it cannot."""

    def __call__(self, path: Path, kind: str) -> protocol.DriftProfile: ...


class ModelCheck(Protocol):
    """``runtime.model_check.check_model``: ``ModelCheckError`` if the model at ``path`` does not
    load, run once, or meet ``acceptance``; ``label`` names the file in what it says."""

    def __call__(
        self,
        path: Path,
        kind: str | None = None,
        acceptance: protocol.Acceptance | None = None,
        *,
        label: str | None = None,
    ) -> float | None: ...


@dataclass(frozen=True)
class ReleaseRequest:
    """What ``modelcast release`` asks for: ``model_path`` released as ``name@version``."""

    model_path: Path
    name: str
    version: int
    fleet: str = "default"
    chunk_size: int = protocol.DEFAULT_CHUNK_SIZE
    expires_in: float = DEFAULT_EXPIRES_IN
    model_kind: str | None = None
    variant: str | None = None
    acceptance: protocol.Acceptance | None = None

    @property
    def release(self) -> str:
        return f"{self.name}@{self.version}" + (f" ({self.variant})" if self.variant else "")


def check_release_request(req: ReleaseRequest) -> None:
    """Refuse (``RegistryError``, saying why) what cannot make a release."""
    for value, what in ((req.name, "model name"), (req.fleet, "fleet")):
        _check_name(value, what)
    if type(req.version) is not int or req.version < 0:
        raise RegistryError(f"version must be a non-negative integer, got {req.version!r}")
    limits = protocol.DEFAULT_LIMITS
    low, high = limits.min_chunk_size, limits.max_chunk_size
    if type(req.chunk_size) is not int or not low <= req.chunk_size <= high:
        raise RegistryError(
            f"chunk size {req.chunk_size!r} must be an integer between {low} and {high} bytes"
        )
    if req.expires_in <= 0:
        raise RegistryError(f"expires_in must be positive, got {req.expires_in}")
    _check_model_file(req.model_path, req.chunk_size)
    if req.variant is not None:
        _check_name(req.variant, "variant")
    if req.model_kind == KIND_FILE and req.acceptance is not None:
        raise RegistryError(
            f"cannot release {req.release}: acceptance vectors need a model, and a "
            f"{KIND_FILE} release is never run"
        )


def _check_name(value: str, what: str) -> None:
    try:
        protocol.check_name(value, what)
    except protocol.ProtocolError as exc:
        raise RegistryError(exc.detail) from None


def _check_model_file(model_path: Path, chunk_size: int) -> None:
    try:
        size = model_path.stat().st_size
    except FileNotFoundError:
        raise RegistryError(f"{model_path}: no such file") from None
    if not model_path.is_file():
        raise RegistryError(f"{model_path} is not a regular file")
    if size == 0:
        raise RegistryError(f"{model_path} is empty: nothing to release")
    n_chunks = chunk_count(size, chunk_size)
    if n_chunks > protocol.DEFAULT_LIMITS.max_chunks:
        raise RegistryError(
            f"{model_path}: {size} bytes make {n_chunks} chunks of {chunk_size} bytes, more "
            f"than the {protocol.DEFAULT_LIMITS.max_chunks} a manifest may list; "
            "use a larger chunk size"
        )


def _checked_kind(req: ReleaseRequest, staged: Path, check: ModelCheck | None) -> str:
    """The kind the staged copy declares (exactly the bytes that are signed), after ``check``
    (None: ``runtime.model_check.check_model``) passed on it, unless it is a ``file``."""
    # imported here: onnx takes 0.5 s to import, which other commands (status) need not pay
    from runtime.model_check import check_model
    from runtime.onnxmeta import release_kind

    try:
        kind = release_kind(staged, req.model_kind, label=str(req.model_path))
    except ValueError as exc:
        raise RegistryError(f"cannot release {req.release}: {exc}") from None
    if kind != KIND_FILE:
        _check_runs(req, staged, kind, check or check_model)
    return kind


def build_release(
    req: ReleaseRequest,
    blob_dir: Path,
    keys: ReleaseKeys,
    now: float,
    *,
    check: ModelCheck | None = None,
    profile: ProfileBuilder | None = None,
    bases: list[ReleaseRecord] | None = None,
) -> ReleaseRecord:
    """Copy, hash, check and sign ``req`` (already checked), with deltas from ``bases``.

    The file is read once: each chunk-sized piece is hashed and copied into the content-addressed
    blob store on the way through, so the blob is exactly what the manifest describes even if
    the source file changes meanwhile. The manifest records the model kind the copy declares
    (``req.model_kind``, if given, must agree; see ``runtime.onnxmeta.release_kind``), and the
    copy must pass ``check`` (None: ``runtime.model_check.check_model``) unless it is a ``file``;
    ``profile`` makes the drift profile, and each of ``bases`` a delta to this release when it is
    worth sending (coordinator/delta_build.py).
    """
    blob_dir.mkdir(parents=True, exist_ok=True)
    with StagedFile(blob_dir) as staged:
        with req.model_path.open("rb") as src:
            whole, hashes, size = protocol.hash_chunks(
                _copy_pieces(src, staged.file, req.chunk_size)
            )
        if size == 0:
            raise RegistryError(f"{req.model_path} is empty: nothing to release")
        staged.file.flush()
        kind = _checked_kind(req, staged.path, check)
        drift = None if profile is None else _profile(req, staged.path, kind, profile)
        deltas = build_deltas(staged.path, bases or [], blob_dir, req.chunk_size, req.release)
        manifest = _manifest(req, whole, hashes, size, kind, now, drift, deltas)
        # Content-addressed: an existing blob of that name holds the same bytes already.
        blob = (blob_dir / f"{whole.hex()}.onnx").resolve()
        staged.commit(blob)
    return _record(req, manifest, keys, blob, now)


def _record(
    req: ReleaseRequest, manifest: protocol.Manifest, keys: ReleaseKeys, blob: Path, now: float
) -> ReleaseRecord:
    return ReleaseRecord(
        fleet=req.fleet,
        name=req.name,
        version=req.version,
        size=manifest.size,
        sha256=manifest.sha256.hex(),
        chunk_size=req.chunk_size,
        n_chunks=manifest.n_chunks,
        block_chunks=manifest.block_chunks,
        manifest=manifest.sign(keys.key, keys.cert),
        release_id=manifest.release_id,
        blob_path=str(blob),
        created=now,
        variant=req.variant or "",
    )


def _check_runs(req: ReleaseRequest, path: Path, kind: str, check: ModelCheck) -> None:
    """Run ``check`` on the staged copy at ``path``: what each edge would find (a ``file`` is
    never run)."""
    if kind == KIND_FILE:
        return
    try:
        check(path, kind, req.acceptance, label=str(req.model_path))
    except ModelCheckError as exc:
        raise RegistryError(f"cannot release {req.release} ({req.model_path}): {exc}") from None


def _profile(
    req: ReleaseRequest, path: Path, kind: str, profile: ProfileBuilder
) -> protocol.DriftProfile:
    if kind == KIND_FILE:
        raise RegistryError(
            f"cannot release {req.release}: a drift reference needs a model, and a "
            f"{KIND_FILE} release is never run"
        )
    try:
        return profile(path, kind)
    except ValueError as exc:
        raise RegistryError(f"cannot release {req.release}: drift reference: {exc}") from None


def _manifest(
    req: ReleaseRequest,
    whole: bytes,
    hashes: bytes,
    size: int,
    kind: str,
    now: float,
    drift: protocol.DriftProfile | None = None,
    deltas: tuple[protocol.DeltaRef, ...] = (),
) -> protocol.Manifest:
    manifest = protocol.Manifest(
        fleet=req.fleet,
        name=req.name,
        version=req.version,
        size=size,
        sha256=whole,
        chunk_size=req.chunk_size,
        chunks=hashes,
        created=now,
        expires=now + req.expires_in,
        model_kind=kind,
        variant=req.variant or None,
        acceptance=req.acceptance,
        drift=drift,
        deltas=deltas,
    )
    try:
        manifest.check()
    except protocol.ProtocolError as exc:
        raise RegistryError(f"cannot release {req.release}: {exc.detail}") from None
    return manifest


def _copy_pieces(src: BinaryIO, dst: BinaryIO, chunk_size: int) -> Iterator[bytes]:
    """Yield ``src`` in ``chunk_size`` pieces, writing each to ``dst`` on the way."""
    while True:
        piece = src.read(chunk_size)
        if not piece:
            return
        dst.write(piece)
        yield piece
