"""Who is in a staged rollout: a pure function of signed data that edge and coordinator share.

A device is in rollout ``R`` at ``ppm`` (parts per million of the fleet) iff it matches the
rollout's selector and ``membership_point(R, device) < ppm``. The point is the first four bytes of
``sha256(R || 0x00 || device)`` scaled to ``[0, 1_000_000)``, so membership is:

* deterministic: the coordinator computes the same answer the device does, from the same index;
* monotone: raising ``ppm`` from 5% to 25% keeps the first 5% in;
* independent across rollouts: a device that was early in one rollout is not early in all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import MalformedMessage, OversizedMessage
from .limits import DEFAULT_LIMITS, Limits
from .names import check_name

PPM_ALL = 1_000_000


def membership_point(rollout: str, device: str) -> int:
    """Where ``device`` falls in rollout ``rollout``: an integer in ``[0, PPM_ALL)``."""
    digest = hashlib.sha256(rollout.encode() + b"\x00" + device.encode()).digest()
    return int.from_bytes(digest[:4], "big") * PPM_ALL >> 32


def stage_ppm(percent: float) -> int:
    """``percent`` of the fleet as parts per million (100 or more: everyone)."""
    if percent >= 100:
        return PPM_ALL
    return max(0, round(percent * PPM_ALL / 100))


@dataclass(frozen=True)
class Selector:
    """Which devices a rollout (or rollback) is for: all tags must match, and, when ``devices``
    is not empty, the device must be listed. The empty selector is the whole fleet."""

    tags: Mapping[str, str] | None = None
    devices: tuple[str, ...] = ()

    @property
    def is_all(self) -> bool:
        return not self.tags and not self.devices

    def matches(self, device: str, tags: Mapping[str, str]) -> bool:
        if self.devices and device not in self.devices:
            return False
        return all(tags.get(k) == v for k, v in (self.tags or {}).items())

    def to_dict(self) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        if self.tags:
            obj["tags"] = dict(sorted(self.tags.items()))
        if self.devices:
            obj["devices"] = sorted(self.devices)
        return obj

    @classmethod
    def from_dict(cls, obj: object, what: str, limits: Limits = DEFAULT_LIMITS) -> Selector:
        if not isinstance(obj, dict):
            raise MalformedMessage(f"{what}: selector must be a map")
        tags = obj.get("tags", {})
        devices = obj.get("devices", [])
        if not isinstance(tags, dict) or not isinstance(devices, list):
            raise MalformedMessage(f"{what}: selector tags must be a map, devices a list")
        most_tags, most_devices = limits.max_selector_tags, limits.max_selector_devices
        if len(tags) > most_tags or len(devices) > most_devices:
            raise OversizedMessage(
                f"{what}: selector has {len(tags)} tags and {len(devices)} devices "
                f"(at most {most_tags} and {most_devices})"
            )
        for k, v in tags.items():
            if (
                not isinstance(v, str)
                or not 0 < len(k) <= limits.max_tag_chars
                or not 0 < len(v) <= limits.max_tag_chars
            ):
                raise MalformedMessage(f"{what}: selector tag {k!r} must map to a short string")
        return cls(
            tags=dict(tags) or None,
            devices=tuple(check_name(d, "device id") for d in devices),
        )

    def describe(self) -> str:
        if self.is_all:
            return "all devices"
        parts = [f"{k}={v}" for k, v in sorted((self.tags or {}).items())]
        if self.devices:
            parts.append("devices " + ",".join(self.devices))
        return " and ".join(parts)


def check_rollout_id(value: object, what: str, limits: Limits = DEFAULT_LIMITS) -> str:
    most = limits.max_rollout_id_chars
    if not isinstance(value, str) or not 0 < len(value) <= most:
        raise MalformedMessage(f"{what}: rollout id must be a string of 1-{most} characters")
    return value
