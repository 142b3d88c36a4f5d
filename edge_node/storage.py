"""On-disk layout of an edge and the resumable, streamed download of one release.

::

    DATA/
      active.json                       which version of each model is active, and the previous one
      agent.json                        last accepted index seq, releases that failed to activate
      models/{name}/{version}[/{variant}]/
        manifest.env                    the signed manifest, kept with the model it describes
        model.part                      chunks written in place as they arrive (sparse)
        held.bitmap                     one byte per chunk: the journal of chunks written and synced
        model.onnx                      the whole file, once every chunk matched its signed
                                        hash (a ``file`` release's too: the name is the layout's)

Chunks are written with ``pwrite`` at their offset, straight from the received buffer, so memory
does not grow with model size. Each chunk's sha256 was checked against the signed manifest
before it is written (``DownloadSession.accept``), and every chunk already on disk is hashed
again on resume (``recover``), so a complete part file is, chunk by chunk, what the manifest
describes: completion does not hash the file a second time (docs/PROTOCOL.md, "Verified"). The
file's own sha256 is checked wherever it is read back: a verified file found at start
(``verified_file``), the active files at start and before every inference session
(``integrity``). The bitmap is written (atomically) after the data is synced, in batches; a
torn write or a lying journal costs a re-fetch of that chunk, never a bad model. Written data
is synced behind the writes and dropped from the page cache (``write_behind``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from pathlib import Path

from protocol import DEFAULT_LIMITS, Manifest, ProtocolError, VerifiedChunk
from protocol.envelope import Envelope
from runtime.files import fsync_dir, fsync_file, sha256_file, write_atomic

from .errors import StorageError
from .write_behind import WriteBehind

PART = "model.part"
FINAL = "model.onnx"
BITMAP = "held.bitmap"
MANIFEST = "manifest.env"


def release_dir(data: Path, name: str, version: int, variant: str | None = None) -> Path:
    """Where one build of a release lives: ``models/NAME/VERSION``, or, for a version with
    several builds, ``models/NAME/VERSION/VARIANT`` (a variant name is a safe path component),
    so two variants of one version never share a part file or a ``model.onnx``."""
    base = data / "models" / name / str(version)
    return base / variant if variant else base


class PartialDownload:
    """The part file of one release, open for positioned writes."""

    def __init__(self, directory: Path, manifest: Manifest, envelope: bytes) -> None:
        self.dir = directory
        self.manifest = manifest
        try:
            directory.mkdir(parents=True, exist_ok=True)
            # Not synced here (two fsyncs, ~10 ms before the first chunk is asked for): the
            # first journal sync or the finalize makes it durable. The download itself never
            # reads it back: a resume verifies the manifest it gets from the broker.
            self._manifest_synced = (directory / MANIFEST).exists()
            if not self._manifest_synced:
                write_atomic(directory / MANIFEST, envelope, durable=False)
            # no up-front truncate: the file grows (sparse) as chunks land, so a full disk
            # shows up as a failed chunk write, reported and retried, not a failed start
            self._fd = os.open(directory / PART, os.O_RDWR | os.O_CREAT, 0o644)
            if os.fstat(self._fd).st_size > manifest.size:  # never longer than the release
                os.ftruncate(self._fd, manifest.size)
        except OSError as exc:
            raise StorageError(f"cannot open {directory / PART}: {exc}") from exc
        self._bitmap = bytearray(manifest.n_chunks)
        self._dirty = False
        # syncs behind the writes and keeps the part file out of the page cache
        self._behind = WriteBehind(self._fd, f"flush-{directory.name}")

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
        # rewrite the journal if it is to say something; a fresh download has nothing to record
        # (no journal means nothing claimed), and syncing an empty one delays its first chunk
        self._dirty = bool(held) or any(journal)
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
        self._behind.wrote(written)

    def sync(self) -> None:
        """Make written chunks durable, then record them in the journal."""
        if not self._dirty:
            return
        self._behind.synced()
        try:
            os.fdatasync(self._fd)
            self._sync_manifest()
            write_atomic(self.dir / BITMAP, bytes(self._bitmap))  # its dir fsync covers both
        except OSError as exc:
            raise StorageError(f"syncing {self.dir}: {exc}") from exc
        self._dirty = False

    def _sync_manifest(self) -> None:
        if not self._manifest_synced:
            fsync_file(self.dir / MANIFEST)
            self._manifest_synced = True

    # --- completion ----------------------------------------------------------------------
    def finalize(self) -> Path:
        """Rename the verified part file to ``model.onnx`` (durably) and return its path. The
        journal is not written first: the file is complete and verified, and should a crash
        come before the rename, a resume hashes every chunk that holds data anyway."""
        final = self.dir / FINAL
        try:
            size = os.fstat(self._fd).st_size
            if size != self.manifest.size:
                raise StorageError(
                    f"{self.dir / PART} has {size} bytes, the release {self.manifest.size}"
                )
            if self._dirty:
                os.fdatasync(self._fd)
            self._sync_manifest()
            self.close()
            os.replace(self.dir / PART, final)
            (self.dir / BITMAP).unlink(missing_ok=True)
            fsync_dir(self.dir)
        except OSError as exc:
            raise StorageError(f"finalizing {final}: {exc}") from exc
        return final

    def close(self) -> None:
        self._behind.close()  # it uses the descriptor: stop it first
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
        digest = sha256_file(final)
    except OSError:
        return None
    return final if digest == manifest.sha256 else None


def salvage_final(directory: Path) -> bool:
    """Make a ``model.onnx`` that failed its check (bit rot on the device's disk) the part file
    of a new download of the same release, so that the download resumes from the chunks that
    still match their hashes and fetches only the others. The journal goes: it describes an
    older part file, and every chunk with data is hashed on resume anyway. True if there was
    such a file. ``StorageError`` if the rename fails."""
    final = directory / FINAL
    if not final.exists():
        return False
    try:
        os.replace(final, directory / PART)
        (directory / BITMAP).unlink(missing_ok=True)
        fsync_dir(directory)
    except OSError as exc:
        raise StorageError(f"cannot reuse {final} for its repair: {exc}") from exc
    return True


def kept_sha256(directory: Path) -> str | None:
    """The whole-file sha256 (hex) in the manifest kept with a release (``manifest.env``, as it
    was verified when the release was downloaded); None when there is none that reads."""
    try:
        raw = (directory / MANIFEST).read_bytes()
        body = Envelope.decode(raw, DEFAULT_LIMITS.max_envelope_bytes).body
        return Manifest.decode(body).sha256.hex()
    except (OSError, ProtocolError):
        return None
