"""What the edge should do about the signed index's targets, decided on plain data.

``choose(facts)`` takes what the edge knows (the index's target of each model for this device,
the active versions and those whose file is corrupt, pins, versions held back by a rollback,
releases that failed to activate, what is downloading, verified and deferred, or awaited as a
manifest, and what was reported already) and returns the actions to take, in order. Nothing
here reads a clock, a file or the network: ``index_follower`` gathers the facts and applies the
actions, and every rule is unit-tested on its own (``tests/unit/test_edge_target_choice.py``).

The rules, model by model in name order:

- a pin holds a model at the pinned version: any other target is reported once
  (``HeldByPin``) and treated as no target;
- whatever of this model is downloading, deferred or awaited above the target (or at all, with
  no target) is dropped: the index no longer wants it here (a halted rollout, a device that
  left its stage);
- a target verified and waiting for the maintenance window needs nothing more;
- a rollback target below the active version: roll back to it, once (``RollBack``);
- a target at or below the active version needs nothing; below it, the downgrade is refused
  and reported once (``RefuseDowngrade``). The one exception: a target *at* the active version
  whose file on this device is corrupt (``Facts.repairs``, see ``integrity``) is fetched again,
  to repair it (never a downgrade: only that version, and the index follower takes only the
  manifest of the very release active here);
- a release that failed to activate here is never tried again;
- a version rolled back from by a signed directive is not taken again (``HeldBack``, once);
- one download at a time: while another model downloads, this one waits its turn; the same
  release, or an older one than the one downloading, changes nothing (and ends the choice); a
  newer one abandons the download (``AbandonDownload``);
- otherwise its manifest is fetched (``FetchManifest``), replacing any other awaited manifest
  (``DropPending`` first), and the choice ends: one release is fetched at a time.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from protocol import Target


@dataclass(frozen=True)
class ReleaseRef:
    """A release the edge holds in some form (downloading, or verified and deferred)."""

    name: str
    version: int
    id: bytes


@dataclass(frozen=True)
class Facts:
    #: by model name, the index's target for this device (None: nothing for this device)
    targets: Mapping[str, Target | None]
    #: by model name, the active version
    active: Mapping[str, int] = field(default_factory=dict)
    pins: Mapping[str, int] = field(default_factory=dict)
    #: by model name, the version rolled back from by a signed directive
    held_back: Mapping[str, int] = field(default_factory=dict)
    #: by model name, the active version whose file is corrupt: to fetch again
    repairs: Mapping[str, int] = field(default_factory=dict)
    #: ids (hex) of releases that failed to activate here
    failed: Collection[str] = ()
    #: manifest ids already reported as held by a pin, refused as a downgrade or held back
    told: Collection[bytes] = frozenset()
    #: rollback targets already acted on
    rollback_tried: Collection[bytes] = frozenset()
    download: ReleaseRef | None = None
    deferred: ReleaseRef | None = None
    #: the model and target whose manifest is awaited
    pending: tuple[str, Target] | None = None


@dataclass(frozen=True)
class HeldByPin:
    """Report (once) that ``name@version`` is targeted but the model is pinned elsewhere."""

    name: str
    version: int
    pinned: int
    manifest_id: bytes


@dataclass(frozen=True)
class CancelDownload:
    """Drop (and discard) the download of ``name``: the index no longer targets it here."""

    name: str


@dataclass(frozen=True)
class ForgetDeferred:
    """Stop waiting to activate the deferred release of ``name`` (its file stays on disk)."""

    name: str


@dataclass(frozen=True)
class DropPending:
    """Stop awaiting the manifest of ``name``'s ``target`` (unsubscribe from it)."""

    name: str
    target: Target


@dataclass(frozen=True)
class RollBack:
    """Go back to ``name@version`` (the previous version, kept on disk)."""

    name: str
    version: int
    manifest_id: bytes


@dataclass(frozen=True)
class RefuseDowngrade:
    """Report (once, as a rejection) that the index targets a version below the active one."""

    name: str
    version: int
    active: int
    manifest_id: bytes


@dataclass(frozen=True)
class HeldBack:
    """Report (once) that ``name@version`` was rolled back from and is not taken again."""

    name: str
    version: int
    manifest_id: bytes


