"""Drift on the wire: the reference profile signed into a manifest, and the ``drift`` telemetry
sample a device publishes about what its model saw. Neither carries a text or an embedding.

The profile (``DriftProfile``, the manifest's optional ``drift`` field) describes the reference
set a release was built for, in the space of the model's output vectors:

* ``centroid``: the mean reference vector (``dims`` float32, little-endian);
* ``directions``: the top principal directions of the reference around its centroid
  (``n_directions`` x ``dims`` float32, orthonormal rows);
* ``edges``: per direction, the ``bins - 1`` inner quantile edges of the reference's
  projections, so each bin holds 1/``bins`` of the reference;
* the reference's own statistics (count, cosine to the centroid) and the thresholds calibrated
  by bootstrap on held-out reference data, one row per window size (``DriftThreshold``).

The sample (``DriftSample``, on ``.../devices/{id}/telemetry/drift``) is a window of inferences
on one device: its count, the mean and variance of each vector's cosine to the centroid, the
mean projection on each direction, and how many vectors fell in each bin of each direction.
Arithmetic on these (PSI, score) lives in ``runtime.drift_score``; this module only encodes,
decodes and bounds (``Limits.max_drift_*``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .codec import SCHEMA_VERSION, check_schema_version, field, non_negative, optional, unpack_map
from .codec import pack as _pack
from .errors import MalformedMessage, OversizedMessage
from .limits import DEFAULT_LIMITS, Limits
from .names import check_name

FLOAT32 = 4
#: the telemetry kind of a drift sample (topic ``.../telemetry/drift``)
DRIFT_KIND = "drift"


def _finite(value: object, key: str, what: str) -> float:
    if type(value) not in (int, float) or not math.isfinite(value):  # type: ignore[arg-type]
        raise MalformedMessage(f"{what}: {key!r} must be a finite number")
    return float(value)  # type: ignore[arg-type]


def _opt_finite(obj: dict[str, Any], key: str, what: str) -> float | None:
    value = obj.get(key)
    return None if value is None else _finite(value, key, what)


@dataclass(frozen=True)
class DriftThreshold:
    """Calibrated thresholds for windows of at least ``count`` vectors: a window drifts when any
    figure reaches its threshold (the score is the largest figure / threshold ratio)."""

    count: int
    psi: float  # mean PSI over the directions
    direction_psi: float  # one direction's PSI above which it counts as drifted
    share: float  # the share of drifted directions
    distance: float  # norm of the window's mean projection (distance to the centroid)
    cosine: float  # drop of the mean cosine to the centroid below the reference's

    def to_list(self) -> list[object]:
        return [self.count, self.psi, self.direction_psi, self.share, self.distance, self.cosine]

    @classmethod
    def from_list(cls, raw: object, what: str) -> DriftThreshold:
        if not isinstance(raw, list) or len(raw) != 6:
            raise MalformedMessage(f"{what}: a threshold row is a list of 6 numbers")
        count = raw[0]
        if type(count) is not int or count < 1:
            raise MalformedMessage(f"{what}: a threshold row's count must be an int >= 1")
        values = [_finite(v, "threshold", what) for v in raw[1:]]
        if any(v <= 0 for v in values):
            raise MalformedMessage(f"{what}: thresholds must be positive")
        return cls(count, *values)


@dataclass(frozen=True)
class DriftProfile:
    dims: int
    n_directions: int
    bins: int
    centroid: bytes
    directions: bytes
    edges: bytes
    ref_count: int
    ref_cos_mean: float
    ref_cos_std: float
    #: share of the reference's variance around its centroid the directions explain
    explained: float
    #: a device publishes a window once it holds at least this many vectors
    min_count: int
    thresholds: tuple[DriftThreshold, ...]
    #: how the thresholds were calibrated: held-out vectors, bootstrap windows per size, and
    #: the false-alarm rate aimed at on held-out data
    held_out: int = 0
    bootstrap_windows: int = 0
    false_alarm: float = 0.01

    def to_dict(self) -> dict[str, Any]:
        return {
            "dims": self.dims,
            "n_directions": self.n_directions,
            "bins": self.bins,
            "centroid": self.centroid,
            "directions": self.directions,
            "edges": self.edges,
            "ref_count": self.ref_count,
            "ref_cos_mean": self.ref_cos_mean,
            "ref_cos_std": self.ref_cos_std,
            "explained": self.explained,
            "min_count": self.min_count,
            "thresholds": [t.to_list() for t in self.thresholds],
            "held_out": self.held_out,
            "bootstrap_windows": self.bootstrap_windows,
            "false_alarm": self.false_alarm,
        }

    @property
    def encoded_size(self) -> int:
        return len(_pack(self.to_dict()))

    @classmethod
    def from_dict(cls, raw: object, limits: Limits = DEFAULT_LIMITS) -> DriftProfile:
        what = "drift profile"
        if not isinstance(raw, dict):
            raise MalformedMessage(f"{what}: must be a map")
        rows = field(raw, "thresholds", list, what)
        if not 1 <= len(rows) <= limits.max_drift_thresholds:
            raise MalformedMessage(f"{what}: 1..{limits.max_drift_thresholds} threshold rows")
        profile = cls(
            dims=field(raw, "dims", int, what),
            n_directions=field(raw, "n_directions", int, what),
            bins=field(raw, "bins", int, what),
            centroid=field(raw, "centroid", bytes, what),
            directions=field(raw, "directions", bytes, what),
            edges=field(raw, "edges", bytes, what),
            ref_count=non_negative(field(raw, "ref_count", int, what), "ref_count", what),
            ref_cos_mean=field(raw, "ref_cos_mean", float, what),
            ref_cos_std=field(raw, "ref_cos_std", float, what),
            explained=field(raw, "explained", float, what),
            min_count=field(raw, "min_count", int, what),
            thresholds=tuple(DriftThreshold.from_list(r, what) for r in rows),
            held_out=non_negative(optional(raw, "held_out", int, what, 0), "held_out", what),
            bootstrap_windows=non_negative(
                optional(raw, "bootstrap_windows", int, what, 0), "bootstrap_windows", what
            ),
            false_alarm=optional(raw, "false_alarm", float, what, 0.01),
        )
        profile.check(limits)
        return profile

    def check(self, limits: Limits = DEFAULT_LIMITS) -> None:
        what = "drift profile"
        if not 1 <= self.dims <= limits.max_embedding_dimensions:
            raise MalformedMessage(f"{what}: dims {self.dims} outside 1..")
        if not 1 <= self.n_directions <= min(self.dims, limits.max_drift_directions):
            raise MalformedMessage(
                f"{what}: {self.n_directions} directions outside 1..{limits.max_drift_directions}"
            )
        if not 2 <= self.bins <= limits.max_drift_bins:
            raise MalformedMessage(f"{what}: {self.bins} bins outside 2..{limits.max_drift_bins}")
        sizes = {
            "centroid": (self.centroid, self.dims),
            "directions": (self.directions, self.n_directions * self.dims),
            "edges": (self.edges, self.n_directions * (self.bins - 1)),
        }
        for name, (data, floats) in sizes.items():
            if len(data) != floats * FLOAT32:
                raise MalformedMessage(f"{what}: {name} must be {floats} float32 values")
        total = sum(len(data) for data, _ in sizes.values())
        if total > limits.max_drift_profile_bytes:
            raise OversizedMessage(
                f"{what}: {total} bytes of vectors exceeds {limits.max_drift_profile_bytes}"
            )
        if self.min_count < 1:
            raise MalformedMessage(f"{what}: min_count must be >= 1")
        counts = [t.count for t in self.thresholds]
        if counts != sorted(set(counts)):
            raise MalformedMessage(f"{what}: threshold rows must have increasing counts")
        if not 0 < self.false_alarm < 1:
            raise MalformedMessage(f"{what}: false_alarm must be in (0, 1)")

    def threshold_for(self, count: int) -> DriftThreshold:
        """The row of the largest calibrated window size <= ``count`` (the smallest row below
        every size): thresholds shrink as windows grow, so this errs towards no alarm."""
        chosen = self.thresholds[0]
        for row in self.thresholds:
            if row.count <= count:
                chosen = row
        return chosen


@dataclass(frozen=True)
class DriftSample:
    """One window of one model version's outputs on one device (see the module docstring).

    ``bins`` is ``n_directions`` x ``bins`` counts, row by row. ``epsilon`` is set when the
    device added Laplace noise for differential privacy (docs/DRIFT.md): then ``count`` and
    ``bins`` are noisy, and ``proj_mean`` is left out."""

    device: str
    boot: str
    seq: int
    ts: float
    model: str
    version: int
    count: int
    cos_mean: float
    cos_var: float
    n_directions: int
    n_bins: int
    bins: tuple[int, ...]
    proj_mean: tuple[float, ...] | None = None
    epsilon: float | None = None
    variant: str | None = None
    hist: bool = False
    dropped: int = 0

    def encode(self) -> bytes:
        return _pack(
            {
                "v": SCHEMA_VERSION,
                "device": self.device,
                "boot": self.boot,
                "seq": self.seq,
                "ts": self.ts,
                "hist": self.hist,
                "dropped": self.dropped,
                "model": self.model,
                "version": self.version,
                "variant": self.variant,
                "count": self.count,
                "cos_mean": self.cos_mean,
                "cos_var": self.cos_var,
                "n_directions": self.n_directions,
                "n_bins": self.n_bins,
                "bins": list(self.bins),
                "proj_mean": None if self.proj_mean is None else list(self.proj_mean),
                "epsilon": self.epsilon,
            }
        )

    @classmethod
    def decode(cls, data: bytes, limits: Limits = DEFAULT_LIMITS) -> DriftSample:
        what = "drift sample"
        obj = unpack_map(data, limits.max_drift_sample_bytes, what)
        check_schema_version(obj, what)
        k = field(obj, "n_directions", int, what)
        b = field(obj, "n_bins", int, what)
        if not 1 <= k <= limits.max_drift_directions or not 2 <= b <= limits.max_drift_bins:
            raise MalformedMessage(f"{what}: {k} directions of {b} bins is outside the caps")
        bins = field(obj, "bins", list, what)
        if len(bins) != k * b or any(type(n) is not int or not 0 <= n < 2**31 for n in bins):
            raise MalformedMessage(f"{what}: bins must be {k} x {b} counts in 0..2^31-1")
        raw_proj = obj.get("proj_mean")
        if raw_proj is not None and not isinstance(raw_proj, list):
            raise MalformedMessage(f"{what}: proj_mean must be a list")
        if raw_proj is not None and len(raw_proj) != k:
            raise MalformedMessage(f"{what}: proj_mean must hold {k} numbers")
        boot = field(obj, "boot", str, what)
        if not 1 <= len(boot) <= 64:
            raise MalformedMessage(f"{what}: boot must be 1..64 characters")
        epsilon = _opt_finite(obj, "epsilon", what)
        if epsilon is not None and epsilon <= 0:
            raise MalformedMessage(f"{what}: epsilon must be positive")
        cos_var = _finite(obj.get("cos_var"), "cos_var", what)
        if cos_var < 0:
            raise MalformedMessage(f"{what}: cos_var must be >= 0")
        raw_variant = obj.get("variant")
        return cls(
            device=check_name(field(obj, "device", str, what), "device id"),
            boot=boot,
            seq=non_negative(field(obj, "seq", int, what), "seq", what),
            ts=field(obj, "ts", float, what),
            hist=optional(obj, "hist", bool, what, False),
            dropped=non_negative(optional(obj, "dropped", int, what, 0), "dropped", what),
            model=check_name(field(obj, "model", str, what), "model name"),
            version=non_negative(field(obj, "version", int, what), "version", what),
            variant=None if raw_variant is None else check_name(raw_variant, "variant"),
            count=non_negative(field(obj, "count", int, what), "count", what),
            cos_mean=_finite(obj.get("cos_mean"), "cos_mean", what),
            cos_var=cos_var,
            n_directions=k,
            n_bins=b,
            bins=tuple(bins),
            proj_mean=(
                None if raw_proj is None else tuple(_finite(v, "proj_mean", what) for v in raw_proj)
            ),
            epsilon=epsilon,
        )
