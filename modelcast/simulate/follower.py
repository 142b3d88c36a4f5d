"""A virtual device follows the signed index as the edge's ``index_follower`` does.

``on_index`` opens the index (signature, fleet, expiry, replay), applies the configuration it
pushes to this device, keeps its targets and chooses: ``Target.for_device`` reduces each target
to this device (its rollout stage, its variant), the edge's own pure chooser
(``edge_node.target_choice.choose``) says what to do, and the actions are carried out here:
fetch a manifest, drop a download, roll back, report a target that is not taken.
``on_manifest`` checks the awaited manifest against the index's target and returns the release
to download.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edge_node.target_choice import (
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
from protocol import (
    MalformedMessage,
    ProtocolError,
    StaleError,
    Target,
    Topics,
    UpdateState,
    VerifiedManifest,
    open_index,
    open_manifest,
    settings_for,
)

from .download import SimDownloader
from .reporting import SimReporter, Wire
from .spec import DeviceSpec, Memory


def _ref(release: VerifiedManifest) -> ReleaseRef:
    return ReleaseRef(release.manifest.name, release.manifest.version, release.id)


class SimFollower:
    def __init__(
        self,
        spec: DeviceSpec,
        memory: Memory,
        *,
        fleet: str,
        topics: Topics,
        wire: Wire,
        clock: Callable[[], float],
        reporter: SimReporter,
        downloader: SimDownloader,
        rollback: Callable[[str, int], None],
        configure: Callable[[dict[str, Any]], None],
    ) -> None:
        self._spec = spec
        self._memory = memory
        self._fleet = fleet
        self._topics = topics
        self._wire = wire
        self._clock = clock
        self._reporter = reporter
        self._downloader = downloader
        self._rollback = rollback
        self._configure = configure

    # --- the index -----------------------------------------------------------------------
    def on_index(self, topic: str, payload: bytes) -> None:
        mem = self._memory
        try:
            index = open_index(
                mem.trust, payload, now=self._clock(), fleet=self._fleet, last_seq=mem.index_seq
            )
        except ProtocolError as exc:
            self._reporter.reject(topic, exc, update_state=True)
            return
        mem.index_seq = max(mem.index_seq, index.seq)
        self._configure(settings_for(index.config, self._spec.device, self._spec.tags))
        mem.targets = dict(index.targets)
        self.choose()

    def choose(self) -> None:
        for action in choose(self._facts()):
            self._apply(action)

    def _facts(self) -> Facts:
        mem, dl = self._memory, self._downloader.current
        return Facts(
            targets={name: self._spec.target(entry) for name, entry in mem.targets.items()},
            active=mem.versions(),
            pins=mem.policy.pins,
            held_back=mem.held_back,
            failed=mem.failed,
            told=mem.told,
            rollback_tried=mem.rollback_tried,
            download=None if dl is None else _ref(dl.release),
            deferred=None if mem.deferred is None else _ref(mem.deferred),
            pending=mem.pending,
        )

    def _apply(self, action: Action) -> None:
        mem = self._memory
        match action:
            case CancelDownload() | AbandonDownload():
                self._downloader.drop(discard=True)
                if isinstance(action, CancelDownload):
                    self._reporter.set_state(UpdateState.IDLE, reason=None, release=None)
            case ForgetDeferred():
                mem.deferred = None
            case DropPending(name, target):
                self._wire.unsubscribe([self.manifest_topic(name, target)])
                mem.pending = None
            case RollBack(name, version, manifest_id):
                mem.rollback_tried.add(manifest_id)
                self._rollback(name, version)
            case FetchManifest(name, target):
                mem.pending = (name, target)
                self._wire.subscribe([self.manifest_topic(name, target)])
            case _:
                self._report(action)

    def _report(self, action: HeldByPin | RefuseDowngrade | HeldBack) -> None:
        self._memory.told.add(action.manifest_id)
        name, version = action.name, action.version
        match action:
            case HeldByPin(pinned=pinned):
                detail = f"pinned to {name}@{pinned}"
                self._reporter.event("held-by-pin", model=name, version=version, detail=detail)
            case RefuseDowngrade(active=active):
                exc = StaleError(
                    f"index targets {name}@{version} but {name}@{active} is active: "
                    "downgrade refused"
                )
                self._reporter.reject(
                    self._topics.index(), exc, update_state=True, model=name, version=version
                )
            case HeldBack():
                detail = "rolled back from by a signed directive"
                self._reporter.event("held-back", model=name, version=version, detail=detail)

    # --- the manifest --------------------------------------------------------------------
    def manifest_topic(self, name: str, target: Target) -> str:
        return self._topics.manifest(name, target.version, target.variant)

    def awaits(self, topic: str) -> bool:
        pending = self._memory.pending
        return pending is not None and topic == self.manifest_topic(*pending)

    def on_connect(self) -> None:
        pending = self._memory.pending
        if pending is not None:
            self._wire.subscribe([self.manifest_topic(*pending)])

    def on_manifest(self, topic: str, payload: bytes) -> VerifiedManifest | None:
        """The awaited manifest, once it checks out against the index's target (None: refused,
        and reported)."""
        mem = self._memory
        assert mem.pending is not None
        name, target = mem.pending
        try:
            release = open_manifest(mem.trust, payload, now=self._clock(), fleet=self._fleet)
            m = release.manifest
            if release.id != target.manifest_id or (m.name, m.version) != (name, target.version):
                raise MalformedMessage(
                    f"manifest {m.release} is not the release the index names", reason="mismatch"
                )
            active = mem.active.get(m.name)
            if active is not None and m.version <= active.version:
                raise StaleError(f"{m.release} is not newer than active {m.name}@{active.version}")
        except ProtocolError as exc:
            self._reporter.reject(topic, exc, update_state=True, model=name, version=target.version)
            return None
        self._wire.unsubscribe([topic])
        mem.pending = None
        return release
