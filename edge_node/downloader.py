"""The download of one release at a time: from its verified manifest to a whole, verified file.

``begin`` opens (or resumes) the part file and the download state machine
(``protocol.DownloadSession``; a ``model.onnx`` of the release that no longer matches its hash,
bit rot on the device's disk, becomes the part file, so its repair fetches only the chunks that
no longer match theirs); ``pump`` carries out what it plans (block subscriptions, chunk
requests); ``on_chunk`` verifies, writes and commits each chunk; the completion check hashes the
whole file and renames it. ``begin``, ``on_chunk`` and ``on_resend`` return the ``Verified``
release once that check passed (the agent hands it to the activator), None otherwise.

Storage errors (disk full, I/O errors) never touch the active model: the download pauses for a
back-off (0.5 s doubling per failure in a row, at most 30 s; chunks arriving meanwhile are
dropped and asked for again), and a release whose part file could not be opened or finished is
started over once the back-off ends (``tick`` says when). ``tick`` also repairs a stalled
download (asks again for what is outstanding) and syncs the part file every ``sync_interval``.

Owned by the agent's worker thread; it is the only writer of ``Slots.download``.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

from protocol import (
    ChunkRequest,
    DownloadSession,
    Manifest,
    Phase,
    ProtocolError,
    Target,
    Topics,
    UpdateState,
    VerifiedManifest,
    frame_release_id,
)

from .chunk_reuse import NOTHING_REUSED, bytes_to_fetch, reuse_from_disk
from .config import EdgeConfig
from .delta_updates import DeltaFailed, DeltaPlan, DeltaUpdates, megabytes
from .errors import StorageError
from .reporter import Reporter
from .shared import Download, Slots, Verified, Wire
from .storage import FINAL, PART, PartialDownload, release_dir, salvage_final, verified_file

log = logging.getLogger("modelcast.edge")

#: releases remembered as finished or given up: their late resends are dropped quietly
FINISHED_REMEMBERED = 16


def write_backoff(failures: int) -> float:
    """Seconds to pause writing after ``failures`` storage errors in a row (at least one)."""
    return min(30.0, 0.5 * 2.0 ** min(failures - 1, 6))


class Downloader:
    def __init__(
        self,
        config: EdgeConfig,
        *,
        topics: Topics,
        clock: Callable[[], float],
        wire: Wire,
        slots: Slots,
        reporter: Reporter,
        deltas: DeltaUpdates | None = None,
    ) -> None:
        self.device = config.device_id
        self._data = config.data_dir
        self._window = config.window
        self._stall_timeout = config.stall_timeout
        self._sync_interval = config.sync_interval
        self._topics = topics
        self._clock = clock
        self._wire = wire
        self._slots = slots
        self._reporter = reporter
        self._deltas = deltas
        #: releases (id prefixes) this process downloaded or gave up, most recent last: their
        #: late resends are expected on the resend topic
        self._finished: collections.deque[bytes] = collections.deque(maxlen=FINISHED_REMEMBERED)
        self._blocked_until = 0.0  # no writes before this (the back-off after a storage error)
        self._failures = 0  # storage errors in a row
        self._interval_ewma = 0.0  # the smoothed gap between chunks: slow links stall later
        self._last_chunk_at = 0.0
        self._synced_at = 0.0
        self.late_resends = 0
        self.stalls = 0

    # --- starting --------------------------------------------------------------------------
    def begin(self, release: VerifiedManifest) -> Verified | None:
        """Download ``release`` (or a delta to it: ``delta_updates``), resuming from what is on
        disk; already verified on disk (restarted before activating it): return it."""
        m = release.manifest
        directory = release_dir(self._data, m.name, m.version, m.variant)
        done = verified_file(directory, m)
        if done is not None:
            log.info("edge %s: %s already verified on disk, activating", self.device, m.release)
            return Verified(release, done)
        # a delta only for a fresh start: a part file resumes, a corrupt file is repaired
        started = any((directory / f).exists() for f in (FINAL, PART))
        plan = None
        if self._deltas is not None and not started and m.deltas:
            # a delta only when smaller than what the whole release leaves to fetch after reuse
            fetch_whole = bytes_to_fetch(directory, m)
            plan = self._deltas.plan(release, fetch_whole=fetch_whole)
        if plan is None:
            return self._start(release, directory, None)
        done = verified_file(plan.directory, plan.stream.manifest)
        if done is not None:  # downloaded before a restart, not applied yet
            return self._apply(plan, done)
        return self._start(plan.stream, plan.directory, plan)

    def _start(
        self, release: VerifiedManifest, directory: Path, delta: DeltaPlan | None
    ) -> Verified | None:
        m = release.manifest
        try:
            repairing = salvage_final(directory)  # a model.onnx that failed: reuse its chunks
            part = PartialDownload(directory, m, release.envelope)
            held = part.recover()
            # a delta's chunks are nowhere else on the device: reuse is for whole releases
            reused = reuse_from_disk(part, m, held) if delta is None else NOTHING_REUSED
        except StorageError as exc:
            self._storage_failed(exc, release=m.release)
            self._start_over_later(release if delta is None else delta.target)
            return None
        session = DownloadSession(release, held, reused=reused.indices, now=self._clock())
        prefix = self._topics.chunk_prefix(m.name, m.version, m.variant, m.stream)
        dl = Download(release, part, session, prefix, delta)
        self._slots.download = dl
        self._reporter.download_started()
        if reused.indices or reused.refused:
            self._reporter.announce_reuse(release, reused)
        self._reporter.announce_download(dl, len(held), repairing=repairing)
        self._reporter.set_state(UpdateState.DOWNLOADING, reason=None)
        self._reporter.flush_state()  # the first report after a (re)start: how much was on disk
        if session.phase is Phase.COMPLETE:
            return self._complete(dl)
        self.pump()
        return None

    def _start_over_later(self, release: VerifiedManifest) -> None:
        """Await ``release`` again: once the back-off ends, the index follower chooses it anew
        and ``begin`` resumes from the part file, re-hashing every chunk on disk."""
        m = release.manifest
        self._slots.pending = (m.name, Target(m.version, release.id, variant=m.variant))

    # --- the wire ------------------------------------------------------------------------
    def pump(self) -> None:
        """Carry out the session's plan: block subscriptions to change, chunks to ask for."""
        dl = self._slots.download
        if dl is None or not self._slots.connected or self._clock() < self._blocked_until:
            return
        plan = dl.session.plan(self.device, self._clock(), self._window)
        m = dl.release.manifest
        self._wire.unsubscribe(self._blocks(m, plan.unsubscribe))
        self._wire.subscribe(self._blocks(m, plan.subscribe))
        if plan.request is not None:
            self._send_request(plan.request)

    def _send_request(self, request: ChunkRequest) -> None:
        """Requests go out at QoS 0. At QoS 1 the persistent session replays every request not
        yet acknowledged after each reconnect, and on a flaky, congested link (acks queued behind
        chunks) that is most of them: the coordinator resent what was already on its way, and a
        replayed repair is never coalesced. A request lost in a cut is covered by the stall
        repair, like a lost chunk."""
        self._wire.publish(self._topics.request(self.device), request.encode(), qos=0)

    def on_connect(self, session_present: bool) -> None:
        dl = self._slots.download
        if dl is not None:
            if not session_present:
                dl.session.forget_subscriptions()
            self.pump()

    def repair(self) -> None:
        """Ask again for every outstanding chunk (a stall, or a ``re-request`` command)."""
        dl = self._slots.download
        if dl is not None:
            self._repair(dl)

    def _repair(self, dl: Download) -> None:
        self.stalls += 1
        m = dl.release.manifest
        request = dl.session.repair(self.device, self._clock())
        if request is None:
            return
        log.info(
            "edge %s: %s stalled at %d/%d chunks, asking again for %d",
            self.device,
            dl.label,
            dl.session.held_count,
            m.n_chunks,
            len(request.indices()),
        )
        # re-subscribing is idempotent at the broker and repairs a subscription lost in a race
        self._wire.subscribe(self._blocks(m, sorted(dl.session.subscribed)))
        self._send_request(request)

    # --- chunks --------------------------------------------------------------------------
    def on_resend(self, topic: str, payload: bytes) -> Verified | None:
        """A chunk sent again for this device alone. The topic serves every release, so a resend
        of a release this device just finished or gave up (still queued when it moved on) is
        expected, and dropped without a fuss; anything else is checked like any chunk."""
        rid = frame_release_id(payload)
        if rid is not None and rid in self._finished:
            self.late_resends += 1
            return None
        if self._slots.download is not None:
            return self.on_chunk(topic, payload)
        if rid is not None:
            self.late_resends += 1  # nothing is downloading: nothing to check it against
        return None

    def on_chunk(self, topic: str, payload: bytes) -> Verified | None:
        """A chunk of the release downloading (the hot path: one call per chunk)."""
        dl = self._slots.download
        assert dl is not None
        try:
            chunk = dl.session.accept(payload)
        except ProtocolError as exc:
            m = dl.release.manifest
            self._reporter.reject(topic, exc, update_state=False, model=m.name, version=m.version)
            return None
        if chunk is None:
            return None
        now = self._clock()
        if now < self._blocked_until:
            dl.session.release_accepted(chunk)
            return None
        try:
            dl.part.write(chunk)
        except StorageError as exc:
            dl.session.release_accepted(chunk)
            self._storage_failed(exc, release=dl.label)
            return None
        dl.session.commit(chunk, now)
        if self._failures:
            self._failures = 0
            log.info("edge %s: writes succeed again, %s continues", self.device, dl.label)
        if self._last_chunk_at:
            gap = now - self._last_chunk_at
            self._interval_ewma = (
                gap if not self._interval_ewma else (0.9 * self._interval_ewma + 0.1 * gap)
            )
        self._last_chunk_at = now
        self._reporter.progress(dl)
        if dl.session.phase is Phase.COMPLETE:
            return self._complete(dl)
        self.pump()
        return None

    # --- the end of a download -----------------------------------------------------------
    def _complete(self, dl: Download) -> Verified | None:
        """Every chunk is written, each checked against its signed hash: make the file durable
        under its final name and hand it over (``DownloadSession.finish`` says why the whole
        file is not hashed again here)."""
        self._reporter.set_state(UpdateState.VERIFYING, reason=None)
        self._reporter.flush_state()
        release = dl.release
        m = release.manifest
        try:
            dl.session.finish()
            path = dl.part.finalize()
        except StorageError as exc:
            # Start over once the back-off allows (left as it is, the complete session would
            # never try the check again).
            self.drop(discard=False)
            self._storage_failed(exc, release=dl.label)
            self._start_over_later(dl.target)
            return None
        self._finished.append(release.id[:16])
        self._slots.download = None
        self._unsubscribe_blocks(dl)
        if dl.delta is not None:
            return self._apply(dl.delta, path)
        self._reporter.set_state(UpdateState.VERIFIED, reason=None, release=release)
        whole = f"{megabytes(m.size)} (the whole release)"
        self._reporter.event("verified", model=m.name, version=m.version, detail=whole)
        return Verified(release, path)

    def _apply(self, plan: DeltaPlan, delta: Path) -> Verified | None:
        """The delta is downloaded: make the release from it, or download the release whole."""
        assert self._deltas is not None  # a plan comes from it
        try:
            return Verified(plan.target, self._deltas.apply(plan, delta))
        except DeltaFailed:
            return self.begin(plan.target)  # refused now: the whole release

    def drop(self, *, discard: bool) -> None:
        """Give up the download (``discard``: its part file too)."""
        dl = self._slots.download
        if dl is None:
            return
        self._finished.append(dl.release.id[:16])
        self._unsubscribe_blocks(dl)
        if discard:
            dl.part.discard()
        else:
            dl.part.close()
        self._slots.download = None

    def _unsubscribe_blocks(self, dl: Download) -> None:
        self._wire.unsubscribe(self._blocks(dl.release.manifest, dl.session.subscribed))

    def _blocks(self, m: Manifest, blocks: Iterable[int]) -> list[str]:  # a delta's: its own
        return [self._topics.chunk_block(m.name, m.version, b, m.variant, m.stream) for b in blocks]

    def close(self) -> None:
        """At shutdown: make what was written durable, and close the part file."""
        dl = self._slots.download
        if dl is not None:
            try:
                dl.part.sync()
            except StorageError as exc:
                log.warning("edge %s: final sync failed: %s", self.device, exc)
            dl.part.close()

    # --- storage errors and periodic work ------------------------------------------------
    def _storage_failed(self, exc: StorageError, *, release: str) -> None:
        self._failures += 1
        delay = write_backoff(self._failures)
        self._blocked_until = self._clock() + delay
        log.error(
            "edge %s: %s: %s; active model untouched, retrying in %.1fs",
            self.device,
            release,
            exc,
            delay,
        )
        self._reporter.set_state(UpdateState.FAILED, reason=str(exc))  # "write-failed: ..."
        name, _, version = release.partition(" ")[0].partition("@")
        self._reporter.event(
            "write-failed",
            reason=exc.reason,
            detail=str(exc),
            model=name or None,
            version=int(version) if version.isdigit() else None,
        )

    def _give_up_delta(self, dl: Download) -> bool:
        """A delta that stalled again without a chunk (``DeltaUpdates.stalled``): drop it and
        await its release, which is now downloaded whole."""
        assert self._deltas is not None and dl.delta is not None
        if not self._deltas.stalled(dl.delta, dl.session.held_count):
            return False
        self.drop(discard=True)
        self._start_over_later(dl.delta.target)
        return True

    def tick(self, now: float) -> bool:
        """The periodic work of a download: resume after the back-off, repair a stall, sync.
        True when the back-off ended with a release to start over: choose targets again."""
        dl = self._slots.download
        if dl is not None and dl.session.phase is Phase.DOWNLOADING:
            if self._blocked_until and now >= self._blocked_until:
                self._blocked_until = 0.0
                self.pump()
            timeout = max(self._stall_timeout, 4 * self._interval_ewma)
            if self._slots.connected and dl.session.stalled(now, timeout):
                if dl.delta is not None and self._give_up_delta(dl):
                    return True  # the release, whole
                self._repair(dl)
            if now - self._synced_at >= self._sync_interval:
                self._synced_at = now
                try:
                    dl.part.sync()
                except StorageError as exc:
                    self._storage_failed(exc, release=dl.label)
            return False
        if self._slots.pending is not None and self._blocked_until and now >= self._blocked_until:
            self._blocked_until = 0.0
            return True
        return False
