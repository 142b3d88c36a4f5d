"""One virtual device: an edge's behaviour on the wire, without its process, disk or runtime.

It subscribes to the topics an edge subscribes to, follows the signed index and manifests
(``follower``), downloads and verifies releases (``download``), reports its state, status,
events and metrics samples (``reporting``), follows root rotations and revocations, and obeys
signed commands, all through the protocol's own state machines. What it does not do: run
onnxruntime (activation is "verified, then marked active": no model check, no acceptance
vectors), keep files (unless its sink is a disk sink), survive a restart.

Everything runs on its process's loop thread: the link calls ``on_connect``, ``on_disconnect``
and ``on_message``; the worker calls ``tick`` (download stalls, paced state messages, the
maintenance window) and ``sample`` (telemetry).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from edge_node.policy import Policy, effective_policy
from protocol import (
    DEFAULT_WINDOW,
    ProtocolError,
    SignatureError,
    Topics,
    TrustedRoot,
    UpdateState,
    VerifiedManifest,
    apply_revocations,
    follow_chain,
    open_command,
)

from .download import SimDownloader
from .follower import SimFollower
from .reporting import SimReporter, Wire
from .sinks import SinkFactory
from .spec import Active, DeviceSpec, Memory
from .verified import VerifiedChunks

log = logging.getLogger("modelcast.simulate")


@dataclass(frozen=True)
class DeviceOptions:
    """The edge settings a virtual device has (``edge_node.config.EdgeConfig``'s defaults)."""

    fleet: str = "default"
    window: int = DEFAULT_WINDOW
    stall_timeout: float = 10.0
    state_interval: float = 0.5
    telemetry_interval: float = 60.0


class VirtualDevice:
    def __init__(
        self,
        spec: DeviceSpec,
        trust: TrustedRoot,
        *,
        wire: Wire,
        clock: Callable[[], float],
        sinks: SinkFactory,
        options: DeviceOptions = DeviceOptions(),
        verified: VerifiedChunks | None = None,
    ) -> None:
        self.spec = spec
        self.device = spec.device
        self.topics = Topics(options.fleet)
        self._resend_topic = self.topics.resend(spec.device)
        self._fleet = options.fleet
        self._wire = wire
        self._clock = clock
        self.memory = Memory(trust, Policy(options.telemetry_interval))
        self.connected = False
        #: releases verified here (``NAME@VERSION``), and when (wall clock)
        self.verified_at: dict[str, float] = {}
        self.connects = 0
        self.bytes_received = 0
        #: messages and bytes that arrived but served nothing: chunks of a release no longer
        #: downloaded (late block publications, late resends), manifests no longer wanted
        self.unwanted = 0
        self.unwanted_bytes = 0
        self._rooms(sinks, options, verified)
        self._local_policy = self.memory.policy
        self.configure({})

    def _rooms(
        self, sinks: SinkFactory, options: DeviceOptions, verified: VerifiedChunks | None
    ) -> None:
        """The reporter, the downloader and the index follower, sharing the wire and clock."""
        topics, wire, clock = self.topics, self._wire, self._clock
        self.reporter = SimReporter(
            device=self.device,
            boot=uuid.uuid4().hex[:12],
            profile=self.spec.status_profile(),
            active=self.memory.versions,
            session=lambda: self.downloader.session,
            state_interval=options.state_interval,
            topics=topics,
            wire=wire,
            clock=clock,
        )
        self.downloader = SimDownloader(
            device=self.device,
            reporter=self.reporter,
            sinks=sinks,
            connected=lambda: self.connected,
            window=options.window,
            stall_timeout=options.stall_timeout,
            verified=verified,
            topics=topics,
            wire=wire,
            clock=clock,
        )
        self.follower = SimFollower(
            self.spec,
            self.memory,
            fleet=options.fleet,
            reporter=self.reporter,
            downloader=self.downloader,
            rollback=self.rollback,
            configure=self.configure,
            topics=topics,
            wire=wire,
            clock=clock,
        )

    @property
    def telemetry_interval(self) -> float:
        return self.memory.policy.telemetry_interval

    # --- the link ------------------------------------------------------------------------
    def on_connect(self, session_present: bool) -> None:
        self.connected = self.reporter.connected = True
        self.connects += 1
        self.reporter.publish_status()
        t = self.topics
        self._wire.subscribe(
            [
                t.root_chain(),
                t.revocations(),
                t.index(),
                t.commands(self.device),
                t.fleet_commands(),
                self._resend_topic,
            ]
        )
        self.follower.on_connect()
        self.downloader.on_connect(session_present)
        if self.reporter.dirty:
            self.reporter.flush_state()

    def on_disconnect(self) -> None:
        self.connected = self.reporter.connected = False

    def on_message(self, topic: str, payload: bytes) -> None:
        self.bytes_received += len(payload)
        try:
            self._dispatch(topic, payload)
        except Exception:  # a bug must not stop the loop the other devices share
            log.exception("device %s: failed on a message on %s", self.device, topic)

    def _dispatch(self, topic: str, payload: bytes) -> None:
        if topic == self._resend_topic:
            self._activate(self.downloader.on_resend(topic, payload))
        elif self.downloader.is_chunk(topic):
            self._activate(self.downloader.on_chunk(topic, payload))
        elif topic == self.topics.index():
            self.follower.on_index(topic, payload)
        elif self.follower.awaits(topic):
            release = self.follower.on_manifest(topic, payload)
            if release is not None:
                self._activate(self.downloader.begin(release))
        elif topic == self.topics.root_chain():
            self._on_root_chain(topic, payload)
        elif topic == self.topics.revocations():
            self._on_revocations(topic, payload)
        elif topic in (self.topics.commands(self.device), self.topics.fleet_commands()):
            self._on_command(topic, payload)
        else:  # a late chunk of a release done with or abandoned, a manifest no longer wanted
            self.unwanted += 1
            self.unwanted_bytes += len(payload)

    # --- trust and commands (``edge_node.trust_updates``) -------------------------------
    def _on_root_chain(self, topic: str, payload: bytes) -> None:
        if not payload:
            return
        mem = self.memory
        try:
            trust = follow_chain(mem.trust, payload)
        except ProtocolError as exc:
            self.reporter.reject(topic, exc, update_state=False)
            return
        if trust.root_version != mem.trust.root_version:
            mem.trust = trust
            self.reporter.event("root-rotated", detail=trust.root.key_id)

    def _on_revocations(self, topic: str, payload: bytes) -> None:
        if not payload:
            return
        mem = self.memory
        try:
            trust = apply_revocations(mem.trust, payload, now=self._clock())
        except ProtocolError as exc:
            self.reporter.reject(topic, exc, update_state=False)
            return
        added = trust.revoked - mem.trust.revoked
        mem.trust = trust
        if added:
            self.reporter.event("keys-revoked", detail=", ".join(sorted(added)))
        dl = self.downloader.current
        if dl is not None and dl.release.signer.key.key_id in added:
            label = dl.release.manifest.release
            revoked = SignatureError(f"{label} was signed by a revoked key", reason="revoked-key")
            self.reporter.reject(topic, revoked, update_state=True)
            self.downloader.drop(discard=True)

    def _on_command(self, topic: str, payload: bytes) -> None:
        if not payload:
            return
        mem = self.memory
        try:
            command = open_command(
                mem.trust,
                payload,
                now=self._clock(),
                fleet=self._fleet,
                device=self.device,
                last_seq=mem.command_seq,
            )
        except ProtocolError as exc:
            self.reporter.reject(topic, exc, update_state=False)
            return
        mem.command_seq = command.seq
        if command.action == "rollback":
            self.rollback(str(command.args["model"]), int(command.args["version"]))
        elif command.action == "re-request" and self.downloader.current is not None:
            self.downloader.repair()
        else:
            detail = f"{command.action} is not supported yet"
            self.reporter.event("command-ignored", detail=detail)

    def configure(self, pushed: dict[str, Any]) -> None:
        """Apply the fleet configuration pushed to this device (``edge_node.pushed_config``)."""
        mem = self.memory
        if pushed == mem.pushed and self.reporter.profile.get("config") is not None:
            return
        changed = pushed != mem.pushed
        mem.pushed = dict(pushed)
        try:
            mem.policy = effective_policy(self._local_policy, mem.pushed)
        except ProtocolError:
            mem.policy = self._local_policy
        self.reporter.profile["config"] = mem.policy.report(mem.pushed)
        if changed:
            self.reporter.event("config-applied", detail=str(dict(sorted(pushed.items())))[:500])
            if self.connected:
                self.reporter.publish_status()

    # --- activation ----------------------------------------------------------------------
    def _activate(self, release: VerifiedManifest | None) -> None:
        """A verified release: "activated" at once (no runtime to load it into), or in the
        maintenance window; then the targets are chosen again."""
        if release is None:
            return
        self.verified_at[release.manifest.release] = self._clock()
        mem = self.memory
        if not mem.policy.may_activate(self._clock()):
            mem.deferred = release
            window = mem.policy.maintenance_window
            reason = f"waiting for the maintenance window {window} UTC"
            self.reporter.set_state(UpdateState.VERIFIED, reason=reason, release=release)
            return
        mem.deferred = None
        m = release.manifest
        self.reporter.set_state(UpdateState.ACTIVATING, reason=None, release=release)
        before = mem.active.get(m.name)
        previous = before.version if before is not None else None
        mem.active[m.name] = Active(m.version, m.sha256.hex(), m.variant, previous)
        self.reporter.profile["variants"] = mem.variants()
        detail = f"variant {m.variant}" if m.variant else None
        self.reporter.event("activated", model=m.name, version=m.version, detail=detail)
        self.reporter.set_state(UpdateState.ACTIVE, reason=None, release=release)
        self.reporter.publish_status()
        self.follower.choose()

    def rollback(self, name: str, version: int) -> None:
        """Back to ``version`` of ``name``, if it is the previous version kept here."""
        mem = self.memory
        active = mem.active.get(name)
        if active is None or active.version == version:
            return
        if active.previous != version:
            detail = f"{name}@{version} is not the previous version on this device"
            self.reporter.event("rollback-failed", model=name, version=version, detail=detail)
            return
        mem.active[name] = Active(version, "", None, None)
        mem.held_back[name] = max(active.version, mem.held_back.get(name, -1))
        dl = self.downloader.current
        if dl is not None and dl.release.manifest.name == name:
            self.downloader.drop(discard=False)
        left = f"{name}@{active.version}"
        self.reporter.event("rolled-back", model=name, version=version, detail=f"from {left}")
        self.reporter.state = replace(self.reporter.state, model=name, version=version)
        self.reporter.set_state(UpdateState.ACTIVE, reason=f"rolled back from {left}", release=None)
        self.reporter.publish_status()

    # --- periodic work -------------------------------------------------------------------
    def tick(self, now: float) -> None:
        """Stall repair, the paced state message, the maintenance window, flood summaries."""
        self.downloader.tick(now)
        if self.connected:
            self.reporter.flush_due(now)
        self.reporter.report_unreported()
        deferred = self.memory.deferred
        if deferred is not None and self.memory.policy.may_activate(now):
            self._activate(deferred)

    @property
    def busy(self) -> bool:
        """Whether ``tick`` has anything to do."""
        return (
            self.downloader.current is not None
            or self.reporter.dirty
            or self.memory.deferred is not None
        )

    def sample(self) -> None:
        self.reporter.sample(
            interval=self.telemetry_interval,
            reconnects=max(0, self.connects - 1),
            bytes_received=self.bytes_received,
        )

    def milestones(self) -> dict[str, dict[str, float]]:
        """``NAME@VERSION`` -> milestone (``began``, ``first_chunk``, ``verified``) -> when."""
        out: dict[str, dict[str, float]] = {}
        dl = self.downloader
        for name, times in (
            ("began", dl.began_at),
            ("first_chunk", dl.first_chunk_at),
            ("verified", self.verified_at),
        ):
            for label, at in times.items():
                out.setdefault(label, {})[name] = at
        return out

    def counters(self) -> dict[str, int]:
        """What the worker's report adds up."""
        dl = self.downloader
        return {
            "bytes_received": self.bytes_received,
            "chunks": dl.chunks,
            "duplicates": dl.duplicates,
            "unwanted": self.unwanted + dl.late_resends,
            "unwanted_bytes": self.unwanted_bytes + dl.late_resend_bytes,
            "requests": dl.requests,
            "stalls": dl.stalls,
            "telemetry_made": self.reporter.made,
            "telemetry_refused": self.reporter.refused,
        }

    def stop_messages(self) -> list[tuple[str, bytes]]:
        """What a clean stop publishes: ``online: false``."""
        return [self.reporter.offline_status()]
