"""Ingestion: the device messages the coordinator receives, decoded, checked and handed on.

Paho's network thread calls ``on_message``. Telemetry (most of what devices send) and chunk requests
whose release is cached (their round trip paces every download) are handled right there: the work is
short and never blocks (decode; append to the telemetry buffer, or to the scheduler, each under its
own short lock). Handing each to the worker cost a thread wake-up per message, measured as half the
telemetry ingest rate (bench telemetry_raw_ratio 0.40-0.50 -> 0.55-0.58) and a slower delivery
(delivery_ratio 0.51-0.64 -> 0.71-0.75). Chunk requests, and reports (telemetry, state, status),
over the device's rate limit of their kind (``ratelimit``) are dropped before they are decoded, so a
flooding device costs a topic split and a token bucket per message, and fills neither the telemetry
buffer nor the inbox. Everything else (state and status reports, requests for a release not looked
up yet, anything unexpected) goes to the *worker* thread through a bounded inbox: it may read the
database, which the network thread never waits on. The worker records state and status in the
registry in batches (``DeviceTracker``).

A message that does not decode, names another device than its topic, is a retained request, or
names an unknown release is refused: counted per reason in ``Progress`` and logged (the first
few of each reason, then every hundredth).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass

import protocol

from .chunk_serving import ChunkServer
from .devices import DeviceTracker
from .progress import Progress
from .ratelimit import DeviceLimits, DeviceRateLimiter
from .release_cache import ReleaseCache
from .telemetry_store import TelemetryStore

log = logging.getLogger(__name__)

INBOX_SIZE = 10_000
#: Device messages handled on the network thread (see ``on_message``).
_TELEMETRY_KINDS = frozenset(
    {"telemetry/metrics", "telemetry/events", f"telemetry/{protocol.DRIFT_KIND}"}
)
#: Device messages under the report rate limit.
_REPORT_KINDS = frozenset({"state", "status", *_TELEMETRY_KINDS})
#: Refusals of one reason logged one by one; after that every hundredth.
LOUD_REJECTIONS = 10
#: Safety-net timeout of the worker's wait: it is woken by messages (and the stop sentinel).
WAKE_S = 0.5

TelemetryMessage = protocol.DeviceEvent | protocol.MetricsSample | protocol.DriftSample
DeviceMessage = protocol.DeviceState | protocol.DeviceStatus | TelemetryMessage


@dataclass(frozen=True)
class Inbound:
    topic: str
    payload: bytes
    retained: bool
    received_at: float
    #: the chunk request, already decoded (on the network thread, to look up its release)
    request: protocol.ChunkRequest | None = None


class Ingestion:
    def __init__(
        self,
        topics: protocol.Topics,
        devices: DeviceTracker,
        telemetry: TelemetryStore,
        chunks: ChunkServer,
        releases: ReleaseCache,
        limits: DeviceLimits,
        progress: Progress,
        stopping: threading.Event,
        *,
        inbox_size: int = INBOX_SIZE,
    ) -> None:
        self._topics = topics
        self._fleet = topics.fleet
        self._devices = devices
        self._telemetry = telemetry
        self._chunks = chunks
        self._releases = releases
        self._limits = limits
        self._progress = progress
        self._stopping = stopping
        self._prefix = f"{topics.base}/devices/"
        # None is the stop sentinel: it wakes the worker at once.
        self._inbox: queue.Queue[Inbound | None] = queue.Queue(maxsize=inbox_size)

    # --- the network thread (short work only, never wait) --------------------------------
    def on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        device, kind = self._device_topic(topic)
        if kind in _REPORT_KINDS:
            if not self._limits.reports.allow(device):
                self._rate_limited(device, self._limits.reports)
                return
            if kind in _TELEMETRY_KINDS:
                self._handle_here(Inbound(topic, payload, retained, time.time()), device, kind)
                return
        elif kind == "request":
            if not self._limits.requests.allow(device):
                self._rate_limited(device, self._limits.requests)
                return
            request = self._request_for_cached_release(payload)
            if request is not None:
                item = Inbound(topic, payload, retained, time.time(), request)
                self._handle_here(item, device, kind)
                return
            # a release not looked up yet (or a bad request): the worker reads the registry,
            # the network thread never waits on the database
        try:
            self._inbox.put_nowait(Inbound(topic, payload, retained, time.time()))
        except queue.Full:
            dropped = self._progress.inbox_full()
            if dropped == 1 or dropped % 1000 == 0:
                log.warning(
                    "fleet %s: inbox full (%d messages), dropped %d so far (last on %s)",
                    self._fleet,
                    self._inbox.maxsize,
                    dropped,
                    topic,
                )

    def _device_topic(self, topic: str) -> tuple[str, str]:
        """``(device, kind)`` of ``FLEET/devices/DEVICE/KIND``; ``("", "")`` for other topics
        (the worker refuses them)."""
        if not topic.startswith(self._prefix):
            return "", ""
        device, _, kind = topic[len(self._prefix) :].partition("/")
        return device, kind

    def _request_for_cached_release(self, payload: bytes) -> protocol.ChunkRequest | None:
        """The decoded request if it names a release already in the cache; None otherwise (a
        request that does not decode, too: the worker rejects it)."""
        try:
            req = protocol.ChunkRequest.decode(payload)
        except protocol.ProtocolError:
            return None
        return req if self._releases.cached(req) else None

    def _handle_here(self, item: Inbound, device: str, kind: str) -> None:
        """Handle a message on the network thread (see the module docstring for why)."""
        self._handle(item, device, kind)
        self._progress.message_handled()

    @staticmethod
    def _rate_limited(device: str, limiter: DeviceRateLimiter) -> None:
        if limiter.should_log(device):
            log.warning(
                "device %s: %s over the rate limit (%g/s, burst %g) are dropped; %d dropped so far",
                device[:80],
                limiter.what,
                limiter.rate,
                limiter.burst,
                limiter.limited().get(device, 0),
            )

    # --- the worker thread ---------------------------------------------------------------
    def run(self) -> None:
        """The worker: handle what the network thread queued, and write device reports in
        batches (when the inbox runs dry, or the batch is due)."""
        while not self._stopping.is_set():
            try:
                item: Inbound | None = self._inbox.get(timeout=WAKE_S)
            except queue.Empty:
                item = None
            if item is not None:
                self.handle(item)
            if self._devices.pending and (
                item is None or self._inbox.empty() or self._devices.due(time.time())
            ):
                self.flush_devices()
            self._progress.message_handled(item is not None)

    def wake(self) -> None:
        """Wake the worker at once (to stop)."""
        with contextlib.suppress(queue.Full):  # a full inbox means the worker is awake anyway
            self._inbox.put_nowait(None)

    def flush_devices(self) -> None:
        try:
            self._devices.flush()
        except sqlite3.Error:
            log.exception("fleet %s: could not record device reports", self._fleet)

    # --- handling (either thread) --------------------------------------------------------
    def handle(self, item: Inbound) -> None:
        """Handle one device message; a refused one is counted and logged, never raised."""
        self._handle(item, *self._device_topic(item.topic))

    def _handle(self, item: Inbound, device: str, kind: str) -> None:
        try:
            if not protocol.is_valid_name(device):
                raise protocol.MalformedMessage(f"unexpected topic {item.topic!r}")
            self._dispatch(item, device, kind)
        except protocol.ProtocolError as exc:
            self._reject(exc.reason, device, item.topic, exc.detail)
        except Exception:  # a bug must not stop the service; it is logged with its traceback
            log.exception("device %s: failed to handle message on %s", device, item.topic)
            self._reject("internal-error", device, item.topic, "see the traceback above")

    def _reject(self, reason: str, device: str, topic: str, detail: str) -> None:
        n = self._progress.rejected(reason)
        if n <= LOUD_REJECTIONS or n % 100 == 0:
            log.warning(
                "device %s: refused message on %s: %s: %s%s",
                device or "?",
                topic,
                reason,
                detail,
                f" ({n} so far)" if n > LOUD_REJECTIONS else "",
            )

    def _dispatch(self, item: Inbound, device: str, kind: str) -> None:
        if kind == "request":
            self._chunks.on_request(self._request(item, device))
            return
        if kind not in _REPORT_KINDS:
            raise protocol.MalformedMessage(f"unexpected topic {item.topic!r}")
        if not item.payload:
            log.debug("device %s: retained %s cleared", device, kind)
            return
        message = _decode(kind, item.payload)
        if message.device != device:
            raise protocol.MalformedMessage(
                f"{kind} names device {message.device!r}", reason="device-mismatch"
            )
        if isinstance(message, protocol.DeviceState):
            self._devices.on_state(message, retained=item.retained, received_at=item.received_at)
        elif isinstance(message, protocol.DeviceStatus):
            self._devices.on_status(message, retained=item.retained, received_at=item.received_at)
        else:
            self._on_telemetry(message, item)

    def _on_telemetry(self, message: TelemetryMessage, item: Inbound) -> None:
        if isinstance(message, protocol.DeviceEvent):
            self._devices.on_event(message)
            self._telemetry.add_event(self._fleet, message, item.received_at)
        elif isinstance(message, protocol.DriftSample):
            self._telemetry.add_drift(self._fleet, message, item.received_at)
        else:
            self._telemetry.add_metrics(self._fleet, message, item.received_at)
        if not item.retained:  # telemetry is never retained, but a stray retained one is old
            # history (made while offline, sent now) is old by design: not the device's clock
            clock = None if message.hist else message.ts
            self._devices.on_seen(message.device, item.received_at, clock)

    @staticmethod
    def _request(item: Inbound, device: str) -> protocol.ChunkRequest:
        if item.retained:
            # Replayed on every reconnect: whatever it asked for is long stale.
            raise protocol.MalformedMessage(
                "chunk requests must not be retained", reason="retained-request"
            )
        req = item.request or protocol.ChunkRequest.decode(item.payload)
        if req.device != device:
            raise protocol.MalformedMessage(
                f"request names device {req.device!r}", reason="device-mismatch"
            )
        return req


def _decode(kind: str, payload: bytes) -> DeviceMessage:
    if kind == "state":
        return protocol.DeviceState.decode(payload)
    if kind == "status":
        return protocol.DeviceStatus.decode(payload)
    if kind == "telemetry/events":
        return protocol.DeviceEvent.decode(payload)
    if kind == f"telemetry/{protocol.DRIFT_KIND}":
        return protocol.DriftSample.decode(payload)
    return protocol.MetricsSample.decode(payload)
