"""Per-device variants of one release (``fp32`` for gateways, ``int8`` for small cameras).

An index target may name several variants of its version, each with its own signed manifest,
and rules to pick one: the first rule whose conditions all hold on the device wins (tags equal
to the device's, the device's RAM below a threshold, its CPU architecture, an onnxruntime
execution provider it has); no rule matching: the target's own variant. The device picks from
signed data and downloads only its variant.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import MalformedMessage, OversizedMessage
from .limits import DEFAULT_LIMITS, Limits
from .names import check_name


@dataclass(frozen=True)
class VariantRule:
    variant: str
    tags: Mapping[str, str] | None = None
    ram_below_mb: int | None = None
    arch: str | None = None  # platform.machine(): x86_64, aarch64, ...
    provider: str | None = None  # an onnxruntime execution provider the device has

    def matches(
        self,
        tags: Mapping[str, str],
        ram_mb: int | None,
        arch: str | None = None,
        providers: tuple[str, ...] = (),
    ) -> bool:
        if self.ram_below_mb is not None and (ram_mb is None or ram_mb >= self.ram_below_mb):
            return False
        if self.arch is not None and arch != self.arch:
            return False
        if self.provider is not None and self.provider not in providers:
            return False
        return all(tags.get(k) == v for k, v in (self.tags or {}).items())

    def to_dict(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"variant": self.variant}
        if self.tags:
            obj["tags"] = dict(sorted(self.tags.items()))
        if self.ram_below_mb is not None:
            obj["ram_below_mb"] = self.ram_below_mb
        if self.arch is not None:
            obj["arch"] = self.arch
        if self.provider is not None:
            obj["provider"] = self.provider
        return obj

    @classmethod
    def from_dict(cls, raw: object, what: str, limits: Limits = DEFAULT_LIMITS) -> VariantRule:
        if not isinstance(raw, dict):
            raise MalformedMessage(f"{what}: a variant rule must be a map")
        tags = raw.get("tags") or {}
        ram = raw.get("ram_below_mb")
        if not isinstance(tags, dict) or len(tags) > limits.max_rule_tags:
            raise MalformedMessage(
                f"{what}: rule tags must be a map of at most {limits.max_rule_tags}"
            )
        if any(not isinstance(k, str) or not isinstance(v, str) for k, v in tags.items()):
            raise MalformedMessage(f"{what}: rule tags must map strings to strings")
        if ram is not None and (type(ram) is not int or ram <= 0):
            raise MalformedMessage(f"{what}: ram_below_mb must be a positive integer")
        facts = {}
        for key in ("arch", "provider"):
            value = raw.get(key)
            if value is not None and (not isinstance(value, str) or not 0 < len(value) <= 64):
                raise MalformedMessage(f"{what}: {key} must be a short string")
            facts[key] = value
        return cls(
            check_name(raw.get("variant"), "variant"),
            dict(tags) or None,
            ram,
            arch=facts["arch"],
            provider=facts["provider"],
        )

    def describe(self) -> str:
        conds = [f"{k}={v}" for k, v in sorted((self.tags or {}).items())]
        if self.ram_below_mb is not None:
            conds.append(f"ram_mb<{self.ram_below_mb}")
        if self.arch is not None:
            conds.append(f"profile.arch={self.arch}")
        if self.provider is not None:
            conds.append(f"profile.provider={self.provider}")
        return f"{self.variant}:{','.join(conds)}"


def choose_variant(
    rules: Iterable[VariantRule],
    tags: Mapping[str, str],
    ram_mb: int | None,
    arch: str | None = None,
    providers: tuple[str, ...] = (),
) -> str | None:
    """The variant of the first rule that holds on the device, or None."""
    for rule in rules:
        if rule.matches(tags, ram_mb, arch, providers):
            return rule.variant
    return None


def rules_from_list(
    raw: object, what: str, limits: Limits = DEFAULT_LIMITS
) -> tuple[VariantRule, ...]:
    if not isinstance(raw, list):
        raise MalformedMessage(f"{what}: rules must be a list")
    if len(raw) > limits.max_variant_rules:
        raise OversizedMessage(f"{what}: {len(raw)} rules exceeds {limits.max_variant_rules}")
    return tuple(VariantRule.from_dict(r, what, limits) for r in raw)
