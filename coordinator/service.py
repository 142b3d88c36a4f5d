"""The coordinator service: publishes what is deployed, serves chunks to whoever asks, and
stores what devices report.

Paho's network thread handles telemetry and chunk requests itself (short work that never
blocks, see ``_handle_here``: metrics samples and events to the telemetry buffer, moving the
device's ``last_seen``; requests, within the device's rate limit, to the scheduler), and enqueues
the rest for the four others:

* the *worker* decodes state and status reports and records them in the registry (batched);
* the *writer* flushes the telemetry buffer to SQLite in one transaction per batch (every half
  second or 500 rows) and prunes telemetry older than the retention;
* the *sender* takes chunks from the scheduler and publishes them, never more than
  ``max_pending`` unacknowledged at a time, so a slow broker slows us down instead of growing a
  queue;
* the *poller* steps staged rollouts (``rollouts.RolloutEngine``), watches the registry's
  deployments (the CLI writes them from another process) and publishes the retained manifests
  and the signed deployment index.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import protocol
from runtime.credentials import ClientCreds, session_auth
from runtime.mqtt import MqttSession

from .chunkstore import ChunkSource, ChunkSourceError
from .deployer import DeploymentPublisher
from .devices import DeviceTracker
from .keystore import load_release_keys
from .ratelimit import DEFAULT_REQUEST_BURST, DEFAULT_REQUEST_RATE, DeviceRateLimiter
from .registry import Registry, ReleaseRecord
from .rollouts import RolloutEngine, RolloutStore
from .scheduler import ChunkScheduler, Scheduled, SchedulerStats
from .telemetry_store import DEFAULT_RETENTION_DAYS, TelemetryStats, TelemetryStore
from .trust_publisher import TrustPublisher

log = logging.getLogger(__name__)

INBOX_SIZE = 10_000
#: Topic endings of device messages handled on the network thread (see ``_on_message``).
_TELEMETRY_SUFFIXES = ("/telemetry/metrics", "/telemetry/events")
#: How often the poller reads the database for deploys, rollouts and trust updates (seconds).
DEFAULT_POLL_INTERVAL = 0.5
#: Chunks taken from the scheduler at a time: small, so new requests and other releases get a
#: turn quickly; flow control is per publish anyway.
SEND_BATCH = 8
#: Safety-net timeout of every wait: threads are woken by events, this only bounds a lost wake-up.
WAKE_S = 0.5
SUMMARY_INTERVAL_S = 30.0
KEEPALIVE_S = 30


@dataclass(frozen=True)
class _Inbound:
    topic: str
    payload: bytes
    retained: bool
    received_at: float
    #: the chunk request, already decoded (on the network thread, to look up its release)
    request: protocol.ChunkRequest | None = None


class _Rejections:
    """Counts refused messages per reason and logs them, without letting a flood flood the log:
    the first few of each reason, then every hundredth."""

    LOUD = 10

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def add(self, reason: str, device: str | None, topic: str, detail: str) -> None:
        self.counts[reason] += 1
        n = self.counts[reason]
        if n <= self.LOUD or n % 100 == 0:
            log.warning(
                "device %s: refused message on %s: %s: %s%s",
                device or "?",
                topic,
                reason,
                detail,
                f" ({n} so far)" if n > self.LOUD else "",
            )


class Coordinator:
    def __init__(
        self,
        *,
        broker_url: str,
        db_path: Path,
        keydir: Path,
        fleet: str = "default",
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_pending: int = 32,
        fresh_hold: float = 0.3,
        index_expires_in: float = 30 * 86400,
        client_id: str | None = None,
        retention_days: float = DEFAULT_RETENTION_DAYS,
        creds: ClientCreds | None = None,
        request_rate: float = DEFAULT_REQUEST_RATE,
        request_burst: float = DEFAULT_REQUEST_BURST,
    ) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.fleet = protocol.check_name(fleet, "fleet")
        self.topics = protocol.Topics(fleet)
        self._poll_interval = poll_interval
        self._max_pending = max_pending
        # Devices that start together (a deploy, a broker restart) send their first requests
        # within a few hundred ms of each other; a chunk sent before a device's request arrived
        # must be sent again for it. Holding the sender briefly after a fresh request lets
        # those requests coalesce into one publish per chunk.
        self._fresh_hold = fresh_hold
        self._hold_until = 0.0
        self._askers: dict[bytes, set[str]] = {}  # release id -> devices that asked for it
        keys = load_release_keys(keydir)
        self._registry = Registry(db_path)
        self._deployer = DeploymentPublisher(
            self._registry, keys, fleet, index_expires_in=index_expires_in
        )
        self._trust = TrustPublisher(keydir, fleet, keys)
        self._devices = DeviceTracker(self._registry, fleet)
        self._telemetry = TelemetryStore(db_path, retention_days=retention_days)
        self._rollout_store = RolloutStore(db_path)
        self._rollouts = RolloutEngine(self._registry, self._telemetry, self._rollout_store, fleet)
        self._chunks = ChunkSource()
        self._scheduler = ChunkScheduler()
        self._sched_cond = threading.Condition()  # guards _scheduler; notified on new work
        self._progress = threading.Condition()  # guards the counters; notified on any progress
        # None is the stop sentinel: it wakes the worker at once.
        self._inbox: queue.Queue[_Inbound | None] = queue.Queue(maxsize=INBOX_SIZE)
        self._stopping = threading.Event()
        self._republish = threading.Event()  # set on every (re)connect
        self._wake_poller = threading.Event()
        self._releases_lock = threading.Lock()
        self._by_id: dict[bytes, ReleaseRecord] = {}
        self._rejections = _Rejections()
        self._limiter = DeviceRateLimiter(request_rate, request_burst)
        self._request_prefix = f"{self.topics.base}/devices/"
        self._read_errors: Counter[bytes] = Counter()
        self._bytes_published = 0
        self._chunks_published = 0
        self._messages_processed = 0
        self._inbox_dropped = 0
        self._threads: list[threading.Thread] = []
        self._started = False
        self._session = MqttSession(
            broker_url,
            client_id or (creds.client_id if creds else f"modelcast-coordinator-{fleet}"),
            on_message=self._on_message,
            on_connect=self._on_connect,
            clean_session=False,
            keepalive=KEEPALIVE_S,
            **session_auth(creds, broker_url),
        )

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        if self._started:
            raise RuntimeError("coordinator already started")
        self._started = True
        log.info(
            "coordinator of fleet %s starting (broker %s:%d, client id %s)",
            self.fleet,
            self._session.host,
            self._session.port,
            self._session.client_id,
        )
        for name, target in (
            ("worker", self._work),
            ("sender", self._send),
            ("poller", self._poll),
            ("writer", self._write),
        ):
            thread = threading.Thread(
                target=target, name=f"coordinator-{self.fleet}-{name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        self._session.start()

    def stop(self, timeout: float = 5.0) -> None:
        if not self._started or self._stopping.is_set():
            return
        self._stopping.set()
        self._wake_poller.set()
        with contextlib.suppress(queue.Full):  # a full inbox means the worker is awake anyway
            self._inbox.put_nowait(None)
        with self._sched_cond:
            self._sched_cond.notify_all()
        self._telemetry.wake()
        for thread in self._threads:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("coordinator thread %s did not stop within %.1fs", thread.name, timeout)
        self._flush_devices()
        self._flush_telemetry()
        self._session.stop()
        self._chunks.close()
        self._registry.close()
        self._rollout_store.close()
        self._telemetry.close()
        log.info(
            "coordinator of fleet %s stopped: %d chunks (%d bytes) published",
            self.fleet,
            self._chunks_published,
            self._bytes_published,
        )

    def run_forever(self, stop_event: threading.Event) -> None:
        """Serve until ``stop_event`` is set (the CLI sets it on SIGINT/SIGTERM)."""
        self.start()
        try:
            while not stop_event.wait(1.0):
                pass
        finally:
            self.stop()

    def wait_connected(self, timeout: float) -> bool:
        return self._session.wait_connected(timeout)

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Block until ``predicate()`` holds; it is re-checked whenever the service makes
        progress (a message handled, chunks published, an index published)."""
        with self._progress:
            return self._progress.wait_for(predicate, timeout)

    # --- statistics ----------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._session.connected.is_set()

    @property
    def bytes_published(self) -> int:
        """Chunk frame bytes (header and payload) handed to the broker connection."""
        with self._progress:
            return self._bytes_published

    @property
    def chunks_published(self) -> int:
        with self._progress:
            return self._chunks_published

    @property
    def messages_processed(self) -> int:
        with self._progress:
            return self._messages_processed

    @property
    def inbox_dropped(self) -> int:
        return self._inbox_dropped

    @property
    def rejections(self) -> dict[str, int]:
        """Refused device messages per reason code."""
        with self._progress:
            counts = dict(self._rejections.counts)
        limited = sum(self._limiter.limited().values())
        if limited:
            counts["rate-limited"] = limited
        return counts

    @property
    def rate_limited(self) -> dict[str, int]:
        """Chunk requests dropped by the per-device rate limit, per device."""
        return self._limiter.limited()

    @property
    def telemetry(self) -> TelemetryStats:
        """Telemetry messages stored, ignored as duplicates, dropped (buffer full), pending."""
        return self._telemetry.stats()

    @property
    def scheduler(self) -> SchedulerStats:
        with self._sched_cond:
            return self._scheduler.stats()

    @property
    def index_seq(self) -> int | None:
        """Sequence number of the last deployment index published, if any."""
        current = self._deployer.current
        return current.seq if current is not None else None

    # --- paho callbacks (network thread: short work only, never wait) --------------------
    def _on_connect(self, session_present: bool) -> None:
        t = self.topics
        self._session.subscribe(
            [t.all_requests(), t.all_state(), t.all_status(), t.all_events(), t.all_metrics()]
        )
        self._republish.set()
        self._wake_poller.set()

    def _on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        if topic.endswith(_TELEMETRY_SUFFIXES):
            self._handle_here(_Inbound(topic, payload, retained, time.time()))
            return
        if topic.endswith("/request") and topic.startswith(self._request_prefix):
            device = topic[len(self._request_prefix) : -len("/request")]
            if not self._limiter.allow(device):
                self._rate_limited(device)
                return
            request = self._request_for_cached_release(payload)
            if request is not None:
                self._handle_here(_Inbound(topic, payload, retained, time.time(), request))
                return
            # a release not looked up yet (or a bad request): the worker reads the registry,
            # the network thread never waits on the database
        try:
            self._inbox.put_nowait(_Inbound(topic, payload, retained, time.time()))
        except queue.Full:
            self._inbox_dropped += 1
            if self._inbox_dropped == 1 or self._inbox_dropped % 1000 == 0:
                log.warning(
                    "fleet %s: inbox full (%d messages), dropped %d so far (last on %s)",
                    self.fleet,
                    INBOX_SIZE,
                    self._inbox_dropped,
                    topic,
                )

    def _request_for_cached_release(self, payload: bytes) -> protocol.ChunkRequest | None:
        """The decoded request if it names a release already in the cache; None otherwise (a
        request that does not decode, too: the worker rejects it)."""
        try:
            req = protocol.ChunkRequest.decode(payload)
        except protocol.ProtocolError:
            return None
        with self._releases_lock:
            record = self._by_id.get(req.release_id)
        if record is None or (record.name, record.version) != (req.name, req.version):
            return None
        return req

    def _handle_here(self, item: _Inbound) -> None:
        """Handle a message on the network thread. For telemetry (most of what devices send)
        and chunk requests (whose round trip paces every download), the work is short and never
        blocks (decode; append to the telemetry buffer or the scheduler, each under its own
        short lock): handing each to the worker cost a thread wake-up per message, measured as
        half the telemetry ingest rate (bench telemetry_raw_ratio 0.40-0.50 -> 0.55-0.58) and a
        slower delivery (delivery_ratio 0.51-0.64 -> 0.71-0.75)."""
        self._handle_safely(item)
        with self._progress:
            self._messages_processed += 1
            self._progress.notify_all()

    def _rate_limited(self, device: str) -> None:
        if self._limiter.should_log(device):
            log.warning(
                "device %s: chunk requests over the rate limit (%g/s, burst %g) are dropped; "
                "%d dropped so far",
                device[:80],
                self._limiter.rate,
                self._limiter.burst,
                self._limiter.limited().get(device, 0),
            )

    # --- worker: device messages ---------------------------------------------------------
    def _work(self) -> None:
        while not self._stopping.is_set():
            try:
                item: _Inbound | None = self._inbox.get(timeout=WAKE_S)
            except queue.Empty:
                item = None
            if item is not None:
                self._handle_safely(item)
            if self._devices.pending and (
                item is None or self._inbox.empty() or self._devices.due(time.time())
            ):
                self._flush_devices()
            with self._progress:
                if item is not None:
                    self._messages_processed += 1
                self._progress.notify_all()

    def _flush_devices(self) -> None:
        try:
            self._devices.flush()
        except sqlite3.Error:
            log.exception("fleet %s: could not record device reports", self.fleet)

    def _handle_safely(self, item: _Inbound) -> None:
        prefix = f"{self.topics.base}/devices/"
        device, kind = None, ""
        if item.topic.startswith(prefix):
            device, _, kind = item.topic.removeprefix(prefix).partition("/")
        try:
            if device is None or not protocol.is_valid_name(device):
                raise protocol.MalformedMessage(f"unexpected topic {item.topic!r}")
            self._handle(item, device, kind)
        except protocol.ProtocolError as exc:
            self._reject(exc.reason, device, item.topic, exc.detail)
        except Exception:  # a bug must not stop the service; it is logged with its traceback
            log.exception("device %s: failed to handle message on %s", device, item.topic)
            self._reject("internal-error", device, item.topic, "see the traceback above")

    def _reject(self, reason: str, device: str | None, topic: str, detail: str) -> None:
        with self._progress:
            self._rejections.add(reason, device, topic, detail)

    def _handle(self, item: _Inbound, device: str, kind: str) -> None:
        if kind == "request":
            self._handle_request(item, device)
            return
        if kind not in ("state", "status", "telemetry/events", "telemetry/metrics"):
            raise protocol.MalformedMessage(f"unexpected topic {item.topic!r}")
        if not item.payload:
            log.debug("device %s: retained %s cleared", device, kind)
            return
        message: (
            protocol.DeviceState
            | protocol.DeviceStatus
            | protocol.DeviceEvent
            | protocol.MetricsSample
        )
        if kind == "state":
            message = protocol.DeviceState.decode(item.payload)
        elif kind == "status":
            message = protocol.DeviceStatus.decode(item.payload)
        elif kind == "telemetry/events":
            message = protocol.DeviceEvent.decode(item.payload)
        else:
            message = protocol.MetricsSample.decode(item.payload)
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

    def _on_telemetry(
        self, message: protocol.DeviceEvent | protocol.MetricsSample, item: _Inbound
    ) -> None:
        if isinstance(message, protocol.DeviceEvent):
            self._devices.on_event(message)
            self._telemetry.add_event(self.fleet, message, item.received_at)
        else:
            self._telemetry.add_metrics(self.fleet, message, item.received_at)
        if not item.retained:  # telemetry is never retained, but a stray retained one is old
            self._devices.on_seen(message.device, item.received_at)

    def _handle_request(self, item: _Inbound, device: str) -> None:
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
        record = self._release(req.name, req.version, req.release_id)
        if record is None:
            raise protocol.MalformedMessage(
                f"{req.name}@{req.version} is not a release of fleet {self.fleet}",
                reason="unknown-release",
            )
        if record.short_id != req.release_id:
            raise protocol.MalformedMessage(
                f"{record.release} has release id {record.short_id.hex()}, the request names "
                f"{req.release_id.hex()}",
                reason="wrong-release",
            )
        askers = self._askers.setdefault(record.short_id, set())
        askers.add(device)
        # Hold only while another online device may still be about to ask: a lone device, or
        # the last of a wave, has nobody to wait for (the hold would only delay its download).
        waiting_for = self._devices.online() - askers
        with self._sched_cond:
            if not waiting_for:
                self._hold_until = 0.0
            elif req.fresh:
                self._hold_until = max(self._hold_until, time.monotonic() + self._fresh_hold)
            self._scheduler.on_request(req, record.n_chunks, record.block_chunks)
            if self._scheduler.has_pending:
                self._sched_cond.notify_all()
        log.debug(
            "device %s: %s request for %s: %d ranges, subscribed %s%s",
            device,
            "repair" if req.repair else "chunk",
            record.release,
            len(req.ranges),
            list(req.subscribed),
            " (fresh)" if req.fresh else "",
        )

    def _release(self, name: str, version: int, short_id: bytes) -> ReleaseRecord | None:
        """The build of ``name@version`` with release id ``short_id`` (one of its variants),
        else any build of it (so the caller can say which id it has); cached, releases never
        change."""
        with self._releases_lock:
            record = self._by_id.get(short_id)
        if record is not None and (record.name, record.version) == (name, version):
            return record
        builds = self._registry.release_variants(self.fleet, name, version)
        with self._releases_lock:
            for build in builds:
                self._by_id[build.short_id] = build
        for build in builds:
            if build.short_id == short_id:
                return build
        return builds[0] if builds else None

    # --- sender: chunks ------------------------------------------------------------------
    def _send(self) -> None:
        while not self._stopping.is_set():
            with self._sched_cond:
                if not self._scheduler.has_pending:
                    self._sched_cond.wait(WAKE_S)
                    continue
                hold = self._hold_until - time.monotonic()
                if hold > 0:
                    self._sched_cond.wait(hold)
                    continue
            if not self._session.connected.wait(WAKE_S):
                continue
            if not self._session.wait_below(self._max_pending, WAKE_S):
                continue
            with self._sched_cond:
                batch = self._scheduler.next_batch(SEND_BATCH)
            self._publish_chunks(batch)

    def _publish_chunks(self, batch: list[Scheduled]) -> None:
        published = 0
        size = 0
        for position, (rid, index, device) in enumerate(batch):
            with self._releases_lock:
                record = self._by_id.get(rid)
            if record is None:  # only releases seen in a request are ever scheduled
                log.error("chunk %d of unknown release id %s dropped", index, rid.hex())
                continue
            try:
                data = self._chunks.read(record, index)
            except (ChunkSourceError, IndexError) as exc:
                self._read_error(record, exc)
                continue
            frame = protocol.ChunkFrame.encode(index, record.release_id, data)
            if device is None:
                topic = self.topics.chunk_block(
                    record.name,
                    record.version,
                    index // record.block_chunks,
                    record.variant or None,
                )
            else:
                topic = self.topics.resend(device)
            if not self._await_room() or not self._session.publish(topic, frame, qos=1):
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
        with self._progress:
            self._chunks_published += published
            self._bytes_published += size
            self._progress.notify_all()

    def _await_room(self) -> bool:
        """Flow control: wait until fewer than ``max_pending`` publishes are unacknowledged.
        False when the service is stopping."""
        while not self._session.wait_below(self._max_pending, WAKE_S):
            if self._stopping.is_set():
                return False
        return True

    def _requeue(self, chunks: Iterable[Scheduled]) -> None:
        with self._sched_cond:
            for rid, index, device in chunks:
                self._scheduler.requeue(rid, index, device)

    def _read_error(self, record: ReleaseRecord, exc: Exception) -> None:
        self._read_errors[record.release_id] += 1
        n = self._read_errors[record.release_id]
        if n == 1 or n % 100 == 0:
            log.error("release %s: cannot serve chunks (%d failures): %s", record.release, n, exc)

    # --- writer: telemetry ----------------------------------------------------------------
    def _write(self) -> None:
        while not self._stopping.is_set():
            if self._telemetry.wait_due(WAKE_S):
                self._flush_telemetry()
            try:
                self._telemetry.maybe_prune(self.fleet)
            except sqlite3.Error:
                log.exception("fleet %s: pruning old telemetry failed; retrying", self.fleet)

    def _flush_telemetry(self) -> None:
        try:
            self._telemetry.flush()
        except sqlite3.Error:  # the rows stay buffered (up to a cap) for the next flush
            log.exception("fleet %s: could not store telemetry", self.fleet)
        with self._progress:
            self._progress.notify_all()

    # --- poller: deployments -------------------------------------------------------------
    def _poll(self) -> None:
        last_summary = time.monotonic()
        while not self._stopping.is_set():
            self._wake_poller.wait(self._poll_interval)
            self._wake_poller.clear()
            if self._stopping.is_set():
                break
            try:
                self._rollouts.tick()  # staged rollouts move the deployments...
            except Exception:
                log.exception("fleet %s: stepping rollouts failed; retrying", self.fleet)
            try:
                self._publish_deployments()  # ...that this turns into the signed index
            except Exception:  # e.g. the database is locked for longer than the busy timeout
                log.exception("fleet %s: publishing deployments failed; retrying", self.fleet)
            if time.monotonic() - last_summary >= SUMMARY_INTERVAL_S:
                last_summary = time.monotonic()
                self._log_summary()

    def _publish_deployments(self) -> None:
        if not self._session.connected.is_set():
            return
        republish = self._republish.is_set()
        self._republish.clear()
        if not self._publish_trust(republish):
            return
        previous = {r.short_id for r in self._deployer.records}
        plan = self._deployer.plan(time.time(), republish=republish)
        if plan is None:
            return
        for pub in plan.publications:
            # In order, on one connection: the broker stores each manifest before the index
            # that names it, so a device never fetches a manifest that is not there yet.
            if not self._session.publish(pub.topic, pub.payload, qos=1, retain=True):
                log.warning(
                    "fleet %s: MQTT client queue full publishing %s; will retry",
                    self.fleet,
                    pub.what,
                )
                if republish:
                    self._republish.set()
                return
        self._deployer.commit(plan)
        for record in plan.records:
            with self._releases_lock:
                self._by_id[record.short_id] = record
        retired = previous - {r.short_id for r in plan.records}
        if retired:
            with self._sched_cond:
                self._scheduler.forget(retired)
        with self._progress:
            self._progress.notify_all()

    def _publish_trust(self, republish: bool) -> bool:
        """The root chain and revocation list first (an edge must follow a rotation before it
        trusts what the new root certified); a new release key goes to the deployer. False when
        the publishing must be tried again."""
        trust_plan = self._trust.plan(republish=republish)
        if trust_plan is None:
            return True
        for pub in trust_plan.publications:
            if not self._session.publish(pub.topic, pub.payload, qos=1, retain=True):
                log.warning(
                    "fleet %s: MQTT client queue full publishing %s; will retry",
                    self.fleet,
                    pub.what,
                )
                self._republish.set()
                return False
        self._trust.commit(trust_plan)
        if trust_plan.keys is not None:
            self._deployer.use_keys(trust_plan.keys)
        return True

    def _log_summary(self) -> None:
        stats = self.scheduler
        log.debug(
            "fleet %s: %d chunks (%d bytes) published; %d requests, %d chunks requested, "
            "%d coalesced, %d pending; %d messages processed, %d rejected (%d rate-limited), "
            "%d dropped",
            self.fleet,
            self.chunks_published,
            self.bytes_published,
            stats.requests,
            stats.chunks_requested,
            stats.chunks_coalesced,
            stats.pending,
            self.messages_processed,
            sum(self.rejections.values()),
            sum(self.rate_limited.values()),
            self._inbox_dropped,
        )