@dataclass(frozen=True)
class AbandonDownload:
    """Drop (and discard) the download of ``name`` for its newer ``version``."""

    name: str
    version: int


@dataclass(frozen=True)
class FetchManifest:
    """Subscribe to the manifest of ``name``'s ``target``: the next release to fetch."""

    name: str
    target: Target


Action = (
    HeldByPin
    | CancelDownload
    | ForgetDeferred
    | DropPending
    | RollBack
    | RefuseDowngrade
    | HeldBack
    | AbandonDownload
    | FetchManifest
)


@dataclass
class _Holding:
    """What the edge holds as the actions so far leave it (a copy: ``Facts`` stay as given)."""

    download: ReleaseRef | None
    deferred: ReleaseRef | None
    pending: tuple[str, Target] | None


def choose(facts: Facts) -> tuple[Action, ...]:
    """The actions to take, in order (none: nothing to do). See the module docstring."""
    holding = _Holding(facts.download, facts.deferred, facts.pending)
    actions: list[Action] = []
    for name, target in sorted(facts.targets.items()):
        pinned = facts.pins.get(name)
        if target is not None and pinned is not None and target.version != pinned:
            if target.manifest_id not in facts.told:
                actions.append(HeldByPin(name, target.version, pinned, target.manifest_id))
            target = None
        actions.extend(_cancel_above(holding, name, None if target is None else target.version))
        if target is None:
            continue
        if not _wanted(facts, holding, name, target, actions):
            continue
        if _fetch(holding, name, target, actions):
            break
    return tuple(actions)


def _cancel_above(holding: _Holding, name: str, version: int | None) -> list[Action]:
    """Drop what is held of ``name`` newer than ``version`` (None: any)."""

    def above(held_name: str, held_version: int) -> bool:
        return held_name == name and (version is None or held_version > version)

    out: list[Action] = []
    dl, deferred, pending = holding.download, holding.deferred, holding.pending
    if dl is not None and above(dl.name, dl.version):
        out.append(CancelDownload(name))
        holding.download = None
    if deferred is not None and above(deferred.name, deferred.version):
        out.append(ForgetDeferred(name))
        holding.deferred = None
    if pending is not None and above(pending[0], pending[1].version):
        out.append(DropPending(name, pending[1]))
        holding.pending = None
    return out


def _wanted(
    facts: Facts, holding: _Holding, name: str, target: Target, actions: list[Action]
) -> bool:
    """Whether ``target`` is a release to fetch, as far as this model alone goes (reports and
    rollbacks are appended to ``actions``)."""
    mid = target.manifest_id
    if holding.deferred is not None and holding.deferred.id == mid:
        return False  # verified, waiting for the maintenance window
    active = facts.active.get(name)
    if active is not None and target.version < active and target.rollback:
        # A download of this model is never below the active version (it was newer when it
        # began, and a rollback drops it), so _cancel_above dropped any: none to simulate here.
        if mid not in facts.rollback_tried:
            actions.append(RollBack(name, target.version, mid))
        return False
    if active is not None and target.version <= active:
        if target.version == active and facts.repairs.get(name) == active:
            return mid.hex() not in facts.failed  # the repair of the active release
        if target.version < active and mid not in facts.told:
            actions.append(RefuseDowngrade(name, target.version, active, mid))
        return False
    if mid.hex() in facts.failed:
        return False
    if target.version <= facts.held_back.get(name, -1):
        if mid not in facts.told:
            actions.append(HeldBack(name, target.version, mid))
        return False
    return True


def _fetch(holding: _Holding, name: str, target: Target, actions: list[Action]) -> bool:
    """Fetch ``target`` unless the download in progress says otherwise; True: the choice is
    over (a release is being fetched, or stays so)."""
    dl = holding.download
    if dl is not None:
        if dl.name != name:
            return False  # one download at a time; this name's turn comes next
        if dl.id == target.manifest_id or target.version <= dl.version:
            return True
        actions.append(AbandonDownload(name, target.version))
    if holding.pending is not None:
        if holding.pending == (name, target):
            return True
        actions.append(DropPending(*holding.pending))
    holding.pending = (name, target)
    actions.append(FetchManifest(name, target))
    return True
