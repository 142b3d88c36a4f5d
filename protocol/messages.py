"""msgpack schemas of the small messages between devices and the coordinator."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dc_field
from enum import StrEnum
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
from .errors import MalformedMessage, OversizedMessage
from .limits import DEFAULT_LIMITS, Limits
from .names import check_name
from .ranges import iter_ranges


class UpdateState(StrEnum):
    """What the device reports on its state topic."""

    IDLE = "idle"
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    VERIFIED = "verified"
    ACTIVATING = "activating"
    ACTIVE = "active"
    FAILED = "failed"
    REJECTED = "rejected"


def _active_map(obj: dict[str, Any], what: str) -> dict[str, int]:
    raw = optional(obj, "active", dict, what, {})
    out: dict[str, int] = {}
    for name, version in raw.items():
        check_name(name, "model name")
        if type(version) is not int:
            raise MalformedMessage(f"{what}: active version of {name!r} must be int")
        out[name] = version
    return out


@dataclass(frozen=True)
class ChunkRequest:
    """A device asks for chunks it lacks. ``subscribed`` lists the chunk blocks it subscribed to
    since its previous request; ``fresh`` says its earlier subscriptions are gone (new session);
    ``repair`` says it asked before and nothing came (so the coordinator must not coalesce it
    away); ``codecs`` lists the chunk compressions it decodes (``zstd``; none: raw chunks only,
    as from devices older than compression)."""

    device: str
    name: str
    version: int
    release_id: bytes
    ranges: tuple[tuple[int, int], ...]
    subscribed: tuple[int, ...] = ()
    fresh: bool = False
    repair: bool = False
    codecs: tuple[str, ...] = ()

    def encode(self) -> bytes:
        return pack(
            {
                "v": SCHEMA_VERSION,
                "device": self.device,
                "name": self.name,
                "version": self.version,
                "release": self.release_id,
                "ranges": [list(r) for r in self.ranges],
                "subscribed": list(self.subscribed),
                "fresh": self.fresh,
                "repair": self.repair,
                **({"codecs": list(self.codecs)} if self.codecs else {}),
            }
        )

    @classmethod
    def decode(cls, data: bytes, limits: Limits = DEFAULT_LIMITS) -> ChunkRequest:
        what = "chunk request"
        obj = unpack_map(data, limits.max_message_bytes, what)
        check_schema_version(obj, what)
        raw_ranges = field(obj, "ranges", list, what)
        if len(raw_ranges) > limits.max_request_ranges:
            raise OversizedMessage(f"{what}: {len(raw_ranges)} ranges exceeds the cap")
        ranges: list[tuple[int, int]] = []
        for r in raw_ranges:
            if (
                not isinstance(r, list)
                or len(r) != 2
                or any(type(x) is not int or x < 0 for x in r)
                or r[1] == 0
                or r[0] + r[1] > limits.max_chunks
            ):
                raise MalformedMessage(f"{what}: bad range {r!r}")
            ranges.append((r[0], r[1]))
        subscribed = optional(obj, "subscribed", list, what, [])
        if len(subscribed) > limits.max_chunks or any(
            type(b) is not int or b < 0 for b in subscribed
        ):
            raise MalformedMessage(f"{what}: bad subscribed block list")
        release_id = field(obj, "release", bytes, what)
        if len(release_id) not in (16, 32):
            raise MalformedMessage(f"{what}: release id must be 16 or 32 bytes")
        return cls(
            device=check_name(field(obj, "device", str, what), "device id"),
            name=check_name(field(obj, "name", str, what), "model name"),
            version=non_negative(field(obj, "version", int, what), "version", what),
            release_id=release_id[:16],
            ranges=tuple(ranges),
            subscribed=tuple(subscribed),
            fresh=optional(obj, "fresh", bool, what, False),
            repair=optional(obj, "repair", bool, what, False),
            codecs=_codecs(obj, what),
        )

    def indices(self) -> list[int]:
        return list(iter_ranges(self.ranges))


#: codec names a chunk request may list, and how long each may be
MAX_CODECS = 8
MAX_CODEC_CHARS = 16


def _codecs(obj: dict[str, Any], what: str) -> tuple[str, ...]:
    """The codecs a request lists (names this side does not know are kept: harmless)."""
    raw = optional(obj, "codecs", list, what, [])
    if len(raw) > MAX_CODECS or any(
        type(c) is not str or not 0 < len(c) <= MAX_CODEC_CHARS for c in raw
    ):
        raise MalformedMessage(f"{what}: bad codec list")
    return tuple(raw)


@dataclass(frozen=True)
class DeviceState:
    """Retained on ``devices/{id}/state``: the device's update state and download progress."""

    device: str
    state: UpdateState
    ts: float
    boot: str = ""
    model: str | None = None
    version: int | None = None
    chunks_held: int = 0
    chunks_total: int = 0
    bytes_held: int = 0
    size: int = 0
    received: int = 0
    duplicates: int = 0
    reason: str | None = None
    active: dict[str, int] = dc_field(default_factory=dict)
    rejections: int = 0
    #: bytes of this release the device copied from another release on its disk (chunk reuse):
    #: held, never asked for. Sent only when not zero.
    bytes_reused: int = 0

    @property
    def progress(self) -> float:
        return self.chunks_held / self.chunks_total if self.chunks_total else 0.0

    def encode(self) -> bytes:
        return pack(
            {
                "v": SCHEMA_VERSION,
                "device": self.device,
                "state": self.state.value,
                "ts": self.ts,
                "boot": self.boot,
                "model": self.model,
                "version": self.version,
                "chunks_held": self.chunks_held,
                "chunks_total": self.chunks_total,
                "bytes_held": self.bytes_held,
                "size": self.size,
                "received": self.received,
                "duplicates": self.duplicates,
                "reason": self.reason,
                "active": self.active,
                "rejections": self.rejections,
                **({"bytes_reused": self.bytes_reused} if self.bytes_reused else {}),
            }
        )

    @classmethod
    def decode(cls, data: bytes, limits: Limits = DEFAULT_LIMITS) -> DeviceState:
        what = "device state"
        obj = unpack_map(data, limits.max_message_bytes, what)
        check_schema_version(obj, what)
        try:
            state = UpdateState(field(obj, "state", str, what))
        except ValueError:
            raise MalformedMessage(f"{what}: unknown state {obj.get('state')!r}") from None
        model = obj.get("model")
        if model is not None:
            check_name(model, "model name")
        version = obj.get("version")
        if version is not None and type(version) is not int:
            raise MalformedMessage(f"{what}: version must be int")
        reason = obj.get("reason")
        if reason is not None and type(reason) is not str:
            raise MalformedMessage(f"{what}: reason must be str")
        ints = {
            k: non_negative(optional(obj, k, int, what, 0), k, what)
            for k in (
                "chunks_held",
                "chunks_total",
                "bytes_held",
                "size",
                "received",
                "duplicates",
                "rejections",
                "bytes_reused",
            )
        }
        return cls(
            device=check_name(field(obj, "device", str, what), "device id"),
            state=state,
            ts=field(obj, "ts", float, what),
            boot=optional(obj, "boot", str, what, ""),
            model=model,
            version=version,
            reason=reason,
            active=_active_map(obj, what),
            **ints,
        )


