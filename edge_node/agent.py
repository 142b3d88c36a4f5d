"""The edge agent: one MQTT session, one worker thread that owns all state.

The paho network thread only hands messages to a bounded inbox; the worker verifies, writes,
plans requests, activates, and reports. Nothing blocks inside a paho callback.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from protocol import (
    DeploymentIndex,
    DeviceState,
    DeviceStatus,
    MaintenanceWindow,
    MalformedMessage,
    ProtocolError,
    StaleError,
    Target,
    Topics,
    TrustedRoot,
    UpdateState,
    VerifiedManifest,
    open_index,
    open_manifest,
    settings_for,
)
from runtime.credentials import session_auth
from runtime.mqtt import Backoff, MqttSession, Will

from .activator import Activator
from .active import ActiveModels, AgentRecord
from .config import EdgeConfig
from .downloader import Downloader
from .http_api import LocalEndpoint
from .inference import InferenceService
from .policy import Policy, effective_policy, load_pushed, save_pushed
from .profile import device_profile
from .reporter import Reporter
from .shared import Slots
from .target_choice import (
    AbandonDownload,
    Action,
    CancelDownload,
    DropPending,
    Facts,
    FetchManifest,
    ForgetDeferred,
    HeldBack,
    HeldByPin,
    RefuseDowngrade,
    ReleaseRef,
    RollBack,
    choose,
)
from .telemetry import Telemetry
from .trust_store import TrustStore
from .trust_updates import TrustUpdates

log = logging.getLogger("modelcast.edge")


def _ref(release: VerifiedManifest) -> ReleaseRef:
    return ReleaseRef(release.manifest.name, release.manifest.version, release.id)


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
        self.record = AgentRecord.load(self.data)
        self._inbox: queue.Queue[tuple[str, bytes]] = queue.Queue(maxsize=config.inbox_size)
        self._control: collections.deque[bool] = collections.deque()
        self._stopping = threading.Event()
        self._worker: threading.Thread | None = None
        self.slots = Slots()
        # update state (worker thread only)
        self._targets: dict[str, Target] = {}
        self._told_stale: set[bytes] = set()
        self._rollback_tried: set[bytes] = set()  # rollback targets acted on (once each)
        # counters (read by tests, the demo and telemetry)
        self.dropped_messages = 0
        self.mqtt = MqttSession(
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
        self.telemetry = Telemetry(
            device=self.device,
            boot=self.boot,
            topics=self.topics,
            data_dir=self.data,
            interval=config.telemetry_interval,
            capacity=config.telemetry_queue,
            clock=clock,
        )
        self.inference = InferenceService(self.actives, self.telemetry.stats)
        self.endpoint: LocalEndpoint | None = None
        if config.http is not None:
            self.endpoint = LocalEndpoint(self.inference, self.device, *config.http)
        self.profile = device_profile(
            config.tags, self.endpoint.address[1] if self.endpoint else None
        )
        self.reporter = Reporter(
            device=self.device,
            boot=self.boot,
            topics=self.topics,
            clock=clock,
            wire=self.mqtt,
            slots=self.slots,
            actives=self.actives,
            events=self.telemetry,
            profile=self.profile,
            state_interval=config.state_interval,
        )
        self.downloader = Downloader(
            config,
            topics=self.topics,
            clock=clock,
            wire=self.mqtt,
            slots=self.slots,
            reporter=self.reporter,
        )
        self.activator = Activator(
            device=self.device,
            data=self.data,
            clock=clock,
            actives=self.actives,
            record=self.record,
            policy=lambda: self.policy,
            slots=self.slots,
            reporter=self.reporter,
            downloader=self.downloader,
        )
        self.trust_updates = TrustUpdates(
            self.trust_store,
            device=self.device,
            fleet=config.fleet,
            clock=clock,
            slots=self.slots,
            reporter=self.reporter,
            downloader=self.downloader,
            activator=self.activator,
        )
        self._local_policy = Policy(
            config.telemetry_interval,
            MaintenanceWindow.parse(config.maintenance_window)
            if config.maintenance_window
            else None,
            dict(config.pins),
        )
        self._pushed = load_pushed(self.data)
        self.policy = self._local_policy
        self._apply_policy()

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        log.info(
            "edge %s: starting (fleet %s, data %s, active %s)",
            self.device,
            self.config.fleet,
            self.data,
            self.actives.versions() or "none",
        )
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
                self.topics.resend(self.device),
            ]
        )
        if self.slots.pending is not None:
            name, target = self.slots.pending
            self.mqtt.subscribe([self._manifest_topic(name, target)])
        self.downloader.on_connect(session_present)

    @property
    def trust(self) -> TrustedRoot:
        return self.trust_store.trust

    def _dispatch(self, topic: str, payload: bytes) -> None:
        # chunks first: they are nearly every message, and the topics below are built (and
        # their names checked) on each comparison
        dl = self.slots.download
        if topic == self._resend_topic:
            verified = self.downloader.on_resend(topic, payload)
        elif dl is not None and topic.startswith(dl.chunk_prefix):
            verified = self.downloader.on_chunk(topic, payload)
        else:
            self._dispatch_other(topic, payload)
            return
        if verified is not None:
            self._activate(*verified)

    def _dispatch_other(self, topic: str, payload: bytes) -> None:
        if topic == self.topics.index():
            self._on_index(topic, payload)
        elif topic == self.topics.root_chain():
            self.trust_updates.on_root_chain(topic, payload)
        elif topic == self.topics.revocations():
            self.trust_updates.on_revocations(topic, payload)
        elif topic in (self.topics.commands(self.device), self.topics.fleet_commands()):
            self.trust_updates.on_command(topic, payload)
        elif self.slots.pending is not None and topic == self._manifest_topic(*self.slots.pending):
            self._on_manifest(topic, payload)
        # anything else is a late chunk of an abandoned release or a manifest we no longer want

    # --- index and manifest --------------------------------------------------------------
    def _on_index(self, topic: str, payload: bytes) -> None:
        try:
            index: DeploymentIndex = open_index(
                self.trust,
                payload,
                now=self.clock(),
                fleet=self.config.fleet,
                last_seq=self.record.index_seq,
            )
        except ProtocolError as exc:
            self.reporter.reject(topic, exc, update_state=True)
            return
        if index.seq > self.record.index_seq:
            self.record.index_seq = index.seq
            self.record.save_or_log(self.data, self.device)
        self._on_config(settings_for(index.config, self.device, self.config.tags))
        self._targets = dict(index.targets)
        self._choose_target()

    def _on_config(self, pushed: dict[str, object]) -> None:
        """Apply, persist and report the fleet configuration that selects this device."""
        if pushed == self._pushed:
            return
        try:
            save_pushed(self.data, pushed)
        except OSError as exc:
            log.error("edge %s: cannot save the fleet configuration: %s", self.device, exc)
        self._pushed = dict(pushed)
        self._apply_policy()
        log.info("edge %s: fleet configuration applied: %s", self.device, pushed or "none")
        self.reporter.event("config-applied", detail=str(dict(sorted(pushed.items())))[:500])
        self.reporter.publish_status()

    def _apply_policy(self) -> None:
        try:
            self.policy = effective_policy(self._local_policy, self._pushed)
        except ProtocolError as exc:  # validated when decoded; a hand-edited config.json
            log.error("edge %s: fleet configuration ignored: %s", self.device, exc)
            self.policy = self._local_policy
        self.telemetry.interval = self.policy.telemetry_interval
        self.profile["config"] = self.policy.report(self._pushed)

    def _choose_target(self) -> None:
        """Ask the chooser what the index's targets call for, and do it."""
        for action in choose(self._choice_facts()):
            self._apply(action)

    def _choice_facts(self) -> Facts:
        dl, deferred = self.slots.download, self.slots.deferred
        return Facts(
            targets={
                name: entry.for_device(
                    self.device,
                    self.config.tags,
                    self._ram_mb,
                    arch=str(self.profile.get("arch") or "") or None,
                    providers=tuple(self.profile.get("providers") or ()),
                )
                for name, entry in self._targets.items()
            },
            active=self.actives.versions(),
            pins=self.policy.pins,
            held_back=self.record.held_back,
            failed=self.record.failed,
            told=self._told_stale,
            rollback_tried=self._rollback_tried,
            download=None if dl is None else _ref(dl.release),
            deferred=None if deferred is None else _ref(deferred[0]),
            pending=self.slots.pending,
        )

    def _apply(self, action: Action) -> None:
        match action:
            case CancelDownload():
                assert self.slots.download is not None
                log.info(
                    "edge %s: %s is no longer targeted, dropping it",
                    self.device,
                    self.slots.download.label,
                )
                self.downloader.drop(discard=True)
                self.reporter.set_state(UpdateState.IDLE, reason=None)
            case ForgetDeferred():
                self.slots.deferred = None  # the verified file stays on disk for later
            case DropPending(name, target):
                self.mqtt.unsubscribe([self._manifest_topic(name, target)])
                self.slots.pending = None
            case RollBack(name, version, manifest_id):
                self._rollback_tried.add(manifest_id)
                self.activator.rollback(name, version)
            case AbandonDownload(name, version):
                assert self.slots.download is not None
                log.info(
                    "edge %s: abandoning %s for %s@%d",
                    self.device,
                    self.slots.download.label,
                    name,
                    version,
                )
                self.downloader.drop(discard=True)
            case FetchManifest(name, target):
                self.slots.pending = (name, target)
                self.mqtt.subscribe([self._manifest_topic(name, target)])
                log.info(
                    "edge %s: target %s@%d, fetching its manifest",
                    self.device,
                    name,
                    target.version,
                )
            case _:
                self._report(action)

    def _report(self, action: HeldByPin | RefuseDowngrade | HeldBack) -> None:
        """Say (once per release) why a target is not taken."""
        self._told_stale.add(action.manifest_id)
        name, version = action.name, action.version
        match action:
            case HeldByPin(pinned=pinned):
                self.reporter.event(
                    "held-by-pin", model=name, version=version, detail=f"pinned to {name}@{pinned}"
                )
            case RefuseDowngrade(active=active):
                self.reporter.reject(
                    self.topics.index(),
                    StaleError(
                        f"index targets {name}@{version} but "
                        f"{name}@{active} is active: downgrade refused"
                    ),
                    update_state=True,
                    model=name,
                    version=version,
                )
            case HeldBack():
                self.reporter.event(
                    "held-back",
                    model=name,
                    version=version,
                    detail="rolled back from by a signed directive",
                )

    def _manifest_topic(self, name: str, target: Target) -> str:
        return self.topics.manifest(name, target.version, target.variant)

    @property
    def _ram_mb(self) -> int | None:
        """What variant rules compare ``ram_below_mb`` with (the profile's RAM figure)."""
        ram = self.profile.get("ram_mb")
        return ram if isinstance(ram, int) and ram > 0 else None

    def _on_manifest(self, topic: str, payload: bytes) -> None:
        assert self.slots.pending is not None
        name, target = self.slots.pending
        try:
            release = open_manifest(self.trust, payload, now=self.clock(), fleet=self.config.fleet)
            m = release.manifest
            if release.id != target.manifest_id:
                raise MalformedMessage(
                    f"manifest {m.release} is not the release the index names", reason="mismatch"
                )
            if (m.name, m.version) != (name, target.version):
                raise MalformedMessage(
                    f"manifest {m.release} on the topic of {name}@{target.version}",
                    reason="mismatch",
                )
            active = self.actives.get(name)
            if active is not None and m.version <= active.version:
                raise StaleError(f"{m.release} is not newer than active {name}@{active.version}")
        except ProtocolError as exc:
            self.reporter.reject(topic, exc, update_state=True, model=name, version=target.version)
            return
        self.mqtt.unsubscribe([topic])
        self.slots.pending = None
        self._begin(release)

    # --- activation ------------------------------------------------------------------------
    def _begin(self, release: VerifiedManifest) -> None:
        verified = self.downloader.begin(release)
        if verified is not None:
            self._activate(*verified)

    def _activate(self, release: VerifiedManifest, path: Path) -> None:
        if self.activator.activate(release, path):
            self._choose_target()

    # --- periodic work -------------------------------------------------------------------
    def _tick(self) -> None:
        now = self.clock()
        self.reporter.report_unreported()
        if self.activator.activate_deferred(now):
            self._choose_target()
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
            self._choose_target_again()
        self.reporter.flush_due(now)

    def _choose_target_again(self) -> None:
        pending = self.slots.pending
        self.slots.pending = None
        if pending is not None:
            self._targets.setdefault(pending[0], pending[1])
        self._choose_target()
