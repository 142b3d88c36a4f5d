"""Following the signed deployment index: what this device should run, and fetching it.

``on_index`` opens the index (signature, fleet, replay), applies the fleet configuration it
pushes, and keeps its targets; ``choose`` asks the pure chooser (``target_choice``) what they
call for here and carries out its actions: fetch a manifest, drop or abandon a download, roll
back, report a target that is not taken. ``on_manifest`` checks the awaited manifest against the
index's target and hands the release back to the agent, which has the downloader begin it.

Owned by the agent's worker thread; it sets and clears ``Slots.pending`` (the manifest awaited).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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

from .activator import Activator
from .active import ActiveModels, AgentRecord
from .config import EdgeConfig
from .downloader import Downloader
from .integrity import ModelIntegrity
from .pushed_config import PushedConfig
from .reporter import Reporter
from .shared import Slots, Wire
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
from .trust_store import TrustStore

log = logging.getLogger("modelcast.edge")


@dataclass(frozen=True)
class DeviceTraits:
    """What staged rollouts and variant rules look at to pick this device's target."""

    device: str
    tags: dict[str, str]
    ram_mb: int | None
    arch: str | None
    providers: tuple[str, ...]

    @classmethod
    def of(cls, device: str, tags: dict[str, str], profile: dict[str, Any]) -> DeviceTraits:
        ram = profile.get("ram_mb")
        return cls(
            device,
            tags,
            ram if isinstance(ram, int) and ram > 0 else None,
            str(profile.get("arch") or "") or None,
            tuple(profile.get("providers") or ()),
        )

    def target(self, entry: Target) -> Target | None:
        return entry.for_device(
            self.device, self.tags, self.ram_mb, arch=self.arch, providers=self.providers
        )


def _ref(release: VerifiedManifest) -> ReleaseRef:
    return ReleaseRef(release.manifest.name, release.manifest.version, release.id)


