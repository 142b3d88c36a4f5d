"""Which chunks to publish next: the coalescing rule of docs/PROTOCOL.md ("Chunk request").

Pure logic, no I/O and no locking: the service calls it under its own lock.

Each release has its own event counter (a logical clock). A request that lists block ``b`` in
``subscribed`` stamps ``subs[(device, b)]`` with the counter; handing chunk ``c`` to the publisher
stamps ``last_sent[c]``. A requested chunk is skipped (coalesced) when it was handed to the
publisher *after* the requesting device subscribed to its block: the device subscribed before it
sent the request, so the broker was already routing that block to it and the chunk is on its way.
Stamping the subscription when the request is *processed* (not when the device subscribed) can
only make the stamp later than the truth, so the rule errs towards resending, never towards
starving a device. A block the device never reported is treated as not subscribed (always send),
and a ``repair`` request is never coalesced: the device says that what was on its way got lost.

A chunk published again (it went out on its block before) for one device only goes to that
device's resend topic, not to the block: every other device on the block already had its chance
at it, so sending it there again would cost their links a duplicate each. Such a direct send does
not stamp ``last_sent`` (the block's subscribers did not get it). A chunk that two or more devices
asked for before it went out is published on the block, once.
"""

from __future__ import annotations

import heapq
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from protocol import ChunkRequest

DEFAULT_MAX_REQUEST_CHUNKS = 256

#: A chunk to publish: its index, and the one device to send it to (None: its block topic).
Send = tuple[int, str | None]
#: One entry of :meth:`ChunkScheduler.next_batch`: release id (16 bytes), chunk index, device.
Scheduled = tuple[bytes, int, str | None]


@dataclass(frozen=True)
class SchedulerStats:
    """A snapshot of the scheduler's counters (chunk counts are chunk indices, not bytes)."""

    requests: int = 0
    chunks_requested: int = 0
    chunks_coalesced: int = 0
    chunks_sent: int = 0
    chunks_direct: int = 0  # of chunks_sent: resends to one device's own topic
    chunks_out_of_range: int = 0
    chunks_dropped: int = 0
    pending: int = 0
    device_requests: dict[str, int] = field(default_factory=dict)


class _Release:
    """Scheduling state of one release."""

    def __init__(self, n_chunks: int, block_chunks: int) -> None:
        self.n_chunks = n_chunks
        self.block_chunks = block_chunks
        self.clock = 0
        # device -> block -> clock value when the device reported subscribing to it
        self.subs: dict[str, dict[int, int]] = {}
        # chunk -> clock value when it was last handed to the publisher
        self.last_sent: dict[int, int] = {}
        self.pending: list[int] = []  # a heap, ascending chunk order
        # pending chunk -> the devices that asked for it since it was last handed out
        # (None among them: put back from a block publish, so it goes to the block again)
        self.askers: dict[int, set[str | None]] = {}

    def tick(self) -> int:
        self.clock += 1
        return self.clock

    def add(self, index: int, device: str | None) -> None:
        askers = self.askers.get(index)
        if askers is None:
            askers = self.askers[index] = set()
            heapq.heappush(self.pending, index)
        askers.add(device)

    def pop(self) -> Send:
        index = heapq.heappop(self.pending)
        askers = self.askers.pop(index)
        only = next(iter(askers)) if len(askers) == 1 else None
        if only is not None and index in self.last_sent:
            return index, only  # a resend for one device: its own topic
        self.last_sent[index] = self.tick()
        return index, None


