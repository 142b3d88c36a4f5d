"""The edge's download state machine, sans-IO: fed verified manifests and chunk frames as bytes,
it says what to write, what to ask for and what to subscribe to. The edge does the I/O.

Order is enforced: a chunk is ``accept``-ed (verified against the manifest), then, once the caller
has written it, ``commit``-ed; ``finish`` takes the whole-file sha256 only when every chunk is
committed. Driving it out of order raises ``SequenceError``.

Flow control is pull-based: at most ``window`` chunks are outstanding (asked for, not yet here).
The device subscribes only to the chunk *blocks* it still lacks chunks in, a little ahead of its
window, so chunks that the coordinator publishes once for another device that is at the same
point reach it too, and chunks it already holds mostly do not.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from .chunks import ChunkFrame, verify_chunk
from .errors import DigestMismatch, SequenceError
from .manifest import VerifiedManifest
from .messages import ChunkRequest
from .ranges import to_ranges


class Phase(StrEnum):
    DOWNLOADING = "downloading"
    COMPLETE = "complete"
    VERIFIED = "verified"


@dataclass(frozen=True)
class VerifiedChunk:
    """A chunk whose hash matched the manifest: write ``data`` at ``offset``, then commit it."""

    index: int
    offset: int
    data: memoryview


@dataclass(frozen=True)
class Plan:
    """What to do next on the wire: subscriptions to change, then (maybe) a request."""

    subscribe: tuple[int, ...]
    unsubscribe: tuple[int, ...]
    request: ChunkRequest | None


class DownloadSession:
    def __init__(self, release: VerifiedManifest, held: Iterable[int] = (), *, now: float = 0.0):
        self.release = release
        self.manifest = release.manifest
        n = self.manifest.n_chunks
        self._held = bytearray(n)
        self._held_count = 0
        for i in held:
            if 0 <= i < n and not self._held[i]:
                self._held[i] = 1
                self._held_count += 1
        self._accepted: set[int] = set()
        self._outstanding: dict[int, float] = {}
        self._subscribed: set[int] = set()
        self._new_subs: set[int] = set()
        self._fresh = True
        self._cursor = 0  # every chunk below this index is held (a scan start, not a promise)
        self.last_progress = now
        self.received = 0
        self.duplicates = 0
        self.phase = Phase.COMPLETE if self._held_count == n else Phase.DOWNLOADING

    # --- facts ---------------------------------------------------------------------------
    @property
    def held_count(self) -> int:
        return self._held_count

    @property
    def bytes_held(self) -> int:
        m = self.manifest
        if not self._held_count:
            return 0
        last_held = self._held[m.n_chunks - 1]
        return (self._held_count - last_held) * m.chunk_size + last_held * m.chunk_length(
            m.n_chunks - 1
        )

    def is_held(self, index: int) -> bool:
        return bool(self._held[index])

    def held_indices(self) -> list[int]:
        return [i for i, h in enumerate(self._held) if h]

    def missing(self) -> list[int]:
        return [i for i, h in enumerate(self._held) if not h]

    @property
    def outstanding(self) -> frozenset[int]:
        return frozenset(self._outstanding)

    @property
    def subscribed(self) -> frozenset[int]:
        return frozenset(self._subscribed)

    # --- chunks --------------------------------------------------------------------------
    def accept(self, frame: bytes) -> VerifiedChunk | None:
        """Verify a chunk frame. None for a chunk already held (duplicates are harmless)."""
        chunk = ChunkFrame.decode(frame)
        verify_chunk(self.manifest, self.release.id, chunk)
        self.received += 1
        if self._held[chunk.index]:
            self.duplicates += 1
            return None
        self._accepted.add(chunk.index)
        return VerifiedChunk(chunk.index, chunk.index * self.manifest.chunk_size, chunk.payload)

    def commit(self, chunk: VerifiedChunk, now: float) -> None:
        """The caller has written ``chunk`` to its place: count it as held."""
        if chunk.index not in self._accepted:
            raise SequenceError(f"chunk {chunk.index} committed without being accepted")
        self._accepted.discard(chunk.index)
        if self._held[chunk.index]:
            return
        self._held[chunk.index] = 1
        self._held_count += 1
        self._outstanding.pop(chunk.index, None)
        self.last_progress = now
        if self._held_count == self.manifest.n_chunks:
            self.phase = Phase.COMPLETE

    def release_accepted(self, chunk: VerifiedChunk) -> None:
        """The write of an accepted chunk failed: forget it, it will be asked for again."""
        self._accepted.discard(chunk.index)
        self._outstanding.pop(chunk.index, None)

    def finish(self, file_sha256: bytes) -> None:
        """The whole-file check. On a mismatch the session forgets every chunk (start over)."""
        if self.phase is not Phase.COMPLETE:
            raise SequenceError(f"finish() in phase {self.phase.value}; all chunks must be held")
        if file_sha256 != self.manifest.sha256:
            self._held = bytearray(self.manifest.n_chunks)
            self._held_count = 0
            self._cursor = 0
            self.phase = Phase.DOWNLOADING
            raise DigestMismatch(
                f"{self.manifest.release}: file sha256 {file_sha256.hex()[:16]}... does not "
                f"match the manifest's {self.manifest.sha256.hex()[:16]}..."
            )
        self.phase = Phase.VERIFIED

    # --- requests ------------------------------------------------------------------------
    def forget_subscriptions(self) -> None:
        """The broker lost our session: every block must be subscribed again, and everything
        outstanding asked for again."""
        self._subscribed.clear()
        self._new_subs.clear()
        self._outstanding.clear()
        self._fresh = True

    def _next_missing(self, limit: int) -> list[int]:
        out: list[int] = []
        n = self.manifest.n_chunks
        while self._cursor < n and self._held[self._cursor]:
            self._cursor += 1
        i = self._cursor
        while i < n and len(out) < limit:
            if not self._held[i]:
                out.append(i)
            i += 1
        return out

    def plan(self, device: str, now: float, window: int) -> Plan:
        """Subscriptions to change and new chunks to ask for: at most ``window`` outstanding,
        asked for once at least half a window is free (one request per chunk would be a storm)."""
        if self.phase is not Phase.DOWNLOADING:
            # forget them as we hand them out: after a digest mismatch they must be subscribed anew
            done = tuple(sorted(self._subscribed))
            self._subscribed.clear()
            return Plan((), done, None)
        m = self.manifest
        ahead = self._next_missing(2 * window)
        wanted_blocks = {m.block_of(i) for i in ahead}
        subscribe = sorted(wanted_blocks - self._subscribed)
        unsubscribe = sorted(
            b for b in self._subscribed if all(self._held[i] for i in m.block_range(b))
        )
        self._subscribed.update(subscribe)
        self._subscribed.difference_update(unsubscribe)
        self._new_subs.update(subscribe)
        room = window - len(self._outstanding)
        if self._outstanding and room < max(1, window // 2):
            room = 0  # ask in batches of half a window, not once per arriving chunk
        new = [i for i in ahead if i not in self._outstanding][: max(room, 0)]
        request = None
        if new:
            for i in new:
                self._outstanding[i] = now
            request = self._request(device, new, repair=False)
        return Plan(tuple(subscribe), tuple(unsubscribe), request)

    def stalled(self, now: float, timeout: float) -> bool:
        """True when chunks are outstanding and none has arrived (or been re-asked) for
        ``timeout``."""
        if self.phase is not Phase.DOWNLOADING or not self._outstanding:
            return False
        last_ask = max(self._outstanding.values())
        return now - max(self.last_progress, last_ask) >= timeout

    def repair(self, device: str, now: float) -> ChunkRequest | None:
        """Ask again for everything outstanding, flagged so the coordinator resends it."""
        if not self._outstanding:
            return None
        for i in self._outstanding:
            self._outstanding[i] = now
        return self._request(device, list(self._outstanding), repair=True)

    def _request(self, device: str, indices: list[int], *, repair: bool) -> ChunkRequest:
        m = self.manifest
        req = ChunkRequest(
            device=device,
            name=m.name,
            version=m.version,
            release_id=self.release.id[:16],
            ranges=tuple((s, c) for s, c in to_ranges(indices)),
            subscribed=tuple(sorted(self._new_subs)),
            fresh=self._fresh,
            repair=repair,
        )
        self._new_subs.clear()
        self._fresh = False
        return req
