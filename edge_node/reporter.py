"""What the edge says about itself: its update state, its status, telemetry events, rejections.

- The state message (``devices/ID/state``, retained, QoS 0) is paced: a change of update state
  goes out at once, download progress only marks it dirty and goes out at most once per
  ``state_interval`` (``flush_due``); while offline it stays dirty until the reconnect. The
  log says how far a download is every 10%.
- The status message (``devices/ID/status``, retained) carries the agent version, the active
  models and the device profile.
- Events go to telemetry (stored first, sent when connected).
- Every rejection is counted (``rejections``; the state's ``rejections`` field), but reported
  (a log line, an event, the state) through ``RejectionThrottle``, so a flood of bad messages
  is not a flood of reports; ``report_unreported`` summarises what a flood left unsaid.

Owned by the agent's worker thread.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

from protocol import (
    DeviceEvent,
    DeviceState,
    DeviceStatus,
    ProtocolError,
    Topics,
    UpdateState,
    VerifiedManifest,
)
from runtime import __version__

from .active import ActiveModels
from .chunk_reuse import Reused
from .rejection_throttle import RejectionThrottle
from .shared import Download, Slots, Wire

log = logging.getLogger("modelcast.edge")


class EventSink(Protocol):
    """Where events go (``telemetry.Telemetry``): numbered, stored, sent when connected."""

    def event(self, event: DeviceEvent, *, connected: bool) -> None: ...


class Reporter:
    def __init__(
        self,
        *,
        device: str,
        boot: str,
        topics: Topics,
        clock: Callable[[], float],
        wire: Wire,
        slots: Slots,
        actives: ActiveModels,
        events: EventSink,
        profile: dict[str, Any],
        state_interval: float,
    ) -> None:
        self.device = device
        self.boot = boot
        self._topics = topics
        self._clock = clock
        self._wire = wire
        self._slots = slots
        self._actives = actives
        self._events = events
        #: the device profile reported in the status (shared: the fleet settings set "config")
        self.profile = profile
        self._state_interval = state_interval
        self.state = DeviceState(
            device=device,
            state=UpdateState.IDLE,
            ts=clock(),
            boot=boot,
            active=actives.versions(),
        )
        self.dirty = True  # the state has news not published yet
        self._sent_at = 0.0
        self.rejections: collections.Counter[str] = collections.Counter()
        self._throttle = RejectionThrottle(clock)
        self._logged_decile = -1  # the download's progress last logged, in tenths

    # --- the state message ---------------------------------------------------------------
    def set_state(
        self, state: UpdateState, *, reason: str | None, release: VerifiedManifest | None = None
    ) -> None:
        """A new update state (of ``release``, by default the one downloading); anything but
        downloading goes out at once."""
        dl = self._slots.download
        rel = release or (dl.release if dl else None)
        fields: dict[str, object] = {"state": state, "reason": reason}
        if rel is not None:
            m = rel.manifest
            fields.update(model=m.name, version=m.version, chunks_total=m.n_chunks, size=m.size)
        self.state = replace(self.state, **fields)  # type: ignore[arg-type]
        self.dirty = True
        if state is not UpdateState.DOWNLOADING:
            self.flush_state()

    def download_started(self) -> None:
        self._logged_decile = -1

    def announce_download(self, dl: Download, held: int, *, repairing: bool) -> None:
        """A download (re)starts with ``held`` chunks on disk: its log line and event
        (``downloading``, ``resumed``, or ``repairing`` a corrupt file)."""
        m = dl.release.manifest
        if repairing:
            detail = (
                f"{m.n_chunks - held} of {m.n_chunks} chunks no longer match their hashes: "
                "fetching them again"
            )
            log.warning("edge %s: repairing %s: %s", self.device, dl.label, detail)
            self.event("repairing", model=m.name, version=m.version, detail=detail)
        elif held:
            log.info(
                "edge %s: resuming %s with %d/%d chunks already verified on disk",
                self.device,
                dl.label,
                held,
                m.n_chunks,
            )
            detail = f"{held}/{m.n_chunks} chunks on disk"
            self.event("resumed", model=m.name, version=m.version, detail=detail)
        else:
            log.info(
                "edge %s: downloading %s (%d bytes, %d chunks)",
                self.device,
                dl.label,
                m.size,
                m.n_chunks,
            )
            self.event("downloading", model=m.name, version=m.version)

    def announce_reuse(self, release: VerifiedManifest, reused: Reused) -> None:
        """Chunks of ``release`` copied from the device's own disk (``chunk_reuse``): its log
        line and ``reused`` event, with how many local copies no longer matched."""
        m = release.manifest
        detail = (
            f"reused {reused.size} of {m.size} bytes ({len(reused.indices)} of {m.n_chunks} "
            f"chunks) from {', '.join(reused.sources) or 'nothing'}"
        )
        if reused.refused:
            detail += f"; {reused.refused} local chunks no longer matched and are asked for"
        log.info("edge %s: %s: %s", self.device, m.release, detail)
        self.event("reused", model=m.name, version=m.version, detail=detail)

    def progress(self, dl: Download) -> None:
        """A chunk of ``dl`` was written: the state says so at its pace, the log every 10%.
        (On the chunk path: the downloader calls nothing else here per chunk.)"""
        if self.state.state is not UpdateState.DOWNLOADING:
            self.set_state(UpdateState.DOWNLOADING, reason=None)
        else:
            self.dirty = True
        s = dl.session
        decile = s.held_count * 10 // dl.release.manifest.n_chunks
        if decile != self._logged_decile:
            self._logged_decile = decile
            log.info(
                "edge %s: %s %d%% (%d/%d chunks)",
                self.device,
                dl.label,
                decile * 10,
                s.held_count,
                dl.release.manifest.n_chunks,
            )

    def rolled_back(self, name: str, version: int, *, reason: str) -> None:
        self.state = replace(self.state, model=name, version=version)
        self.set_state(UpdateState.ACTIVE, reason=reason)

    def flush_due(self, now: float) -> None:
        """Publish the state if it changed and ``state_interval`` has passed since the last."""
        if self.dirty and now - self._sent_at >= self._state_interval:
            self.flush_state()

    def flush_state(self) -> None:
        dl = self._slots.download
        s = self.state
        extra: dict[str, object] = {}
        if dl is not None:
            extra = {
                "chunks_held": dl.session.held_count,
                "bytes_held": dl.session.bytes_held,
                "received": dl.session.received,
                "duplicates": dl.session.duplicates,
                "bytes_reused": dl.session.bytes_reused,
            }
        elif s.state in (UpdateState.ACTIVE, UpdateState.VERIFIED, UpdateState.ACTIVATING):
            extra = {"chunks_held": s.chunks_total, "bytes_held": s.size}
        self.state = replace(
            s,
            ts=self._clock(),
            active=self._actives.versions(),
            rejections=sum(self.rejections.values()),
            **extra,  # type: ignore[arg-type]
        )
        self.dirty = False
        self._sent_at = self._clock()
        if self._slots.connected:
            # QoS 0: a latest-value message; QoS 1 would replay stale states after a cut
            # (paho resends unacknowledged ones), and each (re)connect publishes it afresh
            self._wire.publish(
                self._topics.state(self.device), self.state.encode(), qos=0, retain=True
            )
        else:
            self.dirty = True

    # --- status and events ---------------------------------------------------------------
    def publish_status(self) -> None:
        self.profile["variants"] = self._actives.variants()
        status = DeviceStatus(
            self.device,
            online=True,
            ts=self._clock(),
            boot=self.boot,
            agent=__version__,
            active=self._actives.versions(),
            profile=self.profile,
        )
        self._wire.publish(self._topics.status(self.device), status.encode(), qos=0, retain=True)

    def event(
        self,
        event: str,
        *,
        reason: str | None = None,
        detail: str | None = None,
        topic: str | None = None,
        model: str | None = None,
        version: int | None = None,
    ) -> None:
        msg = DeviceEvent(
            device=self.device,
            event=event,
            ts=self._clock(),
            reason=reason,
            detail=detail,
            topic=topic,
            model=model,
            version=version,
        )
        self._events.event(msg, connected=self._slots.connected)

    # --- rejections ----------------------------------------------------------------------
    def reject(
        self,
        topic: str,
        exc: ProtocolError,
        *,
        update_state: bool,
        model: str | None = None,
        version: int | None = None,
    ) -> None:
        """Count a message refused on ``topic``, and report it unless a flood of them is on
        (``update_state``: the state message says REJECTED and why)."""
        self.rejections[exc.reason] += 1
        unreported = self._throttle.admit(exc.reason)
        fields: dict[str, object] = {}
        if update_state:
            fields = {"state": UpdateState.REJECTED, "reason": str(exc)[:500]}
            if model is not None:
                fields.update(model=model, version=version)
            self.state = replace(self.state, **fields)  # type: ignore[arg-type]
        if unreported is None:  # a flood: counted, and the state goes out at its usual pace
            self.dirty = True
            return
        more = f" ({unreported} more of these not reported one by one)" if unreported else ""
        log.warning("edge %s: rejected message on %s: %s%s", self.device, topic, exc, more)
        self.event(
            "rejected",
            reason=exc.reason,
            detail=(exc.detail[:500] + more),
            topic=topic,
            model=model,
            version=version,
        )
        if update_state:
            self.flush_state()
        else:
            self.dirty = True

    def report_unreported(self) -> None:
        """After a flood: how many rejections of each reason were only counted."""
        for reason, count in self._throttle.due():
            log.warning(
                "edge %s: %d more messages rejected as %s (not reported one by one)",
                self.device,
                count,
                reason,
            )
            self.event("rejected", reason=reason, detail=f"{count} more not reported one by one")