class ChunkScheduler:
    """Turns chunk requests into a deduplicated stream of (release id, chunk index) to publish."""

    def __init__(self, max_request_chunks: int = DEFAULT_MAX_REQUEST_CHUNKS) -> None:
        if max_request_chunks < 1:
            raise ValueError("max_request_chunks must be at least 1")
        self.max_request_chunks = max_request_chunks
        self._releases: dict[bytes, _Release] = {}
        self._ready: deque[bytes] = deque()  # releases with pending chunks, round-robin order
        self._requests = 0
        self._chunks_requested = 0
        self._chunks_coalesced = 0
        self._chunks_sent = 0
        self._chunks_direct = 0
        self._chunks_out_of_range = 0
        self._chunks_dropped = 0
        self._device_requests: Counter[str] = Counter()

    # --- input ---------------------------------------------------------------------------
    def on_request(self, req: ChunkRequest, n_chunks: int, block_chunks: int) -> None:
        """Apply one (already validated against its release) request."""
        rid = req.release_id[:16]
        rel = self._releases.get(rid)
        if rel is None:
            rel = self._releases[rid] = _Release(n_chunks, block_chunks)
        self._requests += 1
        self._device_requests[req.device] += 1
        now = rel.tick()

        if req.fresh:
            rel.subs.pop(req.device, None)
        if req.subscribed:
            n_blocks = -(-rel.n_chunks // rel.block_chunks)
            device_subs = rel.subs.setdefault(req.device, {})
            for block in req.subscribed:
                if 0 <= block < n_blocks:
                    device_subs[block] = now
        device_subs = rel.subs.get(req.device, {})

        added = 0
        had_pending = bool(rel.pending)
        seen: set[int] = set()
        for start, count in req.ranges:
            self._chunks_requested += count
            end = min(start + count, rel.n_chunks)
            valid = max(0, end - start)
            self._chunks_out_of_range += count - valid
            for index in range(start, start + valid):
                if added >= self.max_request_chunks:
                    # Past the cap nothing is looked at: the rest of the request is dropped
                    # (the device asks again for what it still lacks).
                    self._chunks_dropped += start + valid - index
                    break
                if index in seen:
                    continue
                seen.add(index)
                if not req.repair and self._on_its_way(rel, device_subs, index):
                    self._chunks_coalesced += 1
                    continue
                rel.add(index, req.device)
                added += 1
        if rel.pending and not had_pending:
            self._ready.append(rid)

    @staticmethod
    def _on_its_way(rel: _Release, device_subs: dict[int, int], index: int) -> bool:
        subscribed_at = device_subs.get(index // rel.block_chunks)
        if subscribed_at is None:
            return False  # the device never said it listens there: it must get a publish
        return rel.last_sent.get(index, -1) > subscribed_at

    def forget(self, release_ids: Iterable[bytes]) -> None:
        """Drop all state of releases nobody will ask for again (e.g. no longer deployed)."""
        for rid in release_ids:
            rel = self._releases.pop(rid[:16], None)
            if rel is not None and rel.pending:
                self._ready.remove(rid[:16])

    def requeue(self, release_id: bytes, index: int, device: str | None = None) -> None:
        """Put back a chunk that could not be published, for the same destination. Its
        ``last_sent`` stamp stays: until it is sent again it is pending, so a request that would
        have been coalesced by the stamp still gets the chunk."""
        rel = self._releases.get(release_id[:16])
        if rel is None or not 0 <= index < rel.n_chunks:
            return
        was_idle = not rel.pending
        rel.add(index, device)
        self._chunks_sent -= 1
        self._chunks_direct -= device is not None
        if was_idle:
            self._ready.append(release_id[:16])

    # --- output --------------------------------------------------------------------------
    @property
    def has_pending(self) -> bool:
        return bool(self._ready)

    @property
    def pending(self) -> int:
        return sum(len(r.pending) for r in self._releases.values())

    def next_batch(self, max_chunks: int) -> list[Scheduled]:
        """Up to ``max_chunks`` chunks to publish now, lowest index first within a release and
        one chunk per release in turn, so a big release cannot starve a small one. Each says
        where it goes: its block (device None) or one device's resend topic."""
        batch: list[Scheduled] = []
        while self._ready and len(batch) < max_chunks:
            rid = self._ready.popleft()
            rel = self._releases[rid]
            index, device = rel.pop()
            batch.append((rid, index, device))
            self._chunks_direct += device is not None
            if rel.pending:
                self._ready.append(rid)
        self._chunks_sent += len(batch)
        return batch

    def stats(self) -> SchedulerStats:
        return SchedulerStats(
            requests=self._requests,
            chunks_requested=self._chunks_requested,
            chunks_coalesced=self._chunks_coalesced,
            chunks_sent=self._chunks_sent,
            chunks_direct=self._chunks_direct,
            chunks_out_of_range=self._chunks_out_of_range,
            chunks_dropped=self._chunks_dropped,
            pending=self.pending,
            device_requests=dict(self._device_requests),
        )
