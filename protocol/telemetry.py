"""Telemetry samples, a public contract: integrators decode these with their own MQTT clients.

Published on ``modelcast/{fleet}/devices/{id}/telemetry/metrics``, one sample per message. ``seq``
counts every telemetry message of one agent start (``boot``), metrics and events alike, +1 per
message with no gaps; ``(device, boot, seq)`` identifies a message, so a consumer can drop the
duplicates that at-least-once delivery allows. ``hist`` marks samples replayed from the device's
on-disk queue after an outage; ``dropped`` says how many samples the full queue discarded (oldest
first) since the previous message.
"""

from __future__ import annotations

import math
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
from .errors import MalformedMessage, OversizedMessage
from .limits import DEFAULT_LIMITS, Limits
from .names import check_name

#: counters (ints >= 0, 0 when absent) and figures (finite floats >= 0, 0.0 when absent)
_COUNTERS = ("reconnects", "bytes_received", "inferences", "errors", "dropped")
_FIGURES = ("interval_s", "uptime_s", "cpu_pct", "rss_mb", "disk_free_mb")


def _opt_float(obj: dict[str, Any], key: str, what: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if type(value) not in (int, float) or not math.isfinite(value):
        raise MalformedMessage(f"{what}: {key!r} must be a finite number")
    return float(value)


@dataclass(frozen=True)
class ModelStats:
    """Inference statistics of one model version over one sampling interval. ``errors`` are
    counted within ``inferences``; latencies cover successful calls only."""

    model: str
    version: int
    inferences: int = 0
    errors: int = 0
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "inferences": self.inferences,
            "errors": self.errors,
            "latency_p50_ms": self.latency_p50_ms,
            "latency_p95_ms": self.latency_p95_ms,
        }

    @classmethod
    def from_dict(cls, obj: object, what: str) -> ModelStats:
        if not isinstance(obj, dict):
            raise MalformedMessage(f"{what}: per-model stats must be a map")
        return cls(
            model=check_name(field(obj, "model", str, what), "model name"),
            version=non_negative(field(obj, "version", int, what), "version", what),
            inferences=non_negative(optional(obj, "inferences", int, what, 0), "inferences", what),
            errors=non_negative(optional(obj, "errors", int, what, 0), "errors", what),
            latency_p50_ms=_opt_float(obj, "latency_p50_ms", what),
            latency_p95_ms=_opt_float(obj, "latency_p95_ms", what),
        )


@dataclass(frozen=True)
class MetricsSample:
    device: str
    boot: str
    seq: int
    ts: float
    interval_s: float = 0.0
    uptime_s: float = 0.0
    cpu_pct: float = 0.0
    rss_mb: float = 0.0
    disk_free_mb: float = 0.0
    reconnects: int = 0
    bytes_received: int = 0
    inferences: int = 0
    errors: int = 0
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    active: dict[str, int] = dc_field(default_factory=dict)
    #: one entry per model version used in the interval (a model that changed version
    #: mid-interval has two)
    models: tuple[ModelStats, ...] = ()
    hist: bool = False
    dropped: int = 0

    def encode(self) -> bytes:
        return pack(
            {
                "v": SCHEMA_VERSION,
                "device": self.device,
                "boot": self.boot,
                "seq": self.seq,
                "ts": self.ts,
                "hist": self.hist,
                "dropped": self.dropped,
                "interval_s": self.interval_s,
                "uptime_s": self.uptime_s,
                "cpu_pct": self.cpu_pct,
                "rss_mb": self.rss_mb,
                "disk_free_mb": self.disk_free_mb,
                "reconnects": self.reconnects,
                "bytes_received": self.bytes_received,
                "inferences": self.inferences,
                "errors": self.errors,
                "latency_p50_ms": self.latency_p50_ms,
                "latency_p95_ms": self.latency_p95_ms,
                "active": self.active,
                "models": [s.to_dict() for s in self.models],
            }
        )

    @classmethod
    def decode(cls, data: bytes, limits: Limits = DEFAULT_LIMITS) -> MetricsSample:
        # The coordinator decodes every sample of the fleet: the field checks are inlined loops
        # over constant tables, not a function call per field (3x faster, see docs/BENCHMARKS.md).
        what = "metrics sample"
        obj = unpack_map(data, limits.max_message_bytes, what)
        check_schema_version(obj, what)
        raw_models = optional(obj, "models", list, what, [])
        raw_active = optional(obj, "active", dict, what, {})
        most = limits.max_models_reported
        if len(raw_models) > most or len(raw_active) > most:
            raise OversizedMessage(f"{what}: more than {most} models")
        active = _active_versions(raw_active, what)
        models = tuple(ModelStats.from_dict(stats, what) for stats in raw_models)
        boot = field(obj, "boot", str, what)
        if not 1 <= len(boot) <= 64:
            raise MalformedMessage(f"{what}: boot must be 1..64 characters")
        figures = _counters_and_figures(obj, what)
        return cls(
            device=check_name(field(obj, "device", str, what), "device id"),
            boot=boot,
            seq=non_negative(field(obj, "seq", int, what), "seq", what),
            ts=field(obj, "ts", float, what),
            hist=optional(obj, "hist", bool, what, False),
            latency_p50_ms=_opt_float(obj, "latency_p50_ms", what),
            latency_p95_ms=_opt_float(obj, "latency_p95_ms", what),
            active=active,
            models=models,
            **figures,
        )


def _active_versions(raw: dict[Any, Any], what: str) -> dict[str, int]:
    active: dict[str, int] = {}
    for name, version in raw.items():
        check_name(name, "model name")
        if type(version) is not int:
            raise MalformedMessage(f"{what}: active version of {name!r} must be int")
        active[name] = version
    return active


def _counters_and_figures(obj: dict[str, Any], what: str) -> dict[str, Any]:
    """The counters (0 when absent) and figures (0.0 when absent) of a sample, checked."""
    figures: dict[str, Any] = {}
    get = obj.get
    for key in _COUNTERS:
        value = get(key)
        if value is None:
            value = 0
        elif type(value) is not int or value < 0:
            raise MalformedMessage(f"{what}: field {key!r} must be an int >= 0, got {value!r}")
        figures[key] = value
    for key in _FIGURES:
        value = get(key)
        if value is None:
            value = 0.0
        elif type(value) is int:
            value = float(value)
        if type(value) is not float or not 0.0 <= value < math.inf:
            raise MalformedMessage(f"{what}: field {key!r} must be a finite number >= 0")
        figures[key] = value
    return figures
