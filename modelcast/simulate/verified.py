"""Bytes verified once per worker process: ``VerifiedChunks``, a cache of the chunks that
passed their sha256, so that 500 virtual devices sharing one core do not each hash the same
release (real devices hash on their own CPUs; here the hashing was most of the simulator's
CPU time).

Why it is sound: a chunk is accepted without hashing only when its bytes are byte-for-byte
equal (a ``memcmp``) to a chunk of the same release and index that passed ``verify_chunk``
in this process; equal bytes have equal hashes, so the outcome is the one hashing would give.
Bytes that differ (a tampered chunk, a compressed frame whose output differs) are checked by
``verify_chunk`` in full: refused, or verified by their hash. The header is checked as
``verify_chunk`` checks it (release id, index range) before any comparison. A compressed frame
is decompressed (capped, as always) and its output compared. The whole-file sha256 of a device
whose every chunk is a cached chunk (the same object) is the sha256 of the cached chunks in
order: computed once per release and process (``ReleaseBytes.file_sha256``) and compared to
the manifest by each device, as before; a device holding any other bytes hashes its own.

What it costs: at most one copy of each release per process, while a device of the process
downloads it (``acquire`` / ``release``: the copy is dropped with its last user). A release
that would take the cache beyond its cap (``DEFAULT_CAP_MB``) is not cached: its devices hash
everything, like ``--verify-each``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from protocol import (
    ChunkFrame,
    Manifest,
    VerifiedManifest,
    decompress_chunk,
    verify_chunk,
)
from protocol.chunks import RELEASE_ID_LEN

#: bytes of verified chunks a worker process keeps at most (releases beyond it are hashed)
DEFAULT_CAP_MB = 512


@dataclass
class VerifyCounts:
    """What the cache saved: chunks accepted by comparison, and chunks hashed."""

    compared: int = 0
    hashed: int = 0
    files_hashed: int = 0
    files_shared: int = 0
    releases_uncached: int = 0


@dataclass(eq=False)
class ReleaseBytes:
    """One release's verified chunks in one process (each set once, never replaced)."""

    release_id: bytes
    size: int
    chunks: list[memoryview | None]
    counts: VerifyCounts
    users: int = 0
    #: sha256 of every chunk in ``chunks``, in order, once a device needed it
    file_sha256: bytes | None = field(default=None, repr=False)

    def verify(self, manifest: Manifest, release_id: bytes, frame: ChunkFrame) -> memoryview:
        """``verify_chunk``'s checks, by comparison with a cached chunk where there is one."""
        cached = self._cached(release_id, frame)
        if cached is not None:
            data = frame.payload
            if frame.compressed:
                data = memoryview(decompress_chunk(data, len(cached), frame.index))
            if data.nbytes == cached.nbytes and data.tobytes() == cached.obj:
                self.counts.compared += 1
                return cached
        data = verify_chunk(manifest, release_id, frame)
        self.counts.hashed += 1
        if frame.release_id != self.release_id[:RELEASE_ID_LEN]:
            return data  # verified against another release id (not this cache's)
        if cached is None:
            cached = memoryview(data.tobytes())  # an owned, immutable copy
            self.chunks[frame.index] = cached
        return cached if data.tobytes() == cached.obj else data

    def _cached(self, release_id: bytes, frame: ChunkFrame) -> memoryview | None:
        if frame.release_id != release_id[:RELEASE_ID_LEN] or release_id != self.release_id:
            return None
        if frame.index >= len(self.chunks):
            return None
        return self.chunks[frame.index]

    def is_cached(self, index: int, data: memoryview) -> bool:
        return self.chunks[index] is data

    def whole_sha256(self) -> bytes:
        """The sha256 of the cached chunks in order (every one must be cached)."""
        if self.file_sha256 is None:
            h = hashlib.sha256()
            for chunk in self.chunks:
                if chunk is None:
                    raise ValueError("whole_sha256 of a release not fully cached")
                h.update(chunk)
            self.file_sha256 = h.digest()
            self.counts.files_hashed += 1
        else:
            self.counts.files_shared += 1
        return self.file_sha256


class VerifiedChunks:
    """A worker process's ``ReleaseBytes``, at most ``cap_bytes`` of them together."""

    def __init__(self, cap_bytes: int = DEFAULT_CAP_MB << 20, *, whole_file: bool = True) -> None:
        self.cap_bytes = cap_bytes
        #: devices keep their chunks in memory: the whole-file sha256 is shared too (with
        #: ``--disk`` each part file hashes what it wrote, as on the edge)
        self.whole_file = whole_file
        self.counts = VerifyCounts()
        self._releases: dict[bytes, ReleaseBytes] = {}

    @property
    def reserved_bytes(self) -> int:
        return sum(r.size for r in self._releases.values())

    def __contains__(self, release_id: bytes) -> bool:
        return release_id in self._releases

    def acquire(self, release: VerifiedManifest) -> ReleaseBytes | None:
        """The release's cache for one more device; None when it does not fit the cap."""
        entry = self._releases.get(release.id)
        if entry is None:
            m = release.manifest
            if self.reserved_bytes + m.size > self.cap_bytes:
                self.counts.releases_uncached += 1
                return None
            entry = ReleaseBytes(release.id, m.size, [None] * m.n_chunks, self.counts)
            self._releases[release.id] = entry
        entry.users += 1
        return entry

    def release(self, entry: ReleaseBytes) -> None:
        """A device is done with ``entry``: its last user drops it (the release is retired
        from this process; a device that takes it later verifies it anew)."""
        entry.users -= 1
        if entry.users <= 0 and self._releases.get(entry.release_id) is entry:
            del self._releases[entry.release_id]
