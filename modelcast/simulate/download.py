"""A virtual device's download of one release, as the edge's ``downloader`` does it on the wire.

``protocol.DownloadSession`` plans it: the same chunk requests (QoS 0, at most ``window``
outstanding, asked for in half windows), the same block subscriptions (up to
``LOOKAHEAD_WINDOWS`` windows ahead), the same stall repair (everything outstanding asked for
again, flagged ``repair``, after ``stall_timeout`` without progress, longer on a slow link).
Every chunk is verified against the signed manifest (``DownloadSession.accept``), written to a
``sinks.Sink`` and committed; the whole-file sha256 is checked at the end. With a process's
``verified.VerifiedChunks`` (the default), bytes already verified in the process are accepted
by comparison, not hashed again (see ``verified`` for why that checks the same thing).

What the edge does beyond it and a virtual device does not: no write back-off after a storage
error (the chunk is simply asked for again), no periodic sync of a memory sink.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass

from edge_node.errors import StorageError
from protocol import (
    ChunkRequest,
    DigestMismatch,
    DownloadSession,
    Phase,
    ProtocolError,
    Topics,
    UpdateState,
    VerifiedManifest,
    frame_release_id,
    verify_chunk,
)

from .reporting import SimReporter, Wire
from .sinks import SharedSink, Sink, SinkFactory
from .verified import ReleaseBytes, VerifiedChunks

#: releases remembered as finished or given up: their late resends are dropped quietly
FINISHED_REMEMBERED = 16


@dataclass
class Download:
    release: VerifiedManifest
    sink: Sink
    session: DownloadSession
    chunk_prefix: str
    #: the process's verified chunks of this release (None: every chunk hashed here)
    shared: ReleaseBytes | None = None


class SimDownloader:
    def __init__(
        self,
        *,
        device: str,
        topics: Topics,
        wire: Wire,
        clock: Callable[[], float],
        reporter: SimReporter,
        sinks: SinkFactory,
        connected: Callable[[], bool],
        window: int,
        stall_timeout: float,
        verified: VerifiedChunks | None = None,
    ) -> None:
        self.device = device
        self._topics = topics
        self._wire = wire
        self._clock = clock
        self._reporter = reporter
        self._sinks = sinks
        self._connected = connected
        self._window = window
        self._stall_timeout = stall_timeout
        self._verified = verified
        self.current: Download | None = None
        self._finished: collections.deque[bytes] = collections.deque(maxlen=FINISHED_REMEMBERED)
        self._interval_ewma = 0.0
        self._last_chunk_at = 0.0
        self.chunks = 0  # chunk frames that passed their checks
        self.duplicates = 0  # ...of chunks held already
        self.stalls = 0
        self.late_resends = 0
        self.late_resend_bytes = 0
        self.write_failures = 0
        self.requests = 0
        #: ``NAME@VERSION`` -> when its download began, and when its first chunk came (wall
        #: clock): with the device's ``verified_at``, where a delivery's time goes
        self.began_at: dict[str, float] = {}
        self.first_chunk_at: dict[str, float] = {}

    @property
    def session(self) -> DownloadSession | None:
        return self.current.session if self.current is not None else None

    # --- starting --------------------------------------------------------------------------
    def begin(self, release: VerifiedManifest) -> VerifiedManifest | None:
        """Download ``release`` (resuming what a disk sink holds); the release once verified."""
        m = release.manifest
        shared = self._verified.acquire(release) if self._verified is not None else None
        try:
            sink = self._open_sink(release, shared)
            held = sink.recover()
        except StorageError as exc:
            self._let_go(shared)
            self._storage_failed(exc, release)
            return None
        verify = shared.verify if shared is not None else verify_chunk
        session = DownloadSession(release, held, now=self._clock(), verify=verify)
        self.began_at.setdefault(m.release, self._clock())
        prefix = self._topics.chunk_prefix(m.name, m.version, m.variant)
        self.current = Download(release, sink, session, prefix, shared)
        if held:
            detail = f"{len(held)}/{m.n_chunks} chunks on disk"
            self._reporter.event("resumed", model=m.name, version=m.version, detail=detail)
        else:
            self._reporter.event("downloading", model=m.name, version=m.version)
        self._reporter.set_state(UpdateState.DOWNLOADING, reason=None, release=release)
        self._reporter.flush_state()
        if session.phase is Phase.COMPLETE:
            return self._complete(self.current)
        self.pump()
        return None

    def _open_sink(self, release: VerifiedManifest, shared: ReleaseBytes | None) -> Sink:
        """A ``SharedSink`` over the process's verified chunks when kept in memory; the
        configured sink (``--disk``: the edge's part file) otherwise."""
        if shared is not None and self._verified is not None and self._verified.whole_file:
            return SharedSink(release.manifest, shared)
        return self._sinks(release)

    def _let_go(self, shared: ReleaseBytes | None) -> None:
        if shared is not None and self._verified is not None:
            self._verified.release(shared)

    # --- the wire ------------------------------------------------------------------------
    def pump(self) -> None:
        dl = self.current
        if dl is None or not self._connected():
            return
        plan = dl.session.plan(self.device, self._clock(), self._window)
        self._wire.unsubscribe(self._blocks(dl, plan.unsubscribe))
        self._wire.subscribe(self._blocks(dl, plan.subscribe))
        if plan.request is not None:
            self._send(plan.request)

    def _blocks(self, dl: Download, blocks: tuple[int, ...] | list[int]) -> list[str]:
        m = dl.release.manifest
        return [self._topics.chunk_block(m.name, m.version, b, m.variant) for b in blocks]

    def _send(self, request: ChunkRequest) -> None:
        """QoS 0, as the edge sends them (see ``edge_node.downloader``)."""
        self.requests += 1
        self._wire.publish(self._topics.request(self.device), request.encode(), qos=0)

    def on_connect(self, session_present: bool) -> None:
        dl = self.current
        if dl is not None:
            if not session_present:
                dl.session.forget_subscriptions()
            self.pump()

    def repair(self) -> None:
        """Ask again for every outstanding chunk (a stall, or a ``re-request`` command)."""
        dl = self.current
        if dl is None:
            return
        self.stalls += 1
        request = dl.session.repair(self.device, self._clock())
        if request is not None:
            self._wire.subscribe(self._blocks(dl, sorted(dl.session.subscribed)))
            self._send(request)

    def tick(self, now: float) -> None:
        dl = self.current
        if dl is None or dl.session.phase is not Phase.DOWNLOADING or not self._connected():
            return
        if dl.session.stalled(now, max(self._stall_timeout, 4 * self._interval_ewma)):
            self.repair()

    # --- chunks --------------------------------------------------------------------------
    def is_chunk(self, topic: str) -> bool:
        dl = self.current
        return dl is not None and topic.startswith(dl.chunk_prefix)

    def on_resend(self, topic: str, payload: bytes) -> VerifiedManifest | None:
        rid = frame_release_id(payload)
        if (rid is not None and rid in self._finished) or self.current is None:
            self.late_resends += 1
            self.late_resend_bytes += len(payload)
            return None
        return self.on_chunk(topic, payload)

    def on_chunk(self, topic: str, payload: bytes) -> VerifiedManifest | None:
        dl = self.current
        assert dl is not None
        try:
            chunk = dl.session.accept(payload)
        except ProtocolError as exc:
            m = dl.release.manifest
            self._reporter.reject(topic, exc, update_state=False, model=m.name, version=m.version)
            return None
        self.chunks += 1
        if chunk is None:
            self.duplicates += 1
            return None
        try:
            dl.sink.write(chunk)
        except StorageError:
            self.write_failures += 1
            dl.session.release_accepted(chunk)
            return None
        now = self._clock()
        dl.session.commit(chunk, now)
        self.first_chunk_at.setdefault(dl.release.manifest.release, now)
        if self._last_chunk_at:
            gap = now - self._last_chunk_at
            ewma = self._interval_ewma
            self._interval_ewma = gap if not ewma else 0.9 * ewma + 0.1 * gap
        self._last_chunk_at = now
        if self._reporter.state.state is not UpdateState.DOWNLOADING:
            self._reporter.set_state(UpdateState.DOWNLOADING, reason=None, release=dl.release)
        self._reporter.dirty = True
        if dl.session.phase is Phase.COMPLETE:
            return self._complete(dl)
        self.pump()
        return None

    # --- the end -------------------------------------------------------------------------
    def _complete(self, dl: Download) -> VerifiedManifest | None:
        release = dl.release
        m = release.manifest
        self._reporter.set_state(UpdateState.VERIFYING, reason=None, release=release)
        try:
            dl.session.finish(dl.sink.sha256())
            dl.sink.finalize()
        except DigestMismatch as exc:
            topic = self._topics.manifest(m.name, m.version, m.variant)
            self._reporter.reject(topic, exc, update_state=True, model=m.name, version=m.version)
            dl.sink.discard()
            dl.sink = self._open_sink(release, dl.shared)
            self.pump()
            return None
        except StorageError as exc:
            self.drop(discard=False)
            self._storage_failed(exc, release)
            return None
        self._finished.append(release.id[:16])
        self._let_go(dl.shared)
        self.current = None
        self._wire.unsubscribe(self._blocks(dl, sorted(dl.session.subscribed)))
        self._reporter.set_state(UpdateState.VERIFIED, reason=None, release=release)
        self._reporter.event("verified", model=m.name, version=m.version)
        return release

    def drop(self, *, discard: bool) -> None:
        dl = self.current
        if dl is None:
            return
        self._finished.append(dl.release.id[:16])
        self._wire.unsubscribe(self._blocks(dl, sorted(dl.session.subscribed)))
        if discard:
            dl.sink.discard()
        else:
            dl.sink.close()
        self._let_go(dl.shared)
        self.current = None

    def _storage_failed(self, exc: StorageError, release: VerifiedManifest) -> None:
        self.write_failures += 1
        m = release.manifest
        self._reporter.set_state(UpdateState.FAILED, reason=str(exc), release=release)
        self._reporter.event(
            "write-failed", reason=exc.reason, detail=str(exc), model=m.name, version=m.version
        )
