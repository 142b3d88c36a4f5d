"""Which online devices will ask for a release: what the chunk sender's start hold waits for.

A device asks for the chunks of a release when the deployment index targets it with that
release (``protocol.Target.for_device``: its rollout stage, its variant by the rules, from the
tags, RAM, CPU architecture and execution providers its status profile reports) and it does
not run that version or a newer one already (nor is pinned to another version). Counting only
those, rather than every online device of the fleet, keeps a delivery from waiting for devices
on another variant, outside a rollout stage, or done already (``chunk_serving.FreshHold``).

``wanted_releases`` is the pure rule. ``ReleaseAskers`` keeps, for each online device, the
releases it wants, and for each release the devices that want it, updated when a device's status
or state changes (the worker) and when a new index is published (the poller); the network thread
reads one release's askers per chunk request. It is a forecast: a device that will not ask after
all (a release that failed to activate there, one held back by a rollback) only costs a hold
that ends on time.

Lock: ``_lock`` guards the maps; it is held for a few dict operations and one device's wants,
never while computing the wants of the whole fleet (a new index), nor while taking another lock.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from protocol import Target

#: One device's releases, by their 16-byte id (what chunk requests carry).
Wants = frozenset[bytes]
_NOTHING: Wants = frozenset()


@dataclass(frozen=True)
class DeviceTraits:
    """What the index's targeting looks at (from the status profile), and what the device runs."""

    tags: Mapping[str, str] = field(default_factory=dict)
    ram_mb: int | None = None
    arch: str | None = None
    providers: tuple[str, ...] = ()
    active: Mapping[str, int] = field(default_factory=dict)
    pins: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, profile: Mapping[str, Any], active: Mapping[str, int]) -> DeviceTraits:
        """From a status profile as devices report it (anything malformed reads as absent)."""
        tags = profile.get("tags")
        ram = profile.get("ram_mb")
        providers = profile.get("providers")
        config = profile.get("config")
        pins = config.get("pins") if isinstance(config, dict) else None
        return cls(
            tags={str(k): str(v) for k, v in tags.items()} if isinstance(tags, dict) else {},
            ram_mb=ram if isinstance(ram, int) and not isinstance(ram, bool) and ram > 0 else None,
            arch=str(profile.get("arch") or "") or None,
            providers=tuple(str(p) for p in providers) if isinstance(providers, list) else (),
            active=dict(active),
            pins=(
                {str(k): v for k, v in pins.items() if isinstance(v, int)}
                if isinstance(pins, dict)
                else {}
            ),
        )


def wanted_releases(device: str, traits: DeviceTraits, entries: Mapping[str, Target]) -> Wants:
    """The releases ``device`` will ask for under the index ``entries`` (model -> target): per
    model, its target's release unless it runs that version or a newer one (a rollback target
    below it is a switch to a kept file, not a download), or is pinned to another version."""
    wanted = set()
    for name, entry in entries.items():
        target = entry.for_device(
            device, traits.tags, traits.ram_mb, arch=traits.arch, providers=traits.providers
        )
        if target is None:
            continue
        active = traits.active.get(name)
        if active is not None and active >= target.version:
            continue
        pinned = traits.pins.get(name)
        if pinned is not None and pinned != target.version:
            continue
        wanted.add(bytes(target.manifest_id[:16]))
    return frozenset(wanted) if wanted else _NOTHING


class ReleaseAskers:
    """The online devices that will ask for each release (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: Mapping[str, Target] = {}
        self._traits: dict[str, DeviceTraits] = {}  # online devices
        self._wants: dict[str, Wants] = {}
        self._by_release: dict[bytes, set[str]] = {}
        self._snapshots: dict[bytes, frozenset[str]] = {}  # copies handed out, until changed

    # --- the network thread --------------------------------------------------------------
    def of(self, release_id: bytes) -> frozenset[str]:
        """The online devices that will ask for ``release_id`` (its first 16 bytes)."""
        rid = release_id[:16]
        with self._lock:
            snapshot = self._snapshots.get(rid)
            if snapshot is None:
                snapshot = self._snapshots[rid] = frozenset(self._by_release.get(rid, ()))
            return snapshot

    # --- the worker: what devices report -------------------------------------------------
    def on_status(
        self, device: str, *, online: bool, profile: Mapping[str, Any], active: Mapping[str, int]
    ) -> None:
        """A status report: online with its profile, or offline (the will)."""
        traits = DeviceTraits.of(profile, active) if online else None
        with self._lock:
            self._set_traits(device, traits)

    def on_active(self, device: str, active: Mapping[str, int]) -> None:
        """A state report of an online device: what it runs now (a release done, a rollback)."""
        with self._lock:
            traits = self._traits.get(device)
            if traits is not None and traits.active != active:
                self._set_traits(device, replace(traits, active=dict(active)))

    # --- the poller: what the index says -------------------------------------------------
    def on_index(self, entries: Mapping[str, Target]) -> None:
        """A new index was published: every online device's wants again (outside the lock)."""
        with self._lock:
            if entries == self._entries:
                return
            self._entries = entries
            traits = dict(self._traits)
        wants = {device: wanted_releases(device, t, entries) for device, t in traits.items()}
        with self._lock:
            if self._entries is not entries:
                return  # a newer index is being installed by a later call
            for device, t in self._traits.items():
                if traits.get(device) is not t:  # reported meanwhile
                    wants[device] = wanted_releases(device, t, entries)
            for device in list(self._wants):
                if device not in self._traits:
                    self._set_wants(device, _NOTHING)
            for device in self._traits:
                self._set_wants(device, wants[device])

    @property
    def online(self) -> int:
        with self._lock:
            return len(self._traits)

    # --- under the lock ------------------------------------------------------------------
    def _set_traits(self, device: str, traits: DeviceTraits | None) -> None:
        """One device's wants, computed here: a few targets, some microseconds."""
        if traits is None:
            self._traits.pop(device, None)
            self._set_wants(device, _NOTHING)
        else:
            self._traits[device] = traits
            self._set_wants(device, wanted_releases(device, traits, self._entries))

    def _set_wants(self, device: str, wants: Wants) -> None:
        before = self._wants.get(device, _NOTHING)
        if wants == before:
            return
        for rid in before - wants:
            devices = self._by_release[rid]
            devices.discard(device)
            if not devices:
                del self._by_release[rid]
            self._snapshots.pop(rid, None)
        for rid in wants - before:
            self._by_release.setdefault(rid, set()).add(device)
            self._snapshots.pop(rid, None)
        if wants:
            self._wants[device] = wants
        else:
            self._wants.pop(device, None)
