"""The deltas of a new release, made at release from earlier releases of the same model.

Which bases: the ``DEFAULT_DELTA_BASES`` (2) newest earlier releases of the same model and the
same variant. An edge keeps its active file and the one before (``edge_node.active``), and a
fleet that follows its index sits on the latest release or, mid-rollout, on the one before it:
two bases cover both, at two deltas' worth of disk and release time (about a second each for
MiniLM). Older edges, and edges of another variant, get the full release.

A delta is kept only when it is smaller than ``MAX_DELTA_RATIO`` of the release (otherwise an
edge would fetch nearly the whole size and apply on top), and only once it was applied here and
made exactly the release's bytes: a broken delta would cost every edge a fallback. Each is a
blob ``SHA256.delta`` beside the release blobs, content-addressed like them.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import mmap
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import protocol
from protocol.delta_encode import encode_delta
from runtime.delta_kernel import unplane
from runtime.files import StagedFile

from .release_record import ReleaseRecord

log = logging.getLogger(__name__)

DEFAULT_DELTA_BASES = 2
MAX_DELTA_RATIO = 0.9


def delta_blob(blob_dir: Path, sha256: bytes) -> Path:
    return blob_dir / f"{sha256.hex()}.delta"


def build_deltas(
    target: Path, bases: list[ReleaseRecord], blob_dir: Path, chunk_size: int, release: str
) -> tuple[protocol.DeltaRef, ...]:
    """A delta from each of ``bases`` to the file ``target`` (those that are worth it)."""
    refs = []
    for base in bases:
        try:
            ref = _build_one(target, base, blob_dir, chunk_size)
        except (protocol.DeltaError, OSError, ValueError) as exc:
            log.warning("release %s: no delta from %s: %s", release, base.release, exc)
            continue
        if ref is not None:
            refs.append(ref)
            log.info(
                "release %s: delta from %s, %d bytes (%d chunks)",
                release,
                base.release,
                ref.size,
                ref.n_chunks,
            )
    return tuple(refs)


def _build_one(
    target: Path, base: ReleaseRecord, blob_dir: Path, chunk_size: int
) -> protocol.DeltaRef | None:
    with ExitStack() as stack:
        base_map = stack.enter_context(_mapped(Path(base.blob_path)))
        target_map = stack.enter_context(_mapped(target))
        if hashlib.sha256(base_map).hexdigest() != base.sha256:
            raise protocol.DeltaError(f"the blob of {base.release} no longer matches its sha256")
        staged = stack.enter_context(StagedFile(blob_dir))
        for piece in encode_delta(memoryview(base_map), memoryview(target_map)):
            staged.file.write(piece)
        staged.file.flush()
        size = staged.file.tell()
        if size > MAX_DELTA_RATIO * len(target_map):
            log.info("no delta from %s: %d bytes of %d", base.release, size, len(target_map))
            return None
        with staged.path.open("rb") as delta:
            _check_applies(delta.read, base_map, hashlib.sha256(target_map).digest())
            delta.seek(0)
            whole, hashes, _ = protocol.hash_chunks(iter(lambda: delta.read(chunk_size), b""))
        staged.commit(delta_blob(blob_dir, whole))
    return protocol.DeltaRef(
        base=base.release_id,
        base_version=base.version,
        base_sha256=bytes.fromhex(base.sha256),
        size=size,
        sha256=whole,
        chunks=hashes,
    )


def _check_applies(read: Callable[[int], bytes], base: mmap.mmap, target_sha256: bytes) -> None:
    digest = hashlib.sha256()
    pieces = protocol.apply_delta(
        read,
        lambda offset, length: base[offset : offset + length],
        base_size=len(base),
        kernel=unplane,
    )
    for piece in pieces:
        digest.update(piece)
    if digest.digest() != target_sha256:
        raise protocol.DeltaResultMismatch("the delta does not make the release's bytes")


class _mapped:
    """A read-only memory map of a whole file (nothing is read until it is touched)."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def __enter__(self) -> mmap.mmap:
        with self._path.open("rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return self._map

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(BufferError):  # a view is alive (in a traceback): GC closes it
            self._map.close()