class IndexFollower:
    def __init__(
        self,
        config: EdgeConfig,
        *,
        topics: Topics,
        clock: Callable[[], float],
        wire: Wire,
        slots: Slots,
        trust: TrustStore,
        record: AgentRecord,
        actives: ActiveModels,
        traits: DeviceTraits,
        settings: PushedConfig,
        reporter: Reporter,
        downloader: Downloader,
        activator: Activator,
        integrity: ModelIntegrity,
    ) -> None:
        self.device = config.device_id
        self._fleet = config.fleet
        self._tags = config.tags
        self._data = config.data_dir
        self._topics = topics
        self._clock = clock
        self._wire = wire
        self._slots = slots
        self._trust = trust
        self._record = record
        self._actives = actives
        self._traits = traits
        self._settings = settings
        self._reporter = reporter
        self._downloader = downloader
        self._activator = activator
        self._integrity = integrity
        #: the last index's targets, by model name
        self.targets: dict[str, Target] = {}
        self._told: set[bytes] = set()  # targets reported as not taken (once each)
        self._rollback_tried: set[bytes] = set()  # rollback targets acted on (once each)

    # --- the index -----------------------------------------------------------------------
    def on_index(self, topic: str, payload: bytes) -> None:
        try:
            index = open_index(
                self._trust.trust,
                payload,
                now=self._clock(),
                fleet=self._fleet,
                last_seq=self._record.index_seq,
            )
        except ProtocolError as exc:
            self._reporter.reject(topic, exc, update_state=True)
            return
        if index.seq > self._record.index_seq:
            self._record.index_seq = index.seq
            self._record.saw_signed(index.issued)
            self._record.save_or_log(self._data, self.device)
        self._settings.update(settings_for(index.config, self.device, self._tags))
        self.targets = dict(index.targets)
        self.choose()

    def choose(self) -> None:
        """Ask the chooser what the index's targets call for, and do it."""
        for action in choose(self._facts()):
            self._apply(action)

    def choose_again(self) -> None:
        """The release awaited (to start over after a storage error) is chosen anew."""
        pending = self._slots.pending
        self._slots.pending = None
        if pending is not None:
            self.targets.setdefault(pending[0], pending[1])
        self.choose()

    def _facts(self) -> Facts:
        dl, deferred = self._slots.download, self._slots.deferred
        return Facts(
            targets={name: self._traits.target(entry) for name, entry in self.targets.items()},
            active=self._actives.versions(),
            pins=self._settings.policy.pins,
            held_back=self._record.held_back,
            repairs=self._integrity.repairs(),
            failed=self._record.failed,
            told=self._told,
            rollback_tried=self._rollback_tried,
            download=None if dl is None else _ref(dl.target),
            deferred=None if deferred is None else _ref(deferred.release),
            pending=self._slots.pending,
        )

    def _apply(self, action: Action) -> None:
        match action:
            case CancelDownload():
                dl = self._slots.download
                assert dl is not None
                log.info("edge %s: %s is no longer targeted, dropping it", self.device, dl.label)
                self._downloader.drop(discard=True)
                self._reporter.set_state(UpdateState.IDLE, reason=None)
            case ForgetDeferred():
                self._slots.deferred = None  # the verified file stays on disk for later
            case DropPending(name, target):
                self._wire.unsubscribe([self.manifest_topic(name, target)])
                self._slots.pending = None
            case RollBack(name, version, manifest_id):
                self._rollback_tried.add(manifest_id)
                self._activator.rollback(name, version)
            case AbandonDownload(name, version):
                dl = self._slots.download
                assert dl is not None
                log.info("edge %s: abandoning %s for %s@%d", self.device, dl.label, name, version)
                self._downloader.drop(discard=True)
            case FetchManifest(name, target):
                self._slots.pending = (name, target)
                self._wire.subscribe([self.manifest_topic(name, target)])
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
        self._told.add(action.manifest_id)
        name, version = action.name, action.version
        match action:
            case HeldByPin(pinned=pinned):
                self._reporter.event(
                    "held-by-pin", model=name, version=version, detail=f"pinned to {name}@{pinned}"
                )
            case RefuseDowngrade(active=active):
                self._reporter.reject(
                    self._topics.index(),
                    StaleError(
                        f"index targets {name}@{version} but "
                        f"{name}@{active} is active: downgrade refused"
                    ),
                    update_state=True,
                    model=name,
                    version=version,
                )
            case HeldBack():
                self._reporter.event(
                    "held-back",
                    model=name,
                    version=version,
                    detail="rolled back from by a signed directive",
                )

    # --- the manifest --------------------------------------------------------------------
    def manifest_topic(self, name: str, target: Target) -> str:
        return self._topics.manifest(name, target.version, target.variant)

    def awaits(self, topic: str) -> bool:
        """Whether ``topic`` is that of the manifest awaited."""
        pending = self._slots.pending
        return pending is not None and topic == self.manifest_topic(*pending)

    def on_connect(self) -> None:
        pending = self._slots.pending
        if pending is not None:
            self._wire.subscribe([self.manifest_topic(*pending)])

    def _check_newer(self, release: VerifiedManifest) -> None:
        """A release must be newer than the active one, or be that very release (the same
        signed sha256) fetched again to repair its corrupt file."""
        m = release.manifest
        active = self._actives.get(m.name)
        if active is None or m.version > active.version:
            return
        if m.version < active.version or self._integrity.repairs().get(m.name) != m.version:
            raise StaleError(f"{m.release} is not newer than active {m.name}@{active.version}")
        if m.sha256.hex() != active.sha256:
            raise MalformedMessage(
                f"{m.release} is not the release active here (another sha256): not its repair",
                reason="mismatch",
            )

    def on_manifest(self, topic: str, payload: bytes) -> VerifiedManifest | None:
        """The awaited manifest: the release to download once it checks out against the index's
        target (None: refused, and reported)."""
        assert self._slots.pending is not None
        name, target = self._slots.pending
        try:
            release = open_manifest(
                self._trust.trust, payload, now=self._clock(), fleet=self._fleet
            )
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
            self._check_newer(release)
        except ProtocolError as exc:
            self._reporter.reject(topic, exc, update_state=True, model=name, version=target.version)
            return None
        self._wire.unsubscribe([topic])
        self._slots.pending = None
        return release
