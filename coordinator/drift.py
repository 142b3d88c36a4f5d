"""Drift scores from the devices' drift samples: per device and model version, per version
across the fleet, and the figures ``modelcast drift``, ``modelcast status`` and the rollout
gate ``--max-drift`` read.

A device's samples over the period add up into one window (``runtime.drift_score.Window``)
scored against the profile signed into that release's manifest, so a longer period gives a
larger window and a surer answer. The fleet figure of a version pools every device's windows
the same way (variants, each with their own profile, are scored apart; a version's score is its
highest). A sample whose shape does not match its release's profile, or whose release has none
or is unknown, is skipped and counted (``skipped``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import protocol
from protocol.envelope import Envelope
from runtime.drift_score import DriftScore, Window, noise_variance, score

from .registry import Registry
from .telemetry_queries import TelemetryReader
from .telemetry_store import TelemetryStore

#: what ``modelcast drift`` and ``modelcast status`` look at unless told otherwise
DEFAULT_SINCE_S = 3600.0

ReleaseKey = tuple[str, int, str]  # model, version, variant ("" for a single build)


@dataclass
class _Pool:
    window: Window
    samples: int
    first: float
    last: float

    def __add__(self, other: _Pool) -> _Pool:
        return _Pool(
            self.window + other.window,
            self.samples + other.samples,
            min(self.first, other.first),
            max(self.last, other.last),
        )

    def describe(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "count": int(self.window.count),
            "from": self.first,
            "to": self.last,
        }


def release_profiles(registry: Registry, fleet: str) -> dict[ReleaseKey, protocol.DriftProfile]:
    """The drift profile of every release of ``fleet`` that has one."""
    out: dict[ReleaseKey, protocol.DriftProfile] = {}
    for record in registry.releases(fleet):
        body = Envelope.decode(record.manifest, protocol.DEFAULT_LIMITS.max_envelope_bytes).body
        drift = protocol.Manifest.decode(body).drift
        if drift is not None:
            out[(record.name, record.version, record.variant)] = drift
    return out


def _fits(row: dict[str, Any], profile: protocol.DriftProfile | None) -> bool:
    return profile is not None and (int(row["n_directions"]), int(row["n_bins"])) == (
        profile.n_directions,
        profile.bins,
    )


def _pooled(rows: list[dict[str, Any]], profile: protocol.DriftProfile) -> _Pool:
    """The windows of ``rows`` (all of one release, fitting its profile) added up: bins and
    projections summed in one numpy pass (rows of an hour of a 1,000-device fleet: 60,000)."""
    k, b = profile.n_directions, profile.bins
    counts = np.array([int(r["count"]) for r in rows], dtype=np.float64)
    means = np.array([float(r["cos_mean"]) for r in rows])
    variances = np.array([float(r["cos_var"]) for r in rows])
    bins = np.frombuffer(b"".join(r["bins"] for r in rows), "<i4").reshape(len(rows), k, b)
    proj = None
    if all(r["proj_mean"] is not None for r in rows):
        raw = np.frombuffer(b"".join(r["proj_mean"] for r in rows), "<f8").reshape(len(rows), k)
        proj = (raw * counts[:, None]).sum(axis=0)
    noise = sum(noise_variance(k, float(r["epsilon"])) for r in rows if r["epsilon"] is not None)
    window = Window(
        int(counts.sum()),
        float((means * counts).sum()),
        float(((variances + means * means) * counts).sum()),
        bins.sum(axis=0, dtype=np.float64),
        proj,
        noise,
    )
    stamps = [float(r["ts"]) for r in rows]
    return _Pool(window, len(rows), min(stamps), max(stamps))


@dataclass(frozen=True)
class DriftFigures:
    devices: list[dict[str, Any]]
    fleet: dict[str, Any]


def score_samples(
    rows: list[dict[str, Any]], profiles: dict[ReleaseKey, protocol.DriftProfile]
) -> DriftFigures:
    """Scores per device and release, and per release over the fleet (see the docstring)."""
    groups: dict[tuple[ReleaseKey, str], list[dict[str, Any]]] = {}
    skipped = 0
    for row in rows:
        key: ReleaseKey = (row["model"], int(row["version"]), row.get("variant") or "")
        if not _fits(row, profiles.get(key)):
            skipped += 1
            continue
        groups.setdefault((key, row["device"]), []).append(row)
    per_device = {
        (device, key): _pooled(group, profiles[key]) for (key, device), group in groups.items()
    }
    per_release: dict[ReleaseKey, _Pool] = {}
    for (_device, key), pool in per_device.items():
        per_release[key] = pool if key not in per_release else per_release[key] + pool
    devices = [
        _device_entry(device, key, pool, score(profiles[key], pool.window))
        for (device, key), pool in sorted(per_device.items())
    ]
    versions = [
        _version_entry(key, pool, score(profiles[key], pool.window), devices)
        for key, pool in sorted(per_release.items())
    ]
    return DriftFigures(devices, {"versions": versions, "skipped": skipped})


def _device_entry(device: str, key: ReleaseKey, pool: _Pool, s: DriftScore) -> dict[str, Any]:
    model, version, variant = key
    return {
        "device_id": device,
        "model": model,
        "version": version,
        "variant": variant or None,
        "score": round(s.score, 4),
        "drifted": s.drifted,
        "window": pool.describe(),
        "figures": s.to_dict(),
    }


def _version_entry(
    key: ReleaseKey, pool: _Pool, s: DriftScore, devices: list[dict[str, Any]]
) -> dict[str, Any]:
    model, version, variant = key
    mine = [
        d
        for d in devices
        if (d["model"], d["version"], d["variant"] or "") == (model, version, variant)
    ]
    drifted = sum(1 for d in mine if d["drifted"])
    return {
        "model": model,
        "version": version,
        "variant": variant or None,
        "devices": len(mine),
        "drifted_devices": drifted,
        "share_drifted": drifted / len(mine) if mine else 0.0,
        "score": round(s.score, 4),
        "drifted": s.drifted,
        "window": pool.describe(),
        "figures": s.to_dict(),
    }


def version_scores(
    reader: TelemetryReader, registry: Registry, fleet: str, since: float
) -> dict[tuple[str, int], float]:
    """The pooled fleet score of every model version with drift samples since ``since``
    (the highest of its variants'): what the rollout gate compares."""
    figures = score_samples(reader.drift_samples(fleet, since), release_profiles(registry, fleet))
    out: dict[tuple[str, int], float] = {}
    for v in figures.fleet["versions"]:
        key = (v["model"], v["version"])
        out[key] = max(out.get(key, 0.0), float(v["score"]))
    return out


def drift_report(
    db_path: Path,
    fleet: str = "default",
    *,
    since: float | None = None,
    device: str | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """``modelcast drift --json``: ``{"devices": [...], "fleet": {...}}`` over the samples
    since ``since`` (device time; default: the last ``DEFAULT_SINCE_S``)."""
    db_path = Path(db_path)
    if not db_path.exists():
        raise FileNotFoundError(f"no coordinator database at {db_path}")
    now = time.time() if now is None else now
    since = now - DEFAULT_SINCE_S if since is None else since
    registry = Registry(db_path)
    try:
        profiles = release_profiles(registry, fleet)
    finally:
        registry.close()
    store = TelemetryStore(db_path)
    try:
        rows = store.drift_samples(fleet, since, device)
    finally:
        store.close()
    figures = score_samples(rows, profiles)
    fleet_part = {"fleet": fleet, "since": since, "device": device, **figures.fleet}
    return {"devices": figures.devices, "fleet": fleet_part}


def format_drift(report: dict[str, Any]) -> str:
    """``modelcast drift``: one row per device and release, then one per release."""
    from runtime.display import printable

    head = ("DEVICE", "RELEASE", "SCORE", "DRIFTED", "WINDOW", "PSI", "SHARE", "DISTANCE", "COS")
    rows = [head, *(_row(d, d["device_id"]) for d in report["devices"])]
    fleet = report["fleet"]
    lines = [f"drift in fleet {fleet['fleet']} since {_iso(fleet['since'])}:"]
    lines += _aligned(rows) if report["devices"] else ["(no drift samples in this period)"]
    if fleet["versions"]:
        lines += ["", "fleet, per release (every device's windows pooled):"]
        vrows: list[tuple[str, ...]] = [("DEVICES", *head[1:])]
        for v in fleet["versions"]:
            vrows.append(_row(v, f"{v['drifted_devices']}/{v['devices']} drifted"))
        lines += _aligned(vrows)
    if fleet["skipped"]:
        lines.append(f"({fleet['skipped']} samples of releases without a matching profile)")
    return printable("\n".join(lines))


def _row(entry: dict[str, Any], first: str) -> tuple[str, ...]:
    f = entry["figures"]
    release = f"{entry['model']}@{entry['version']}" + (
        f" ({entry['variant']})" if entry.get("variant") else ""
    )
    return (
        first,
        release,
        f"{entry['score']:.2f}",
        "DRIFTED" if entry["drifted"] else "no",
        f"{entry['window']['count']} in {entry['window']['samples']}",
        _num(f.get("psi")),
        _num(f.get("share")),
        _num(f.get("distance")),
        _num(f.get("cosine")),
    )


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _aligned(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))
