"""Chunk serving: chunk requests into the scheduler, and the sender thread that publishes what
the scheduler hands out, with flow control.

``on_request`` runs on the MQTT network thread for a request whose release is cached (the
common case: short work that never blocks) and on the worker otherwise (the release is looked
up in the database there). ``serve`` is the sender thread: it takes a few chunks at a time and
publishes each to its block topic, or to one device's resend topic, never more than
``max_pending`` unacknowledged, so a slow broker slows the sender down instead of growing a
queue; a chunk the client's queue refuses is put back in the scheduler.

Locks: ``_schedule`` (a condition, notified on new work and on stop) guards the scheduler and
the fresh-request hold, askers included; it is held for one scheduler call and never while
publishing, reading a blob or taking another lock (the devices expected to ask and the release
are read before it is taken). The release cache, the expected askers
(``release_askers.ReleaseAskers``), the chunk source, the codec (``chunk_codec``: which chunks
go out zstd-compressed, compressed once each) and the session have their own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable

import protocol

from .broker_link import BrokerLink
from .chunk_codec import ChunkCodec, CodecStats
from .chunkstore import ChunkSource, ChunkSourceError
from .progress import Progress
from .release_cache import ReleaseCache
from .release_record import ReleaseRecord
from .scheduler import ChunkScheduler, Scheduled, SchedulerStats

log = logging.getLogger(__name__)

#: Chunks taken from the scheduler at a time: small, so new requests and other releases get a
#: turn quickly; flow control is per publish anyway.
SEND_BATCH = 8
#: Safety-net timeout of every wait: threads are woken by events, this only bounds a lost wake-up.
WAKE_S = 0.5


class FreshHold:
    """When the sender waits before publishing, so that requests arriving together coalesce.

    Devices that start together (a deploy, a broker restart) send their first requests within a
    few hundred ms of each other; a chunk sent before a device's request arrived must be sent
    again for it. Holding the sender for ``hold_s`` after a *fresh* request lets those requests
    coalesce into one publish per chunk. It holds only while a device *expected* to ask for the
    release has not asked yet: the online devices the index targets with it that do not run it
    already (``release_askers``), not every online device of the fleet (those on another
    variant, outside a rollout stage, or done must not delay a delivery). A lone device, or the
    last of a wave, has nobody to wait for.

    The *askers* of a release are the devices that asked for it. They are kept until the
    release is retired (``forget``, when the scheduler forgets it: no longer in the index), not
    when nothing is pending for it. So they are bounded by the devices of each release still
    deployed. Pure: the caller holds the schedule lock.
    """

    def __init__(self, hold_s: float) -> None:
        self.hold_s = hold_s
        self._until = 0.0
        self._askers: dict[bytes, set[str]] = {}  # release id -> devices that asked for it

    def on_request(
        self,
        release_id: bytes,
        device: str,
        *,
        fresh: bool,
        expected: frozenset[str],
        now: float,
    ) -> None:
        """A request of ``device``; ``expected``: the devices expected to ask for the release."""
        askers = self._askers.setdefault(release_id, set())
        askers.add(device)
        if not fresh and self._until <= now:
            return  # nothing to arm, nothing held: spare the look at every expected device
        if expected.issubset(askers):  # nobody else to wait for
            self._until = 0.0
        elif fresh:
            self._until = max(self._until, now + self.hold_s)

    def remaining(self, now: float) -> float:
        """Seconds the sender should still hold (<= 0: none)."""
        return self._until - now

    def forget(self, release_ids: Iterable[bytes]) -> None:
        for rid in release_ids:
            self._askers.pop(rid[:16], None)

    def askers(self, release_id: bytes) -> frozenset[str]:
        return frozenset(self._askers.get(release_id, ()))

    @property
    def releases(self) -> int:
        """Releases with askers."""
        return len(self._askers)


class ChunkServer:
    def __init__(
        self,
        topics: protocol.Topics,
        releases: ReleaseCache,
        expected_askers: Callable[[bytes], frozenset[str]],
        progress: Progress,
        stopping: threading.Event,
        *,
        max_pending: int,
        fresh_hold: float,
        chunks: ChunkSource | None = None,
    ) -> None:
        self._topics = topics
        self._releases = releases
        self._expected_askers = expected_askers
        self._progress = progress
        self._stopping = stopping
        self._max_pending = max_pending
        self._chunks = chunks or ChunkSource()
        self._schedule = threading.Condition()
        self._scheduler = ChunkScheduler()
        self._hold = FreshHold(fresh_hold)
        self._read_errors: Counter[bytes] = Counter()  # the sender's own
        self._codec = ChunkCodec()  # compressed or raw, per chunk and asker (its own lock)

    # --- intake (network thread or worker) -----------------------------------------------
    def on_request(self, req: protocol.ChunkRequest) -> None:
        """Schedule what a (decoded, device-checked) request asks for; ``MalformedMessage``
        when it names no release of the fleet or another build of it."""
        record = self._releases.lookup(req.name, req.version, req.release_id)
        if record is None:
            raise protocol.MalformedMessage(
                f"{req.name}@{req.version} is not a release of fleet {self._topics.fleet}",
                reason="unknown-release",
            )
        if record.short_id != req.release_id:
            raise protocol.MalformedMessage(
                f"{record.release} has release id {record.short_id.hex()}, the request names "
                f"{req.release_id.hex()}",
                reason="wrong-release",
            )
        self._codec.on_request(record.short_id, req)
        # the devices that take a delta take it instead of the release: they count toward the
        # release's hold (its expected askers), and a delta's stream has none of its own
        held_for = self._releases.release_of(record.short_id)
        expected = self._expected_askers(held_for)
        with self._schedule:
            self._hold.on_request(
                held_for,
                req.device,
                fresh=req.fresh,
                expected=expected,
                now=time.monotonic(),
            )
            self._scheduler.on_request(req, record.n_chunks, record.block_chunks)
            if self._scheduler.has_pending:
                self._schedule.notify_all()
        log.debug(
            "device %s: %s request for %s: %d ranges, subscribed %s%s",
            req.device,
            "repair" if req.repair else "chunk",
            record.release,
            len(req.ranges),
            list(req.subscribed),
            " (fresh)" if req.fresh else "",
        )

    def forget(self, release_ids: set[bytes]) -> None:
        """Releases nobody will ask for again (retired from the index): drop their state."""
        with self._schedule:
            self._scheduler.forget(release_ids)
            self._hold.forget(release_ids)
        self._codec.forget(release_ids)

    def stats(self) -> SchedulerStats:
        with self._schedule:
            return self._scheduler.stats()

    def codec_stats(self) -> CodecStats:
        return self._codec.stats()

    def askers(self, release_id: bytes) -> frozenset[str]:
        with self._schedule:
            return self._hold.askers(release_id)

    def wake(self) -> None:
        """Wake the sender (to stop)."""
        with self._schedule:
            self._schedule.notify_all()

    def close(self) -> None:
        self._chunks.close()

    # --- the sender thread ---------------------------------------------------------------
    def serve(self, link: BrokerLink) -> None:
        """The sender: publish scheduled chunks on ``link`` until the service stops."""
        while not self._stopping.is_set():
            batch = self.next_batch(link)
            if batch:
                self.publish(link, batch)

    def next_batch(self, link: BrokerLink) -> list[Scheduled]:
        """The next chunks to publish: empty after a wait (nothing pending, the fresh hold,
        offline, or the flow-control window full) that the caller simply repeats."""
        with self._schedule:
            if not self._scheduler.has_pending:
                self._schedule.wait(WAKE_S)
                return []
            hold = self._hold.remaining(time.monotonic())
            if hold > 0:
                self._schedule.wait(hold)
                return []
        if not link.connected.wait(WAKE_S):
            return []
        if not link.wait_below(self._max_pending, WAKE_S):
            return []
        with self._schedule:
            return self._scheduler.next_batch(SEND_BATCH)

    def publish(self, link: BrokerLink, batch: list[Scheduled]) -> None:
        """Publish ``batch`` in order; what the client's queue refuses goes back to the
        scheduler (from that chunk on)."""
        published = 0
        size = 0
        for position, (rid, index, device) in enumerate(batch):
            record = self._releases.get(rid)
            if record is None:  # only releases seen in a request are ever scheduled
                log.error("chunk %d of unknown release id %s dropped", index, rid.hex())
                continue
            try:
                plain = self._chunks.read_frame(record, index)
            except (ChunkSourceError, IndexError) as exc:
                self._read_error(record, exc)
                continue
            frame = self._codec.framed(plain, index, record.release_id, device)
            topic = self._topic(record, index, device)
            if not self._await_room(link) or not link.publish(topic, frame, qos=1):
                if not self._stopping.is_set():
                    log.warning(
                        "release %s: MQTT client queue full, chunk %d put back",
                        record.release,
                        index,
                    )
                self._requeue(batch[position:])
                break
            published += 1
            size += len(frame)
        self._progress.chunks_published(published, size)

    def _topic(self, record: ReleaseRecord, index: int, device: str | None) -> str:
        if device is not None:
            return self._topics.resend(device)
        return self._topics.chunk_block(
            record.name,
            record.version,
            index // record.block_chunks,
            record.variant or None,
            record.stream or None,
        )

    def _await_room(self, link: BrokerLink) -> bool:
        """Flow control: wait until fewer than ``max_pending`` publishes are unacknowledged.
        False when the service is stopping."""
        while not link.wait_below(self._max_pending, WAKE_S):
            if self._stopping.is_set():
                return False
        return True

    def _requeue(self, chunks: Iterable[Scheduled]) -> None:
        with self._schedule:
            for rid, index, device in chunks:
                self._scheduler.requeue(rid, index, device)

    def _read_error(self, record: ReleaseRecord, exc: Exception) -> None:
        self._read_errors[record.release_id] += 1
        n = self._read_errors[record.release_id]
        if n == 1 or n % 100 == 0:
            log.error("release %s: cannot serve chunks (%d failures): %s", record.release, n, exc)
