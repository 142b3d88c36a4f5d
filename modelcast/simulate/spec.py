"""Who a virtual device is, and what it knows and holds while it runs.

``DeviceProfile`` is what ``--profile`` describes (tags, RAM, CPU architecture, execution
providers): what staged rollouts and variant rules look at. ``DeviceSpec`` is one device: its id
and profile. ``Memory`` is what the edge keeps in its data directory (``trust.json``,
``agent.json``, ``active.json``) and a virtual device keeps in memory: a restarted simulation
starts from nothing but the trust file (and, with ``--disk``, the part files).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edge_node.policy import Policy
from protocol import Target, TrustedRoot, VerifiedManifest
from protocol.textmodel import KIND_FILE, KIND_TENSORS

#: what a virtual device says it runs, in its status profile
SIMULATED_OS = "simulated"


@dataclass(frozen=True)
class DeviceProfile:
    """One kind of device (``--profile class=small,ram_mb=512``)."""

    tags: Mapping[str, str] = field(default_factory=dict)
    ram_mb: int | None = None
    arch: str | None = None
    providers: tuple[str, ...] = ("CPUExecutionProvider",)

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in sorted(self.tags.items())]
        if self.ram_mb is not None:
            parts.append(f"ram_mb={self.ram_mb}")
        if self.arch is not None:
            parts.append(f"arch={self.arch}")
        return ",".join(parts) or "(no tags)"


@dataclass(frozen=True)
class DeviceSpec:
    device: str
    profile: DeviceProfile = field(default_factory=DeviceProfile)

    @property
    def tags(self) -> dict[str, str]:
        return dict(self.profile.tags)

    def target(self, entry: Target) -> Target | None:
        """What ``entry`` means for this device (its rollout stage, its variant)."""
        p = self.profile
        return entry.for_device(self.device, p.tags, p.ram_mb, arch=p.arch, providers=p.providers)

    def status_profile(self) -> dict[str, Any]:
        """The profile of the status message, in the shape ``edge_node.profile`` gives it."""
        p = self.profile
        out: dict[str, Any] = {
            "os": SIMULATED_OS,
            "arch": p.arch or "",
            "cores": 1,
            "ram_mb": p.ram_mb or 0,
            "providers": list(p.providers),
            "model_kinds": [KIND_TENSORS, KIND_FILE],
            "tags": dict(p.tags),
            "simulated": True,
        }
        return out


@dataclass(frozen=True)
class Active:
    """The active release of one model, and the version before it (kept for a rollback)."""

    version: int
    sha256: str
    variant: str | None = None
    previous: int | None = None


@dataclass
class Memory:
    trust: TrustedRoot
    policy: Policy
    active: dict[str, Active] = field(default_factory=dict)
    #: the last index accepted, and its targets by model name
    index_seq: int = -1
    targets: dict[str, Target] = field(default_factory=dict)
    command_seq: int = -1
    #: the fleet configuration pushed to this device
    pushed: dict[str, Any] = field(default_factory=dict)
    #: target choice bookkeeping (``edge_node.target_choice.Facts``)
    told: set[bytes] = field(default_factory=set)
    rollback_tried: set[bytes] = field(default_factory=set)
    held_back: dict[str, int] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)
    #: the model and target whose manifest is awaited
    pending: tuple[str, Target] | None = None
    #: verified, waiting for the maintenance window
    deferred: VerifiedManifest | None = None

    def versions(self) -> dict[str, int]:
        return {name: a.version for name, a in self.active.items()}

    def variants(self) -> dict[str, str]:
        return {name: a.variant for name, a in self.active.items() if a.variant}
