"""The coordinator service: publishes what is deployed, serves chunks to whoever asks, and
stores what devices report. This module wires the parts together, starts and stops them, and
reports their statistics; each part is a module of its own.

Threads, and what each owns:

* paho's *network thread* calls ``ingestion.Ingestion.on_message``: what is over the device's
  rate limit of its kind (chunk requests; reports: telemetry, state, status) is dropped,
  telemetry goes to the telemetry buffer and chunk requests (of a cached release) to the
  scheduler right there; everything else is queued for the worker (``ingestion``);
* the *worker* decodes state and status reports and records them in the registry in batches
  (and notes what each online device runs and is, for the start hold: ``release_askers``), and
  handles requests whose release must be read from the database (``ingestion``);
* the *sender* publishes the chunks the scheduler hands out, with flow control
  (``chunk_serving``);
* the *poller* steps staged rollouts and publishes trust, manifests and the signed index
  (``publishing``), then works out which online devices each release of it is for;
* the *writer* flushes the telemetry buffer to SQLite and prunes it (``telemetry_writer``).

Shared state and its locks (each named after what it guards):

* ``Progress`` (counters, and the condition ``wait_until`` waits on);
* ``ChunkServer._schedule``: the scheduler and the fresh-request hold with its askers;
* ``ReleaseCache._lock``: releases by id;
* ``DeviceTracker._lock``: the telemetry sightings and clock readings;
* ``ReleaseAskers._lock``: the online devices' traits and the releases each will ask for;
* ``TelemetryStore._cond``: the telemetry buffer; each store's ``Db.lock``: its connection;
* ``DeviceRateLimiter._lock`` (one per limit): drop counts; ``ChunkSource._lock``: open blob files;
* ``ChunkCodec._lock``: which askers decode zstd, the compressed-chunk cache, its counters;
* the MQTT session's own (its count of unacknowledged publishes).

Lock order: none of these is taken while another is held (each guards a few statements that
call nothing locked), with one exception: a ``wait_until`` predicate runs under the progress
lock and may read any statistic, so the progress lock comes first, and no thread takes it while
holding another. Events (stopping, republish, wake-ups) and the worker's inbox are thread-safe
on their own; the deployment index (``index_seq``) is one reference, replaced whole.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import protocol
from runtime.broker_kinds import retained_over_wildcards
from runtime.credentials import session_auth
from runtime.mqtt import MqttSession

from .chunk_codec import CodecStats
from .chunk_serving import ChunkServer
from .config import CoordinatorConfig
from .deployer import DeploymentPublisher
from .devices import DeviceTracker
from .ingestion import Ingestion
from .keystore import load_release_keys
from .progress import Progress
from .publishing import DEFAULT_POLL_INTERVAL, Publishing
from .registry import Registry
from .release_askers import ReleaseAskers
from .release_cache import ReleaseCache
from .rollout_engine import RolloutEngine
from .rollout_store import RolloutStore
from .scheduler import SchedulerStats
from .telemetry_store import TelemetryStats, TelemetryStore
from .telemetry_writer import TelemetryWriter
from .trust_publisher import TrustPublisher

__all__ = ["DEFAULT_POLL_INTERVAL", "Coordinator", "CoordinatorConfig"]

log = logging.getLogger(__name__)

KEEPALIVE_S = 30
#: devices per SUBSCRIBE packet when subscribing to known devices' exact topics
_SUBSCRIBE_BATCH = 500


class Coordinator:
    def __init__(self, config: CoordinatorConfig) -> None:
        self.config = config
        self.fleet = config.fleet
        self.topics = protocol.Topics(config.fleet)
        keys = load_release_keys(config.keydir)
        self._keys = keys
        self._registry = Registry(config.db_path)
        self._telemetry = TelemetryStore(config.db_path, retention_days=config.retention_days)
        self._rollout_store = RolloutStore(config.db_path)
        self._limits = config.device_limits()
        self._askers = ReleaseAskers()
        self._devices = DeviceTracker(
            self._registry, config.fleet, limits=self._limits, askers=self._askers
        )
        self._deployer = DeploymentPublisher(
            self._registry, keys, config.fleet, index_expires_in=config.index_expires_in
        )
        self._progress = Progress()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = False
        self._wire(TrustPublisher(config.keydir, config.fleet, keys))
        self._session = MqttSession(
            config.broker_url,
            config.mqtt_client_id,
            on_message=self._ingestion.on_message,
            on_connect=self._on_connect,
            clean_session=False,
            keepalive=KEEPALIVE_S,
            **session_auth(config.creds, config.broker_url),
        )

    def _wire(self, trust: TrustPublisher) -> None:
        """The parts that run the threads, sharing the release cache, progress and stopping."""
        cfg = self.config
        releases = ReleaseCache(self._registry, self.fleet)
        self._chunks = ChunkServer(
            self.topics,
            releases,
            self._askers.of,
            self._progress,
            self._stopping,
            max_pending=cfg.max_pending,
            fresh_hold=cfg.fresh_hold,
        )
        self._ingestion = Ingestion(
            self.topics,
            self._devices,
            self._telemetry,
            self._chunks,
            releases,
            self._limits,
            self._progress,
            self._stopping,
        )
        self._writer = TelemetryWriter(self._telemetry, self.fleet, self._progress, self._stopping)
        rollouts = RolloutEngine(self._registry, self._telemetry, self._rollout_store, self.fleet)
        self._publishing = Publishing(
            self.fleet,
            trust,
            self._deployer,
            releases,
            self._progress,
            self._stopping,
            step_rollouts=rollouts.tick,
            retire=self._chunks.forget,
            on_index=self._askers.on_index,
            summary=self._log_summary,
            poll_interval=cfg.poll_interval,
        )

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        if self._started:
            raise RuntimeError("coordinator already started")
        self._started = True
        log.info(
            "coordinator of fleet %s starting (broker %s, client id %s)",
            self.fleet,
            self._session.broker_list,
            self._session.client_id,
        )
        targets: tuple[tuple[str, Callable[[], None]], ...] = (
            ("worker", self._ingestion.run),
            ("sender", lambda: self._chunks.serve(self._session)),
            ("poller", lambda: self._publishing.run(self._session)),
            ("writer", self._writer.run),
        )
        for name, target in targets:
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
        self._publishing.wake()
        self._ingestion.wake()
        self._chunks.wake()
        self._writer.wake()
        for thread in self._threads:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("coordinator thread %s did not stop within %.1fs", thread.name, timeout)
        self._ingestion.flush_devices()
        self._writer.flush()
        self._session.stop()
        self._chunks.close()
        self._registry.close()
        self._rollout_store.close()
        self._telemetry.close()
        chunks, size = self._progress.published
        log.info(
            "coordinator of fleet %s stopped: %d chunks (%d bytes) published",
            self.fleet,
            chunks,
            size,
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

    def wait_subscribed(self, timeout: float) -> bool:
        """Until connected with every subscription acknowledged: reports that devices publish
        from then on reach the coordinator."""
        return self._session.wait_subscribed(timeout)

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Block until ``predicate()`` holds; it is re-checked whenever the service makes
        progress (a message handled, chunks published, an index published)."""
        return self._progress.wait_until(predicate, timeout)

    def _on_connect(self, session_present: bool) -> None:
        """Network thread: subscribe to what devices send, ask every device to report its status
        and state again (published after the SUBSCRIBE on the same connection, so the answers
        find the subscription), and publish everything again.

        The request is what makes a (re)started coordinator learn the fleet on a broker that
        does not deliver retained messages through wildcards (RabbitMQ); elsewhere it only
        refreshes what the retained messages said (protocol.report_request)."""
        t = self.topics
        self._session.subscribe(
            [
                t.all_requests(),
                t.all_state(),
                t.all_status(),
                t.all_events(),
                t.all_metrics(),
                t.all_drift(),
            ]
        )
        if not retained_over_wildcards(self.config.broker_kind):
            self._subscribe_known_devices()
        request = protocol.ReportRequest.new(self.fleet, time.time())
        self._session.publish(
            t.report_request(), request.sign(self._keys.key, self._keys.cert), qos=1
        )
        self._publishing.on_connect()

    def _subscribe_known_devices(self) -> None:
        """Network thread, on a broker that keeps retained messages from wildcards (RabbitMQ):
        the exact status and state topics of every device in the registry, so that the retained
        ones of devices that are gone (offline, or dead since) arrive too. Devices that are
        there answer the report request; devices never seen are heard live."""
        t = self.topics
        ids = [row["device_id"] for row in self._registry.devices(self.fleet)]
        for start in range(0, len(ids), _SUBSCRIBE_BATCH):
            batch = ids[start : start + _SUBSCRIBE_BATCH]
            self._session.subscribe([topic for d in batch for topic in (t.status(d), t.state(d))])
        log.info("subscribed to the status and state of %d known devices", len(ids))

    # --- statistics ----------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._session.connected.is_set()

    @property
    def bytes_published(self) -> int:
        """Chunk frame bytes (header and payload) handed to the broker connection."""
        return self._progress.published[1]

    @property
    def chunks_published(self) -> int:
        return self._progress.published[0]

    @property
    def chunk_codec(self) -> CodecStats:
        """Chunks compressed (once each), and frames sent compressed and raw."""
        return self._chunks.codec_stats()

    @property
    def messages_processed(self) -> int:
        return self._progress.messages_processed

    @property
    def inbox_dropped(self) -> int:
        return self._progress.inbox_dropped

    @property
    def rejections(self) -> dict[str, int]:
        """Refused device messages per reason code (``rate-limited``: chunk requests,
        ``report-rate-limited``: telemetry, state and status messages over the device's limit)."""
        counts = self._progress.rejections()
        for reason, limited in (
            ("rate-limited", self.rate_limited),
            ("report-rate-limited", self.reports_limited),
        ):
            if limited:
                counts[reason] = sum(limited.values())
        return counts

    @property
    def rate_limited(self) -> dict[str, int]:
        """Chunk requests dropped by the per-device rate limit, per device."""
        return self._limits.requests.limited()

    @property
    def reports_limited(self) -> dict[str, int]:
        """Telemetry, state and status messages dropped by the per-device rate limit."""
        return self._limits.reports.limited()

    @property
    def telemetry(self) -> TelemetryStats:
        """Telemetry messages stored, ignored as duplicates, dropped (buffer full), pending."""
        return self._telemetry.stats()

    @property
    def scheduler(self) -> SchedulerStats:
        return self._chunks.stats()

    @property
    def index_seq(self) -> int | None:
        """Sequence number of the last deployment index published, if any."""
        current = self._deployer.current
        return current.seq if current is not None else None

    def _log_summary(self) -> None:
        stats = self.scheduler
        log.debug(
            "fleet %s: %d chunks (%d bytes) published; %d requests, %d chunks requested, "
            "%d coalesced, %d pending; %d messages processed, %d rejected (%d requests and %d "
            "reports rate-limited), %d dropped",
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
            sum(self.reports_limited.values()),
            self.inbox_dropped,
        )
