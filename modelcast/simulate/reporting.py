"""What a virtual device says, on the topics and in the payloads of a real edge
(``edge_node.reporter`` and ``edge_node.telemetry``): its update state, its status, telemetry
events and metrics samples, rejections.

- The state (``devices/ID/state``, retained, QoS 0): a change goes out at once, download
  progress at most once per ``state_interval`` (``flush_due``); offline it waits for the
  reconnect.
- The status (``devices/ID/status``, retained, QoS 0): agent version, active models, profile.
- Events and metrics samples (``devices/ID/telemetry/...``, QoS 1), numbered by one ``seq`` per
  boot. The edge stores them on disk first; a virtual device hands them to paho, which keeps
  QoS 1 messages made offline for the reconnect (at most ``link.MAX_QUEUED``): ``made``,
  ``refused`` (paho's queue was full) count them.
- Rejections are counted by reason and reported through the edge's ``RejectionThrottle``.

A sample carries what a virtual device knows: uptime, reconnects, bytes received, the active
versions; no inference statistics, process figures or disk space (it runs no model).
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

from edge_node.rejection_throttle import RejectionThrottle
from protocol import (
    DeviceEvent,
    DeviceState,
    DeviceStatus,
    DownloadSession,
    MetricsSample,
    ProtocolError,
    Topics,
    UpdateState,
    VerifiedManifest,
)
from runtime import __version__


class Wire(Protocol):
    """The MQTT calls a virtual device makes (``link.Link``; a recording fake in tests)."""

    def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> int | None: ...

    def subscribe(self, topics: list[str], qos: int = 1) -> None: ...

    def unsubscribe(self, topics: list[str]) -> None: ...


class SimReporter:
    def __init__(
        self,
        *,
        device: str,
        boot: str,
        topics: Topics,
        wire: Wire,
        clock: Callable[[], float],
        profile: dict[str, Any],
        active: Callable[[], dict[str, int]],
        session: Callable[[], DownloadSession | None],
        state_interval: float,
    ) -> None:
        self.device = device
        self.boot = boot
        self._topics = topics
        self._wire = wire
        self._clock = clock
        self._active = active
        self._session = session
        self._state_interval = state_interval
        self._started = clock()
        #: the status profile (the pushed configuration lands in ``config``)
        self.profile = profile
        self.connected = False
        self.state = DeviceState(device, UpdateState.IDLE, clock(), boot=boot, active=active())
        self.dirty = True
        self._sent_at = 0.0
        self.seq = 0
        self.made = 0  # telemetry messages made (events and samples)
        self.refused = 0  # ...that paho's queue had no room for
        self.rejections: collections.Counter[str] = collections.Counter()
        self._throttle = RejectionThrottle(clock)

    # --- the state message ---------------------------------------------------------------
    def set_state(
        self,
        state: UpdateState,
        *,
        reason: str | None,
        release: VerifiedManifest | None,
    ) -> None:
        """A new update state of ``release``; anything but downloading goes out at once."""
        fields: dict[str, Any] = {"state": state, "reason": reason}
        if release is not None:
            m = release.manifest
            fields.update(model=m.name, version=m.version, chunks_total=m.n_chunks, size=m.size)
        self.state = replace(self.state, **fields)
        self.dirty = True
        if state is not UpdateState.DOWNLOADING:
            self.flush_state()

    def flush_due(self, now: float) -> None:
        if self.dirty and now - self._sent_at >= self._state_interval:
            self.flush_state()

    def flush_state(self) -> None:
        s = self.state
        session = self._session()
        extra: dict[str, Any] = {}
        if session is not None:
            extra = {
                "chunks_held": session.held_count,
                "bytes_held": session.bytes_held,
                "received": session.received,
                "duplicates": session.duplicates,
            }
        elif s.state in (UpdateState.ACTIVE, UpdateState.VERIFIED, UpdateState.ACTIVATING):
            extra = {"chunks_held": s.chunks_total, "bytes_held": s.size}
        now = self._clock()
        self.state = replace(
            s, ts=now, active=self._active(), rejections=sum(self.rejections.values()), **extra
        )
        self._sent_at = now
        self.dirty = not self.connected
        if self.connected:
            payload = self.state.encode()
            self._wire.publish(self._topics.state(self.device), payload, qos=0, retain=True)

    # --- status, events, samples ---------------------------------------------------------
    def publish_status(self) -> None:
        status = DeviceStatus(
            self.device,
            online=True,
            ts=self._clock(),
            boot=self.boot,
            agent=__version__,
            active=self._active(),
            profile=self.profile,
        )
        self._wire.publish(self._topics.status(self.device), status.encode(), qos=0, retain=True)

    def offline_status(self) -> tuple[str, bytes]:
        """The status a clean stop publishes (and the will says)."""
        offline = DeviceStatus(self.device, online=False, ts=self._clock(), boot=self.boot)
        return self._topics.status(self.device), offline.encode()

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
        self.seq += 1
        msg = DeviceEvent(
            device=self.device,
            event=event,
            ts=self._clock(),
            boot=self.boot,
            seq=self.seq,
            reason=reason,
            detail=detail,
            topic=topic,
            model=model,
            version=version,
            hist=not self.connected,
        )
        self._telemetry("events", msg.encode())

    def sample(self, *, interval: float, reconnects: int, bytes_received: int) -> None:
        self.seq += 1
        now = self._clock()
        msg = MetricsSample(
            device=self.device,
            boot=self.boot,
            seq=self.seq,
            ts=now,
            hist=not self.connected,
            interval_s=interval,
            uptime_s=max(0.0, now - self._started),
            reconnects=reconnects,
            bytes_received=bytes_received,
            active=self._active(),
        )
        self._telemetry("metrics", msg.encode())

    def _telemetry(self, kind: str, payload: bytes) -> None:
        self.made += 1
        if self._wire.publish(self._topics.telemetry(self.device, kind), payload, qos=1) is None:
            self.refused += 1

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
        """Count a message refused on ``topic``; report it unless a flood of them is on."""
        self.rejections[exc.reason] += 1
        if update_state:
            fields: dict[str, Any] = {"state": UpdateState.REJECTED, "reason": str(exc)[:500]}
            if model is not None:
                fields.update(model=model, version=version)
            self.state = replace(self.state, **fields)
        self.dirty = True
        unreported = self._throttle.admit(exc.reason)
        if unreported is None:
            return
        more = f" ({unreported} more of these not reported one by one)" if unreported else ""
        self.event(
            "rejected",
            reason=exc.reason,
            detail=exc.detail[:500] + more,
            topic=topic,
            model=model,
            version=version,
        )
        if update_state:
            self.flush_state()

    def report_unreported(self) -> None:
        for reason, count in self._throttle.due():
            self.event("rejected", reason=reason, detail=f"{count} more not reported one by one")
