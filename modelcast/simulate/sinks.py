"""Where a virtual device puts the chunks it verified.

- ``MemorySink`` (the default) keeps no file: it hashes the release as it streams in, in order,
  so that the whole-file sha256 is checked like the edge checks it. A chunk that arrives ahead
  of the hashed prefix waits in memory until the chunks before it are in; past
  ``max_waiting`` bytes waiting, a chunk is refused like a failed write (``StorageError``: the
  device asks for it again, as a repair), so memory stays bounded whatever the broker does.
- ``SharedSink`` (the default unless ``--verify-each``) keeps no file and no bytes: a
  process's devices share the chunks verified once (``verified.ReleaseBytes``), and the
  whole-file sha256 of those chunks is computed once per process (see ``verified``).
- With ``--disk DIR``, each device writes exactly as the edge does: ``edge_node.storage``'s
  part file under ``DIR/DEVICE/models/...`` (pwrite, journal, background flush thread),
  resumed on the next run; the whole-file sha256, which the edge does not take (each chunk was
  checked), is the part file read back (``DiskSink``).

All have the part file's calls (``edge_node.storage.PartialDownload``): ``recover``, ``write``,
``finalize``, ``close``, ``discard``; and ``sha256``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from edge_node.errors import StorageError
from edge_node.storage import PART, PartialDownload, release_dir
from protocol import Manifest, VerifiedChunk, VerifiedManifest
from runtime.files import sha256_file

from .verified import ReleaseBytes

#: bytes of chunks that arrived ahead of the hashed prefix, kept per device at most
DEFAULT_MAX_WAITING = 4 << 20


class Sink(Protocol):
    def recover(self) -> list[int]: ...

    def write(self, chunk: VerifiedChunk) -> None: ...

    def sha256(self) -> bytes: ...

    def finalize(self) -> object: ...

    def close(self) -> None: ...

    def discard(self) -> None: ...


SinkFactory = Callable[[VerifiedManifest], Sink]


class MemorySink:
    def __init__(self, manifest: Manifest, max_waiting: int = DEFAULT_MAX_WAITING) -> None:
        self._n_chunks = manifest.n_chunks
        self._max_waiting = max_waiting
        self._hash = hashlib.sha256()
        self._next = 0  # the first chunk not hashed yet
        self._waiting: dict[int, memoryview] = {}
        self._waiting_bytes = 0

    def recover(self) -> list[int]:
        return []  # nothing survives a restart

    @property
    def waiting_bytes(self) -> int:
        return self._waiting_bytes

    def write(self, chunk: VerifiedChunk) -> None:
        if chunk.index != self._next:
            if chunk.index < self._next or chunk.index in self._waiting:
                return  # hashed, or waiting, already
            if self._waiting_bytes + len(chunk.data) > self._max_waiting:
                raise StorageError(
                    f"chunk {chunk.index}: {self._waiting_bytes} bytes already wait for chunk "
                    f"{self._next} (a virtual device keeps at most {self._max_waiting})"
                )
            self._waiting[chunk.index] = chunk.data
            self._waiting_bytes += len(chunk.data)
            return
        self._hash.update(chunk.data)
        self._next += 1
        while self._next in self._waiting:
            data = self._waiting.pop(self._next)
            self._waiting_bytes -= len(data)
            self._hash.update(data)
            self._next += 1

    def sha256(self) -> bytes:
        if self._next != self._n_chunks:
            raise StorageError(f"{self._next} of {self._n_chunks} chunks hashed")
        return self._hash.digest()

    def finalize(self) -> None:
        return None

    def close(self) -> None:
        self._waiting.clear()
        self._waiting_bytes = 0

    def discard(self) -> None:
        self.close()


class SharedSink:
    """A memory sink over a process's verified chunks: it remembers which chunks it holds (a
    byte per chunk) and, for a chunk that is not the cache's own object, the bytes."""

    def __init__(self, manifest: Manifest, entry: ReleaseBytes) -> None:
        self._n_chunks = manifest.n_chunks
        self._entry = entry
        self._have = bytearray(manifest.n_chunks)
        self._count = 0
        self._own: dict[int, memoryview] = {}  # bytes that are not the cached chunk

    def recover(self) -> list[int]:
        return []

    def write(self, chunk: VerifiedChunk) -> None:
        if self._have[chunk.index]:
            return
        self._have[chunk.index] = 1
        self._count += 1
        if not self._entry.is_cached(chunk.index, chunk.data):
            self._own[chunk.index] = chunk.data

    def sha256(self) -> bytes:
        """The cached release's sha256 (once per process) when every chunk is the cached one;
        else this device's own bytes hashed."""
        if self._count != self._n_chunks:
            raise StorageError(f"{self._count} of {self._n_chunks} chunks held")
        if not self._own:
            return self._entry.whole_sha256()
        self._entry.counts.files_hashed += 1
        h = hashlib.sha256()
        for i, cached in enumerate(self._entry.chunks):
            data = self._own.get(i, cached)
            assert data is not None  # every chunk not in _own is a cached one
            h.update(data)
        return h.digest()

    def finalize(self) -> None:
        return None

    def close(self) -> None:
        self._own.clear()

    def discard(self) -> None:
        self.close()


def memory_sinks(max_waiting: int = DEFAULT_MAX_WAITING) -> SinkFactory:
    return lambda release: MemorySink(release.manifest, max_waiting)


class DiskSink(PartialDownload):
    """The edge's part file, and the whole-file sha256 of it as written (read back)."""

    def sha256(self) -> bytes:
        try:
            return sha256_file(self.dir / PART)
        except OSError as exc:
            raise StorageError(f"reading {self.dir / PART} back: {exc}") from exc


def disk_sinks(root: Path, device: str) -> SinkFactory:
    """Part files under ``root/device``, laid out as the edge lays out its data directory."""

    def open_part(release: VerifiedManifest) -> Sink:
        m = release.manifest
        directory = release_dir(root / device, m.name, m.version, m.variant)
        return DiskSink(directory, m, release.envelope)

    return open_part
