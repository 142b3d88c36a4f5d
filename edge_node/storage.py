"""On-disk layout of an edge and the resumable, streamed download of one release.

::

    DATA/
      active.json                       which version of each model is active, and the previous one
      agent.json                        last accepted index seq, releases that failed to activate
      models/{name}/{version}/
        manifest.env                    the signed manifest (verified again on every resume)
        model.part                      chunks written in place as they arrive (sparse)
        held.bitmap                     one byte per chunk: the journal of chunks written and synced
        model.onnx                      the whole file, once its sha256 matched

Chunks are written with ``pwrite`` at their offset, straight from the received buffer, so memory
does not grow with model size. The bitmap is written (atomically) after the data is synced, in
batches. On resume every chunk that the bitmap claims, or whose region holds data, is hashed
again, so a torn write or a lying journal costs a re-fetch of that chunk, never a bad model.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from modelcast.files import fsync_dir, write_atomic
from protocol import Manifest, VerifiedChunk

from .errors import StorageError

PART = "model.part"
FINAL = "model.onnx"
BITMAP = "held.bitmap"
MANIFEST = "manifest.env"


def release_dir(data: Path, name: str, version: int) -> Path:
    return data / "models" / name / str(version)


class PartialDownload:
    """The part file of one release, open for positioned writes."""

    def __init__(self, directory: Path, manifest: Manifest, envelope: bytes) -> None:
        self.dir = directory
        self.manifest = manifest
        try:
            directory.mkdir(parents=True, exist_ok=True)
            if not (directory / MANIFEST).exists():
                write_atomic(directory / MANIFEST, envelope)
            # no up-front truncate: the file grows (sparse) as chunks land, so a full disk
            # shows up as a failed chunk write, reported and retried, not a failed start
            self._fd = os.open(directory / PART, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StorageError(f"cannot open {directory / PART}: {exc}") from exc
        self._bitmap = bytearray(manifest.n_chunks)
        self._dirty = False

    # --- resume --------------------------------------------------------------------------
    def recover(self) -> list[int]:
        """Chunks on disk whose hash matches the manifest (the truth), journal or not."""
        m = self.manifest
        journal = b""
        with contextlib.suppress(FileNotFoundError):
            journal = (self.dir / BITMAP).read_bytes()
        held: list[int] = []
        for i in range(m.n_chunks):
            claimed = i < len(journal) and journal[i] == 1
            if not claimed and not self._has_data(i):
                continue
            data = os.pread(self._fd, m.chunk_length(i), i * m.chunk_size)
            if hashlib.sha256(data).digest() == m.chunk_hash(i):
                held.append(i)
                self._bitmap[i] = 1
        self._dirty = True
        return held

    def _has_data(self, index: int) -> bool:
        start = index * self.manifest.chunk_size
        try:
            nxt = os.lseek(self._fd, start, os.SEEK_DATA)
        except OSError:  # ENXIO: no data at or after start
            return False
        return nxt < start + self.manifest.chunk_length(index)

    # --- writing -------------------------------------------------------------------------
    def write(self, chunk: VerifiedChunk) -> None:
        try:
            written = os.pwrite(self._fd, chunk.data, chunk.offset)
        except OSError as exc:
            raise StorageError(f"writing chunk {chunk.index}: {exc}") from exc
        if written != len(chunk.data):
            raise StorageError(f"short write of chunk {chunk.index}: {written} bytes")
        self._bitmap[chunk.index] = 1
        self._dirty = True

    def sync(self) -> None:
        """Make written chunks durable, then record them in the journal."""
        if not self._dirty:
            return
        try:
            os.fdatasync(self._fd)
            write_atomic(self.dir / BITMAP, bytes(self._bitmap))
        except OSError as exc:
            raise StorageError(f"syncing {self.dir}: {exc}") from exc
        self._dirty = False

    # --- completion ----------------------------------------------------------------------
    def iter_file(self, block: int = 1 << 20) -> Iterator[bytes]:
        size = self.manifest.size
        pos = 0
        while pos < size:
            data = os.pread(self._fd, min(block, size - pos), pos)
            if not data:
                raise StorageError(f"{self.dir / PART} is shorter than {size} bytes")
            yield data
            pos += len(data)

    def sha256(self) -> bytes:
        h = hashlib.sha256()
        for piece in self.iter_file():
            h.update(piece)
        return h.digest()

    def finalize(self) -> Path:
        """Rename the verified part file to ``model.onnx`` (durably) and return its path."""
        self.sync()
        self.close()
        final = self.dir / FINAL
        try:
            os.replace(self.dir / PART, final)
            fsync_dir(self.dir)
        except OSError as exc:
            raise StorageError(f"finalizing {final}: {exc}") from exc
        return final

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def discard(self) -> None:
        self.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def verified_file(directory: Path, manifest: Manifest) -> Path | None:
    """``model.onnx`` of a release that was verified but maybe not activated (killed meanwhile)."""
    final = directory / FINAL
    try:
        if final.stat().st_size != manifest.size:
            return None
        h = hashlib.sha256()
        with final.open("rb") as f:
            while piece := f.read(1 << 20):
                h.update(piece)
    except OSError:
        return None
    return final if h.digest() == manifest.sha256 else None
