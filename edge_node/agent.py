"""The edge agent: its lifecycle, its MQTT session, and the worker thread that drives its rooms.

Threads:

- the paho network thread runs the MQTT callbacks, which only hand over: a message goes to the
  bounded inbox (waiting at most 0.5 s for room, then dropped and counted: a dropped chunk is
  asked for again on the next stall), a connect to the control queue, and a disconnect clears
  ``Slots.connected``. Nothing blocks inside a paho callback;
- the worker thread (``edge-DEVICE``) owns all other state: it dispatches each message by topic
  to the room that handles it, and on every turn (at least every 0.1 s) runs the periodic work;
- the local HTTP endpoint's threads serve inference (``inference.InferenceService``).

The rooms, one job each (what they share is ``shared.Slots``):

- ``index_follower``: the signed index, the target choice (``target_choice``), manifests;
- ``downloader``: the download of one release, from manifest to verified file;
- ``activator``: the maintenance window, activation, rollback;
- ``integrity``: every active file against its signed sha256, at the start and before a
  session is loaded (the inference service asks); a corrupt one is reported here and repaired
  through the rooms above;
- ``trust_updates``: root rotations, revocations, signed commands;
- ``reporter``: the state and status messages, events, rejections;
- ``pushed_config``: the effective policy, with the fleet configuration pushed in the index.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable

from protocol import DeviceState, DeviceStatus, Topics, TrustedRoot, VerifiedManifest
from runtime.credentials import session_auth
from runtime.mqtt import Backoff, MqttSession, Will

from .activator import Activator
from .active import ActiveModels, AgentRecord
from .config import EdgeConfig
from .delta_updates import DeltaUpdates
from .downloader import Downloader
from .http_api import LocalEndpoint
from .index_follower import DeviceTraits, IndexFollower
from .inference import InferenceService
from .integrity import ModelIntegrity
from .profile import device_profile
from .pushed_config import PushedConfig
from .reporter import Reporter
from .shared import Slots, Verified
from .telemetry import Telemetry
from .trust_store import TrustStore
from .trust_updates import TrustUpdates
from .trusted_time import TrustedTime

log = logging.getLogger("modelcast.edge")


class EdgeAgent:
    def __init__(self, config: EdgeConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.device = config.device_id
        self.topics = Topics(config.fleet)
        self._resend_topic = self.topics.resend(config.device_id)
        self.trust_store = TrustStore(config.trust_path, config.data_dir)
        self.data = config.data_dir
        self.data.mkdir(parents=True, exist_ok=True)
        self.clock = clock
        self.boot = uuid.uuid4().hex[:12]
        self.actives = ActiveModels(self.data)
        self.integrity = ModelIntegrity(self.actives, self.device)
        self.record = AgentRecord.load(self.data)
        self._inbox: queue.Queue[tuple[str, bytes]] = queue.Queue(maxsize=config.inbox_size)
        self._control: collections.deque[bool] = collections.deque()
        self._stopping = threading.Event()
        self._worker: threading.Thread | None = None
        self.slots = Slots()
        self.dropped_messages = 0  # messages the inbox had no room for (network thread)
        self.mqtt = self._session()
        self.telemetry = Telemetry(
            device=self.device,
            boot=self.boot,
            topics=self.topics,
            data_dir=self.data,
            interval=config.telemetry_interval,
            capacity=config.telemetry_queue,
            clock=clock,
            drift_epsilon=config.drift_epsilon,
        )
        self.inference = InferenceService(
            self.actives, self.telemetry.stats, integrity=self.integrity, drift=self.telemetry.drift
        )
        self.endpoint: LocalEndpoint | None = None
        if config.http is not None:
            self.endpoint = LocalEndpoint(self.inference, self.device, *config.http)
        self.profile = device_profile(
            config.tags, self.endpoint.address[1] if self.endpoint else None
        )
        self._reporting_rooms()
        self._delivery_rooms()
        self._control_rooms()

    def _session(self) -> MqttSession:
        config = self.config
        return MqttSession(
            config.broker_url,
            (
                config.creds.client_id
                if config.creds
                else f"modelcast-edge-{config.fleet}-{self.device}"
            ),
            on_message=self._on_message,
            on_connect=self._on_connect,
            on_disconnect=self._on_disconnect,
            clean_session=False,
            keepalive=config.keepalive,
            will=Will(
                self.topics.status(self.device), DeviceStatus(self.device, online=False).encode()
            ),
            max_inflight=20,
            max_queued=200,
            backoff=Backoff(config.reconnect_min, config.reconnect_max),
            **session_auth(config.creds, config.broker_url),
        )

    def _reporting_rooms(self) -> None:
        self.reporter = Reporter(
            device=self.device,
            boot=self.boot,
            topics=self.topics,
            clock=self.clock,
            wire=self.mqtt,
            slots=self.slots,
            actives=self.actives,
            events=self.telemetry,
            profile=self.profile,
            state_interval=self.config.state_interval,
        )
        self.settings = PushedConfig(
            self.config, telemetry=self.telemetry, profile=self.profile, reporter=self.reporter
        )

    def _delivery_rooms(self) -> None:
        self.downloader = Downloader(
            self.config,
            topics=self.topics,
            clock=self.clock,
            wire=self.mqtt,
            slots=self.slots,
            reporter=self.reporter,
            deltas=DeltaUpdates(self.device, self.data, self.actives, self.reporter),
        )
        self.activator = Activator(
            device=self.device,
            data=self.data,
            clock=self.clock,
            actives=self.actives,
            record=self.record,
            policy=lambda: self.settings.policy,
            slots=self.slots,
            reporter=self.reporter,
            downloader=self.downloader,
            integrity=self.integrity,
        )

    def _control_rooms(self) -> None:
        # expiry is checked against the trusted time, never earlier than signed data seen
        trusted = TrustedTime(self.clock, self.record, self.device).now
        self.trust_updates = TrustUpdates(
            self.trust_store,
            device=self.device,
            fleet=self.config.fleet,
            clock=trusted,
            slots=self.slots,
            reporter=self.reporter,
            downloader=self.downloader,
            activator=self.activator,
        )
        self.follower = IndexFollower(
            self.config,
            topics=self.topics,
            clock=trusted,
            wire=self.mqtt,
            slots=self.slots,
            trust=self.trust_store,
            record=self.record,
            actives=self.actives,
            traits=DeviceTraits.of(self.device, self.config.tags, self.profile),
            settings=self.settings,
            reporter=self.reporter,
            downloader=self.downloader,
            activator=self.activator,
            integrity=self.integrity,
        )

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        log.info(
            "edge %s: starting (fleet %s, data %s, active %s)",
            self.device,
            self.config.fleet,
            self.data,
            self.actives.versions() or "none",
        )
        self.integrity.check_all()  # before anything serves or reports them
        self._worker = threading.Thread(target=self._run, name=f"edge-{self.device}", daemon=True)
        self._worker.start()
        if self.endpoint is not None:
            self.endpoint.start()
        self.mqtt.start()

    def stop(self) -> None:
        self._stopping.set()
        if self.endpoint is not None:
            self.endpoint.stop()
        if self._worker is not None:
            self._worker.join(timeout=10)
        self.downloader.close()
        offline = DeviceStatus(self.device, online=False, ts=self.clock(), boot=self.boot)
        self.mqtt.stop(final=[(self.topics.status(self.device), offline.encode(), True)])
        self.telemetry.close()
        log.info("edge %s: stopped", self.device)

    def run_forever(self, stop: threading.Event) -> None:
        self.start()
        try:
            stop.wait()
        finally:
            self.stop()

    @property
    def state(self) -> DeviceState:
        return self.reporter.state

    @property
    def rejections(self) -> collections.Counter[str]:
        return self.reporter.rejections

    @property
    def trust(self) -> TrustedRoot:
        return self.trust_store.trust

    # --- network thread: hand over, never block long -------------------------------------
    def _on_message(self, topic: str, payload: bytes, retain: bool) -> None:
        try:
            self._inbox.put((topic, payload), timeout=0.5)
        except queue.Full:
            self.dropped_messages += 1  # a dropped chunk is asked for again on the next stall

    def _on_connect(self, session_present: bool) -> None:
        self._control.append(session_present)

    def _on_disconnect(self) -> None:
        self.slots.connected = False

    # --- worker --------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                while self._control:
                    self._handle_connect(self._control.popleft())
                try:
                    topic, payload = self._inbox.get(timeout=0.1)
                except queue.Empty:
                    pass
                else:
                    self._dispatch(topic, payload)
                self._tick()
            except Exception:  # keep serving: a bug in one message must not stop the agent
                log.exception("edge %s: unexpected error in worker", self.device)

    def _handle_connect(self, session_present: bool) -> None:
        self.slots.connected = True
        self.reporter.publish_status()
        self.reporter.dirty = True
        self.mqtt.subscribe(
            [
                self.topics.root_chain(),
                self.topics.revocations(),
                self.topics.index(),
                self.topics.commands(self.device),
                self.topics.fleet_commands(),
                self.topics.report_request(),
                self.topics.resend(self.device),
            ]
        )
        self.follower.on_connect()
        self.downloader.on_connect(session_present)

    def _dispatch(self, topic: str, payload: bytes) -> None:
        # chunks first: they are nearly every message, and the topics below are built (and
        # their names checked) on each comparison
        dl = self.slots.download
        if topic == self._resend_topic:
            verified = self.downloader.on_resend(topic, payload)
        elif dl is not None and topic.startswith(dl.chunk_prefix):
            verified = self.downloader.on_chunk(topic, payload)
        else:
            self._dispatch_control(topic, payload)
            return
        if verified is not None:
            self._activate(verified)

    def _dispatch_control(self, topic: str, payload: bytes) -> None:
        if topic == self.topics.index():
            self.follower.on_index(topic, payload)
        elif topic == self.topics.root_chain():
            self.trust_updates.on_root_chain(topic, payload)
        elif topic == self.topics.revocations():
            self.trust_updates.on_revocations(topic, payload)
        elif topic in (self.topics.commands(self.device), self.topics.fleet_commands()):
            self.trust_updates.on_command(topic, payload)
        elif topic == self.topics.report_request():
            self.trust_updates.on_report_request(topic, payload)
        elif self.follower.awaits(topic):
            release = self.follower.on_manifest(topic, payload)
            if release is not None:
                self._begin(release)
        # anything else is a late chunk of an abandoned release or a manifest we no longer want

    def _begin(self, release: VerifiedManifest) -> None:
        verified = self.downloader.begin(release)
        if verified is not None:
            self._activate(verified)

    def _activate(self, verified: Verified) -> None:
        if self.activator.activate(*verified):
            self.follower.choose()  # settled (active or failed): what next?

    def _report_corrupt(self) -> None:
        """Corrupt active files found (at the start, or by the inference service before it
        loaded one): say so, and choose again, which fetches each one's release to repair it."""
        while self.integrity.found:
            c = self.integrity.found.popleft()
            self.reporter.event(
                "model-corrupt",
                reason="digest-mismatch",
                model=c.name,
                version=c.version,
                detail=c.describe(),
            )
        self.follower.choose()

    # --- periodic work -------------------------------------------------------------------
    def _tick(self) -> None:
        now = self.clock()
        self.reporter.report_unreported()
        if self.integrity.found:
            self._report_corrupt()
        if self.slots.deferred is not None and self.activator.activate_deferred(now):
            self.follower.choose()
        if self.telemetry.due():
            self.telemetry.sample(
                connected=self.slots.connected,
                active=self.actives.versions(),
                reconnects=self.mqtt.reconnects,
                bytes_received=self.mqtt.bytes_received,
            )
        if self.slots.connected:
            self.telemetry.pump(self.mqtt.publish)
        if self.downloader.tick(now):
            self.follower.choose_again()
        self.reporter.flush_due(now)
