"""The deployment index: the signed answer to "which release of each model should this fleet run".

Retained on ``modelcast/{fleet}/releases/index``. A device that was offline for several releases
reads only this, so it goes straight to the newest target. ``seq`` only grows: a replayed older
index is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

from .codec import (
    SCHEMA_VERSION,
    check_schema_version,
    field,
    non_negative,
    optional,
    pack,
    unpack_map,
)
from .envelope import TrustedRoot, seal
from .errors import ExpiredError, MalformedMessage, OversizedMessage, StaleError
from .fleet_config import ConfigEntry, config_from_list
from .limits import DEFAULT_LIMITS, Limits
from .names import check_name
from .rollout import PPM_ALL, Selector, check_rollout_id, membership_point
from .signing import SigningKey
from .variants import VariantRule, choose_variant, rules_from_list

KIND_INDEX = "index"


@dataclass(frozen=True)
class Target:
    """What a model should be on a device.

    ``rollback``: this version may be below the one a device runs; a device that kept it as
    its previous version goes back to it (instantly), one that did not stays where it is. It is
    how a halted rollout and ``modelcast rollback`` reach devices: signed, and ``seq``-monotonic
    like the rest of the index, so a replay cannot roll a device back.

    ``rollout``: only the devices in the rollout take this target; the others take its
    ``base`` (or, with no base, nothing for this model).
    """

    version: int
    manifest_id: bytes
    rollback: bool = False
    rollout: RolloutBlock | None = None
    #: the variant ``manifest_id`` is, when the release has several (see protocol.variants)...
    variant: str | None = None
    #: ...the others, by name, and the rules that pick one per device
    variants: Mapping[str, bytes] | None = None
    rules: tuple[VariantRule, ...] = ()

    def for_device(
        self,
        device: str,
        tags: Mapping[str, str],
        ram_mb: int | None = None,
        *,
        arch: str | None = None,
        providers: tuple[str, ...] = (),
    ) -> Target | None:
        """What applies to ``device`` (with ``tags``, ``ram_mb`` of RAM, CPU ``arch`` and
        onnxruntime ``providers``): this target or its rollout's base (None: nothing), reduced
        to the one variant the device takes."""
        if self.rollout is not None and not self.rollout.includes(device, tags):
            base = self.rollout.base
            if base is None:
                return None
            return base.for_device(device, tags, ram_mb, arch=arch, providers=providers)
        # without the block and the other variants: those change as the rollout widens or
        # rules are edited, the device's own target does not
        pick = choose_variant(self.rules, tags, ram_mb, arch, providers)
        if pick is not None and pick != self.variant and pick in (self.variants or {}):
            return Target(self.version, (self.variants or {})[pick], self.rollback, variant=pick)
        return Target(self.version, self.manifest_id, self.rollback, variant=self.variant)

    def to_dict(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"version": self.version, "manifest": self.manifest_id}
        if self.rollback:  # optional fields are omitted at their default: older bytes unchanged
            obj["rollback"] = True
        if self.rollout is not None:
            obj["rollout"] = self.rollout.to_dict()
        if self.variant is not None:
            obj["variant"] = self.variant
        if self.variants:
            obj["variants"] = dict(sorted(self.variants.items()))
        if self.rules:
            obj["rules"] = [r.to_dict() for r in self.rules]
        return obj

    @classmethod
    def from_dict(
        cls, raw: object, what: str, limits: Limits = DEFAULT_LIMITS, *, nested: bool = False
    ) -> Target:
        if not isinstance(raw, dict):
            raise MalformedMessage(f"{what} must be a map")
        t: dict[str, Any] = raw
        mid = field(t, "manifest", bytes, what)
        if len(mid) != 32:
            raise MalformedMessage(f"{what}: manifest id must be 32 bytes")
        rollout = None
        if t.get("rollout") is not None:
            if nested:
                raise MalformedMessage(f"{what}: a rollout's base cannot itself be a rollout")
            rollout = RolloutBlock.from_dict(t["rollout"], f"{what} rollout", limits)
        variants = t.get("variants")
        if variants is not None:
            most = limits.max_variants
            if not isinstance(variants, dict) or len(variants) > most:
                raise MalformedMessage(f"{what}: variants must be a map of at most {most}")
            for vname, vid in variants.items():
                check_name(vname, "variant")
                if not isinstance(vid, bytes) or len(vid) != 32:
                    raise MalformedMessage(
                        f"{what}: variant {vname!r} manifest id must be 32 bytes"
                    )
        variant = t.get("variant")
        return cls(
            version=non_negative(field(t, "version", int, what), "version", what),
            manifest_id=mid,
            rollback=optional(t, "rollback", bool, what, False),
            rollout=rollout,
            variant=None if variant is None else check_name(variant, "variant"),
            variants=dict(variants) if variants else None,
            rules=rules_from_list(t["rules"], what, limits) if t.get("rules") is not None else (),
        )


@dataclass(frozen=True)
class RolloutBlock:
    """A staged rollout in progress: devices matching ``select`` whose membership point is below
    ``ppm`` are in (see ``protocol.rollout``); the others take ``base``."""

    rollout: str
    ppm: int
    select: Selector = dc_field(default_factory=Selector)
    base: Target | None = None

    def includes(self, device: str, tags: Mapping[str, str]) -> bool:
        return (
            self.select.matches(device, tags) and membership_point(self.rollout, device) < self.ppm
        )

    def to_dict(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"id": self.rollout, "ppm": self.ppm}
        if not self.select.is_all:
            obj["select"] = self.select.to_dict()
        if self.base is not None:
            obj["base"] = self.base.to_dict()
        return obj

    @classmethod
    def from_dict(cls, raw: object, what: str, limits: Limits = DEFAULT_LIMITS) -> RolloutBlock:
        if not isinstance(raw, dict):
            raise MalformedMessage(f"{what} must be a map")
        ppm = field(raw, "ppm", int, what)
        if not 0 <= ppm <= PPM_ALL:
            raise MalformedMessage(f"{what}: ppm must be in [0, {PPM_ALL}], got {ppm}")
        select = raw.get("select")
        base = raw.get("base")
        return cls(
            rollout=check_rollout_id(raw.get("id"), what, limits),
            ppm=ppm,
            select=Selector() if select is None else Selector.from_dict(select, what, limits),
            base=(
                None
                if base is None
                else Target.from_dict(base, f"{what} base", limits, nested=True)
            ),
        )


@dataclass(frozen=True)
class DeploymentIndex:
    fleet: str
    seq: int
    issued: float
    expires: float
    targets: dict[str, Target] = dc_field(default_factory=dict)
    #: fleet configuration, in order (see protocol.fleet_config); omitted when empty
    config: tuple[ConfigEntry, ...] = ()

    def encode(self) -> bytes:
        optional_fields = {"config": [e.to_dict() for e in self.config]} if self.config else {}
        return pack(
            {
                "v": SCHEMA_VERSION,
                "fleet": self.fleet,
                "seq": self.seq,
                "issued": self.issued,
                "expires": self.expires,
                "targets": {name: t.to_dict() for name, t in sorted(self.targets.items())},
                **optional_fields,
            }
        )

    def sign(self, key: SigningKey, cert: bytes) -> bytes:
        return seal(KIND_INDEX, self.encode(), key, cert)

    @classmethod
    def decode(cls, body: bytes, limits: Limits = DEFAULT_LIMITS) -> DeploymentIndex:
        what = "deployment index"
        obj = unpack_map(body, limits.max_envelope_bytes, what)
        check_schema_version(obj, what)
        raw_targets = field(obj, "targets", dict, what)
        if len(raw_targets) > limits.max_targets:
            raise OversizedMessage(
                f"{what}: {len(raw_targets)} targets exceeds {limits.max_targets}"
            )
        targets: dict[str, Target] = {}
        for name, raw in raw_targets.items():
            check_name(name, "model name")
            targets[name] = Target.from_dict(raw, f"{what}: target {name!r}", limits)
        return cls(
            fleet=check_name(field(obj, "fleet", str, what), "fleet"),
            seq=non_negative(field(obj, "seq", int, what), "seq", what),
            issued=field(obj, "issued", float, what),
            expires=field(obj, "expires", float, what),
            targets=targets,
            config=(
                () if obj.get("config") is None else config_from_list(obj["config"], what, limits)
            ),
        )


def open_index(
    trust: TrustedRoot, data: bytes, *, now: float, fleet: str, last_seq: int = -1
) -> DeploymentIndex:
    """Verify an index envelope; refuse another fleet's, an expired one, or a replayed older one."""
    body, _cert = trust.open(data, KIND_INDEX, now)
    index = DeploymentIndex.decode(body, trust.limits)
    if index.fleet != fleet:
        raise MalformedMessage(f"deployment index is for fleet {index.fleet!r}, not {fleet!r}")
    if now >= index.expires:
        raise ExpiredError(f"deployment index seq {index.seq} expired at {index.expires}")
    if index.seq < last_seq:
        raise StaleError(f"deployment index seq {index.seq} is older than {last_seq}")
    return index