@dataclass(frozen=True)
class DeviceStatus:
    """Retained on ``devices/{id}/status``; the MQTT will publishes ``online: false``."""

    device: str
    online: bool
    ts: float | None = None
    boot: str = ""
    agent: str = ""
    active: dict[str, int] = dc_field(default_factory=dict)
    #: what the device is: os, arch, cores, ram_mb, onnxruntime, providers, tags, ...
    profile: dict[str, Any] = dc_field(default_factory=dict)

    def encode(self) -> bytes:
        obj: dict[str, Any] = {"v": SCHEMA_VERSION, "device": self.device, "online": self.online}
        if self.ts is not None:
            obj["ts"] = self.ts
        if self.boot:
            obj["boot"] = self.boot
        if self.agent:
            obj["agent"] = self.agent
        if self.active:
            obj["active"] = self.active
        if self.profile:
            obj["profile"] = self.profile
        return pack(obj)

    @classmethod
    def decode(cls, data: bytes, limits: Limits = DEFAULT_LIMITS) -> DeviceStatus:
        what = "device status"
        obj = unpack_map(data, limits.max_message_bytes, what)
        check_schema_version(obj, what)
        ts = obj.get("ts")
        if ts is not None and type(ts) not in (int, float):
            raise MalformedMessage(f"{what}: ts must be a number")
        return cls(
            device=check_name(field(obj, "device", str, what), "device id"),
            online=field(obj, "online", bool, what),
            ts=float(ts) if ts is not None else None,
            boot=optional(obj, "boot", str, what, ""),
            agent=optional(obj, "agent", str, what, ""),
            active=_active_map(obj, what),
            profile=optional(obj, "profile", dict, what, {}),
        )


@dataclass(frozen=True)
class DeviceEvent:
    """One entry on ``devices/{id}/telemetry/events``: a rejection, a state change, an
    activation."""

    device: str
    event: str
    ts: float
    boot: str = ""
    seq: int = 0
    reason: str | None = None
    detail: str | None = None
    topic: str | None = None
    model: str | None = None
    version: int | None = None
    hist: bool = False
    dropped: int = 0

    def encode(self) -> bytes:
        obj: dict[str, Any] = {
            "v": SCHEMA_VERSION,
            "device": self.device,
            "boot": self.boot,
            "seq": self.seq,
            "ts": self.ts,
            "hist": self.hist,
            "dropped": self.dropped,
            "event": self.event,
        }
        for key in ("reason", "detail", "topic", "model", "version"):
            value = getattr(self, key)
            if value is not None:
                obj[key] = value
        return pack(obj)

    @classmethod
    def decode(cls, data: bytes, limits: Limits = DEFAULT_LIMITS) -> DeviceEvent:
        what = "device event"
        obj = unpack_map(data, limits.max_message_bytes, what)
        check_schema_version(obj, what)
        opt_str = {k: obj.get(k) for k in ("reason", "detail", "topic", "model")}
        for k, v in opt_str.items():
            if v is not None and type(v) is not str:
                raise MalformedMessage(f"{what}: {k} must be str")
        version = obj.get("version")
        if version is not None and type(version) is not int:
            raise MalformedMessage(f"{what}: version must be int")
        return cls(
            device=check_name(field(obj, "device", str, what), "device id"),
            event=field(obj, "event", str, what),
            ts=field(obj, "ts", float, what),
            boot=optional(obj, "boot", str, what, ""),
            seq=non_negative(optional(obj, "seq", int, what, 0), "seq", what),
            version=version,
            hist=optional(obj, "hist", bool, what, False),
            dropped=non_negative(optional(obj, "dropped", int, what, 0), "dropped", what),
            **opt_str,
        )
