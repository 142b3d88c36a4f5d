"""The edge's download state machine, sans-IO: fed verified manifests and chunk frames as bytes,
it says what to write, what to ask for and what to subscribe to. The edge does the I/O.

Order is enforced: a chunk is ``accept``-ed (verified against the manifest), then, once the caller
has written it, ``commit``-ed; ``finish`` only once every chunk is committed. Driving it out of
order raises ``SequenceError``.

Flow control is pull-based: at most ``window`` chunks are outstanding (asked for, not yet here).
The device subscribes only to the chunk *blocks* it still lacks chunks in, up to
``LOOKAHEAD_WINDOWS`` windows ahead of its position, so chunks that the coordinator publishes once
for another device that is at the same point, or somewhat ahead, reach it too, and chunks it
already holds mostly do not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from .chunks import ChunkFrame, verify_chunk
from .compression import SUPPORTED_CODECS
from .errors import DigestMismatch, SequenceError
from .manifest import Manifest, VerifiedManifest
from .messages import ChunkRequest
from .ranges import to_ranges

#: How far ahead a device listens, in windows of missing chunks. Devices of one rollout drift
#: apart (links, CPUs); one that falls further behind the leader than this misses the leader's
#: publications and has them published again. Listening ahead costs the device nothing (it gets
#: chunks it needs anyway, earlier) and the broker little (a chunk queued for many subscribers is
#: stored once). Measured with ``python -m bench`` (fanout, 20 edges): 2 windows published
#: 1.7-1.9 times the model, 8 windows 1.2-1.3 times.
LOOKAHEAD_WINDOWS = 8

#: checks a chunk frame against the manifest and returns its bytes (``chunks.verify_chunk``'s
#: signature); raises ``ChunkRejected`` for a chunk that does not match
ChunkVerifier = Callable[[Manifest, bytes, ChunkFrame], memoryview]


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
    """One release's download. ``held``: chunks already in the part file (a resume); ``reused``:
    chunks the edge copied (and verified) from another release of the same model on its disk.
    Both are known before the first ``plan``, so neither is ever asked for; reused chunks are
    also counted apart (``reused_count``, ``bytes_reused``) for the state report. ``verify``
    checks each chunk (``verify_chunk``, unless a caller that has verified the same bytes
    already, such as the simulator, brings its own: it must refuse what ``verify_chunk``
    refuses)."""

    def __init__(
        self,
        release: VerifiedManifest,
        held: Iterable[int] = (),
        *,
        reused: Iterable[int] = (),
        now: float = 0.0,
        verify: ChunkVerifier = verify_chunk,
    ):
        self.release = release
        self._verify = verify
        self.manifest = release.manifest
        n = self.manifest.n_chunks
        self._held = bytearray(n)
        self._held_count = 0
        for i in held:
            if 0 <= i < n and not self._held[i]:
                self._held[i] = 1
                self._held_count += 1
        self.reused_count = 0
        self.bytes_reused = 0
        for i in reused:
            if 0 <= i < n and not self._held[i]:
                self._held[i] = 1
                self._held_count += 1
                self.reused_count += 1
                self.bytes_reused += self.manifest.chunk_length(i)
        self._accepted: set[int] = set()
        self._outstanding: dict[int, float] = {}
        self._lost: set[int] = set()  # received but not kept (the write failed): re-ask as repair
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
        data = self._verify(self.manifest, self.release.id, chunk)
        self.received += 1
        if self._held[chunk.index]:
            self.duplicates += 1
            return None
        self._accepted.add(chunk.index)
        return VerifiedChunk(chunk.index, chunk.index * self.manifest.chunk_size, data)

    def commit(self, chunk: VerifiedChunk, now: float) -> None:
        """The caller has written ``chunk`` to its place: count it as held."""
        if chunk.index not in self._accepted:
            raise SequenceError(f"chunk {chunk.index} committed without being accepted")
        self._accepted.discard(chunk.index)
        self._lost.discard(chunk.index)
        if self._held[chunk.index]:
            return
        self._held[chunk.index] = 1
        self._held_count += 1
        self._outstanding.pop(chunk.index, None)
        self.last_progress = now
        if self._held_count == self.manifest.n_chunks:
            self.phase = Phase.COMPLETE

    def release_accepted(self, chunk: VerifiedChunk) -> None:
        """The write of an accepted chunk failed: forget it, it will be asked for again, as a
        repair (the coordinator would otherwise skip it as already on its way)."""
        self._accepted.discard(chunk.index)
        self._outstanding.pop(chunk.index, None)
        self._lost.add(chunk.index)

    def finish(self, file_sha256: bytes | None = None) -> None:
        """Every chunk is held: the download is verified.

        Each chunk matched its hash in the signed manifest, on arrival (``accept``) or, for the
        chunks the caller brought as ``held`` or ``reused``, when the caller hashed them, so the
        file they make up at their offsets is the one the manifest describes; hashing it whole
        again would check the same bytes twice (docs/PROTOCOL.md, "Verified"). A caller that
        did hash the whole file (the simulator, a file read back) passes ``file_sha256``, and it
        must match: on a mismatch the session forgets every chunk (start over)."""
        if self.phase is not Phase.COMPLETE:
            raise SequenceError(f"finish() in phase {self.phase.value}; all chunks must be held")
        if file_sha256 is not None and file_sha256 != self.manifest.sha256:
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

    def _missing_runs(self, limit: int) -> list[range]:
        """The first ``limit`` missing chunks, in order, as runs of consecutive indices. Called
        after every chunk: runs of held and missing chunks are found with ``bytearray.find``,
        not one by one, and never listed index by index."""
        runs: list[range] = []
        held = self._held
        n = len(held)
        i = held.find(0, self._cursor)
        self._cursor = n if i < 0 else i
        left = limit
        while i >= 0 and left > 0:
            end = held.find(1, i)  # the end of this run of missing chunks
            if end < 0:
                end = n
            take = min(end - i, left)
            runs.append(range(i, i + take))
            left -= take
            i = held.find(0, end) if end < n else -1
        return runs

    def _block_held(self, block: int) -> bool:
        r = self.manifest.block_range(block)
        return self._held.find(0, r.start, r.stop) < 0

    def _unasked(self, runs: list[range], room: int) -> list[int]:
        """The first ``room`` chunks of ``runs`` not outstanding already."""
        new: list[int] = []
        for run in runs:
            for i in run:
                if i not in self._outstanding:
                    new.append(i)
                    if len(new) == room:
                        return new
        return new

    def plan(self, device: str, now: float, window: int) -> Plan:
        """Subscriptions to change and new chunks to ask for: at most ``window`` outstanding,
        asked for once at least half a window is free (one request per chunk would be a storm).
        Called after every chunk, so it works on runs of chunks, not on lists of them."""
        if self.phase is not Phase.DOWNLOADING:
            # forget them as we hand them out: after a digest mismatch they must be subscribed anew
            done = tuple(sorted(self._subscribed))
            self._subscribed.clear()
            return Plan((), done, None)
        runs = self._missing_runs(LOOKAHEAD_WINDOWS * window)
        per_block = self.manifest.block_chunks
        wanted_blocks: set[int] = set()
        for run in runs:
            wanted_blocks.update(range(run.start // per_block, (run.stop - 1) // per_block + 1))
        subscribe = sorted(wanted_blocks - self._subscribed)
        unsubscribe = sorted(b for b in self._subscribed if self._block_held(b))
        self._subscribed.update(subscribe)
        self._subscribed.difference_update(unsubscribe)
        self._new_subs.update(subscribe)
        room = window - len(self._outstanding)
        if self._outstanding and room < max(1, window // 2):
            room = 0  # ask in batches of half a window, not once per arriving chunk
        new = self._unasked(runs, room) if room > 0 else []
        request = None
        if new:
            for i in new:
                self._outstanding[i] = now
            repair = not self._lost.isdisjoint(new)
            self._lost.difference_update(new)
            request = self._request(device, new, repair=repair)
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
            codecs=SUPPORTED_CODECS,
        )
        self._new_subs.clear()
        self._fresh = False
        return req
