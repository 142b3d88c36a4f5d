"""The deployment index: the signed answer to "which release of each model should this fleet run".

Retained on ``modelcast/{fleet}/releases/index``. A device that was offline for several releases
reads only this, so it goes straight to the newest target. ``seq`` only grows: a replayed older
index is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

from .codec import check_schema_version, field, non_negative, pack, unpack_map
from .envelope import TrustedRoot, seal
from .errors import ExpiredError, MalformedMessage, OversizedMessage, StaleError
from .limits import DEFAULT_LIMITS, Limits
from .names import check_name
from .signing import SigningKey

KIND_INDEX = "index"


@dataclass(frozen=True)
class Target:
    version: int
    manifest_id: bytes


@dataclass(frozen=True)
class DeploymentIndex:
    fleet: str
    seq: int
    issued: float
    expires: float
    targets: dict[str, Target] = dc_field(default_factory=dict)

    def body(self) -> bytes:
        return pack(
            {
                "v": 1,
                "fleet": self.fleet,
                "seq": self.seq,
                "issued": self.issued,
                "expires": self.expires,
                "targets": {
                    name: {"version": t.version, "manifest": t.manifest_id}
                    for name, t in sorted(self.targets.items())
                },
            }
        )

    def sign(self, key: SigningKey, cert: bytes) -> bytes:
        return seal(KIND_INDEX, self.body(), key, cert)

    @classmethod
    def parse(cls, body: bytes, limits: Limits = DEFAULT_LIMITS) -> DeploymentIndex:
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
            if not isinstance(raw, dict):
                raise MalformedMessage(f"{what}: target {name!r} must be a map")
            t: dict[str, Any] = raw
            mid = field(t, "manifest", bytes, what)
            if len(mid) != 32:
                raise MalformedMessage(f"{what}: target {name!r} manifest id must be 32 bytes")
            targets[name] = Target(
                non_negative(field(t, "version", int, what), "version", what), mid
            )
        return cls(
            fleet=check_name(field(obj, "fleet", str, what), "fleet"),
            seq=non_negative(field(obj, "seq", int, what), "seq", what),
            issued=field(obj, "issued", float, what),
            expires=field(obj, "expires", float, what),
            targets=targets,
        )


def open_index(
    trust: TrustedRoot, data: bytes, *, now: float, fleet: str, last_seq: int = -1
) -> DeploymentIndex:
    """Verify an index envelope; refuse another fleet's, an expired one, or a replayed older one."""
    body, _cert = trust.open(data, KIND_INDEX, now)
    index = DeploymentIndex.parse(body, trust.limits)
    if index.fleet != fleet:
        raise MalformedMessage(f"deployment index is for fleet {index.fleet!r}, not {fleet!r}")
    if now >= index.expires:
        raise ExpiredError(f"deployment index seq {index.seq} expired at {index.expires}")
    if index.seq < last_seq:
        raise StaleError(f"deployment index seq {index.seq} is older than {last_seq}")
    return index
