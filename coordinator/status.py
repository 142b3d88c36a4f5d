"""``modelcast status``: the fleet as the registry and the telemetry store know it, as data and
as tables."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from protocol import ProtocolError
from protocol.textmodel import KIND_TENSORS
from runtime.display import printable

from .clock_skew import describe_skew
from .drift import drift_report
from .registry import Registry
from .rollout_plan import Rollout
from .rollout_status import rollout_summary
from .rollout_store import RolloutStore
from .status_filter import DeviceFilter, describe_filters, format_summary, summarize
from .telemetry_store import TelemetryStore

_DONE_STATES = frozenset({"verifying", "verified", "activating", "active"})


def fleet_status(
    db_path: Path,
    fleet: str = "default",
    *,
    since: float | None = None,
    devices: DeviceFilter | None = None,
) -> dict[str, Any]:
    """Deployments, the summary of every device (``status_filter.summarize``), the devices
    ``devices`` keeps (sorted by id, each with its latest metrics sample or None; all of them by
    default) and the health of every model version (``telemetry_queries`` health over telemetry
    since ``since``, device time; None: all retained telemetry) of ``fleet``, JSON-ready."""
    db_path = Path(db_path)
    if not db_path.exists():
        raise FileNotFoundError(f"no coordinator database at {db_path}")
    wanted = devices or DeviceFilter()
    deployments, rows, kinds = _registry_view(db_path, fleet)
    shown, matched = wanted.apply(rows)
    store = TelemetryStore(db_path)
    try:
        latest = store.latest_metrics(fleet) if shown else {}
        updates = store.last_updates(fleet) if shown else {}
        health = store.health(fleet, since)
    finally:
        store.close()
    drift = _drift_by_device(db_path, fleet, since) if shown else {}
    listed = []
    for row in shown:
        device = _device(row)
        device["metrics"] = latest.get(row["device_id"])
        # what the device's latest update cost on the wire (telemetry_queries.last_updates)
        device["last_update"] = updates.get(row["device_id"])
        scores = drift.get(row["device_id"], [])
        # the drift of each model version the device sent drift samples for (modelcast drift)
        device["drift"] = scores
        device["drifted"] = any(s["drifted"] for s in scores) if scores else None
        listed.append(device)
    return {
        "fleet": fleet,
        "deployments": dict(sorted(deployments.items())),
        # what each deployed release is (tensors, text-embedding), as its signed manifest says
        "kinds": dict(sorted(kinds.items())),
        # the whole fleet, whatever the filters; how many devices they kept, and which
        "summary": {**summarize(rows), "matched": matched, "shown": len(listed)},
        "filters": wanted.to_dict(),
        "devices": listed,
        "health": health,
        "health_since": since,
        "rollouts": _rollouts(db_path, fleet),
    }


def _registry_view(
    db_path: Path, fleet: str
) -> tuple[dict[str, int], list[dict[str, Any]], dict[str, str | None]]:
    """Deployments, every device row, and the kind of each deployed release."""
    registry = Registry(db_path)
    try:
        deployments = registry.deployments(fleet)
        rows = registry.devices(fleet)
        kinds = {name: _kind(registry, fleet, name, v) for name, v in deployments.items()}
    finally:
        registry.close()
    return deployments, rows, kinds


def _rollouts(db_path: Path, fleet: str) -> list[dict[str, Any]]:
    rollouts = RolloutStore(db_path)
    try:
        return [_rollout(s.rollout) for s in rollouts.all(fleet)]
    finally:
        rollouts.close()


def _drift_by_device(
    db_path: Path, fleet: str, since: float | None
) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for d in drift_report(db_path, fleet, since=since)["devices"]:
        entry = {k: d[k] for k in ("model", "version", "variant", "score", "drifted")}
        out.setdefault(d["device_id"], []).append(entry)
    return out


def _rollout(r: Rollout) -> dict[str, Any]:
    return {**rollout_summary(r), "select": r.select.describe()}


def _device(row: Mapping[str, Any]) -> dict[str, Any]:
    held, total = row.get("chunks_held") or 0, row.get("chunks_total") or 0
    state = row.get("state")
    if total:
        progress = min(1.0, held / total)
    else:
        progress = 1.0 if state in _DONE_STATES else 0.0
    return {
        "device_id": row["device_id"],
        "online": row.get("online"),
        "last_seen": row.get("last_seen"),
        "active": row.get("active") or {},
        "state": state,
        "model": row.get("model"),
        "version": row.get("version"),
        "progress": progress,
        "reason": row.get("reason"),
        "rejections": row.get("rejections") or 0,
        "tags": (row.get("profile") or {}).get("tags") or {},
        "variants": (row.get("profile") or {}).get("variants") or {},
        # the device's effective policy and the fleet configuration it applied (its report)
        "config": (row.get("profile") or {}).get("config"),
        # messages the coordinator's per-device rate limits dropped (in total), and when last
        "rate_limited": {
            "requests": row.get("limited_requests") or 0,
            "reports": row.get("limited_reports") or 0,
        },
        "rate_limited_at": row.get("limited_at"),
        # the device's clock minus the coordinator's (seconds; None: no message with a time
        # yet), and when it was last observed
        "clock_skew": row.get("clock_skew"),
        "clock_checked": row.get("clock_checked"),
    }


def _policy(config: dict[str, Any] | None) -> str:
    """``tele=5s window=02:00-04:00 pin=m@3``, or ``-``."""
    if not config:
        return "-"
    parts = []
    if config.get("telemetry_interval") is not None:
        parts.append(f"tele={config['telemetry_interval']:g}s")
    if config.get("maintenance_window"):
        parts.append(f"window={config['maintenance_window']}")
    pins = config.get("pins") or {}
    if pins:
        parts.append("pin=" + ",".join(f"{n}@{v}" for n, v in sorted(pins.items())))
    return " ".join(parts) or "-"


def format_age(seconds: float) -> str:
    """``3s ago``, ``5m ago``, ``2h ago``, ``4d ago``."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"


def _kind(registry: Registry, fleet: str, name: str, version: int) -> str | None:
    record = registry.release(fleet, name, version)
    if record is None:
        return None
    try:
        return record.model_kind
    except ProtocolError:  # a damaged stored manifest: the coordinator logs it
        return None


def _releases(versions: dict[str, int], kinds: dict[str, str | None] | None = None) -> str:
    """``m@3, minilm@2 (text-embedding)``: plain tensor models are not labelled."""
    kinds = kinds or {}
    return ", ".join(
        f"{name}@{version}"
        + (f" ({kinds[name]})" if kinds.get(name) not in (None, KIND_TENSORS) else "")
        for name, version in sorted(versions.items())
    )


def _active(device: dict[str, Any]) -> str:
    """``m@5 (int8), n@2``: the active releases, with the variant where there is one."""
    variants = device.get("variants") or {}
    return ", ".join(
        f"{n}@{v}" + (f" ({variants[n]})" if n in variants else "")
        for n, v in sorted(device["active"].items())
    )


def _megabytes(mb: float | None) -> str:
    if mb is None:
        return "-"
    return f"{mb / 1024:.1f}G" if mb >= 1024 else f"{mb:.0f}M"


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    """Aligned rows; every cell shown with its control characters escaped (devices choose their
    reasons, tags and agent strings)."""
    rows = [tuple(printable(cell) for cell in row) for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _number(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def format_health(status: dict[str, Any]) -> list[str]:
    """The health table: one row per model version."""
    since = status.get("health_since")
    window = "all retained telemetry" if since is None else f"since {_iso(since)}"
    health = status.get("health") or []
    if not health:
        return [f"health ({window}): no inference statistics or activation failures reported"]
    rows: list[tuple[str, ...]] = [
        (
            "MODEL",
            "VERSION",
            "DEVICES",
            "INFERENCES",
            "ERRORS",
            "ERROR-RATE",
            "P95-MS",
            "ACT-FAILED",
        )
    ]
    for h in health:
        rate = h["error_rate"]
        rows.append(
            (
                h["model"],
                str(h["version"]),
                str(h["devices"]),
                str(h["inferences"]),
                str(h["errors"]),
                "-" if rate is None else f"{rate * 100:.2f}%",
                _number(h["latency_p95_ms"], ".1f"),
                str(h["activation_failures"]),
            )
        )
    return [f"health ({window}):", *_table(rows)]


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def format_status(status: dict[str, Any], *, now: float | None = None) -> str:
    """A header naming the fleet, its deployed releases and the summary of its devices (and
    the filters, if any), one aligned row per device listed, then the health of each model
    version."""
    now = time.time() if now is None else now
    deployed = _releases(status["deployments"], status.get("kinds")) or "nothing deployed"
    devices = status["devices"]
    summary = status.get("summary") or {**summarize(devices), "matched": len(devices)}
    header = [printable(f"fleet {status['fleet']}: {deployed}; {format_summary(summary)}")]
    filters = status.get("filters") or {}
    if filters:
        shown = f"showing {len(devices)} of {summary['matched']} device(s) matching "
        header.append(printable(shown + describe_filters(filters)))
    columns = (
        "DEVICE",
        "ONLINE",
        "STATE",
        "PROGRESS",
        "ACTIVE",
        "LAST-SEEN",
        "CLOCK",
        "CPU",
        "RSS",
        "DISK-FREE",
        "POLICY",
        "RATE-LIMITED",
        "DRIFT",
        "REASON",
    )
    rows: list[tuple[str, ...]] = [columns, *(_device_cells(d, now) for d in devices)]
    lines = [*header, *_table(rows)]
    if not devices:
        lines.append("(no device matches)" if filters else "(no device has reported yet)")
    lines.extend(format_updates(devices))
    lines.append("")
    lines.extend(format_health(status))
    lines.extend(format_rollouts(status))
    return "\n".join(lines)


def format_updates(devices: list[dict[str, Any]]) -> list[str]:
    """What each device's last update cost (its ``verified`` event), when it said so."""
    rows = [
        (d["device_id"], f"{u['model']}@{u['version']}", u["cost"])
        for d in devices
        if (u := d.get("last_update")) is not None
    ]
    return ["", *_table([("DEVICE", "LAST-UPDATE", "COST"), *rows])] if rows else []


def _device_cells(d: dict[str, Any], now: float) -> tuple[str, ...]:
    """One device's row of the status table."""
    online = {True: "yes", False: "no"}.get(d["online"], "?")
    state = d["state"] or "-"
    if d["model"] is not None and d["state"] not in (None, "idle", "active"):
        state = f"{state} {d['model']}@{d['version']}"
    progress = f"{d['progress'] * 100:.0f}%" if d["state"] not in (None, "idle") else "-"
    last_seen = format_age(now - d["last_seen"]) if d["last_seen"] is not None else "never"
    metrics = d.get("metrics") or {}
    cpu = metrics.get("cpu_pct")
    return (
        d["device_id"],
        online,
        state,
        progress,
        _active(d) or "-",
        last_seen,
        describe_skew(d.get("clock_skew"), d.get("clock_checked")),
        "-" if cpu is None else f"{cpu:.0f}%",
        _megabytes(metrics.get("rss_mb")),
        _megabytes(metrics.get("disk_free_mb")),
        _policy(d.get("config")),
        _rate_limited(d, now),
        _drift(d),
        d["reason"] or "",
    )


def _drift(d: dict[str, Any]) -> str:
    """``DRIFTED m@2``, ``no``, or ``-`` (no drift samples in the window)."""
    scores = d.get("drift") or []
    drifted = [f"{s['model']}@{s['version']}" for s in scores if s["drifted"]]
    if drifted:
        return "DRIFTED " + ",".join(drifted)
    return "no" if scores else "-"


def _rate_limited(d: dict[str, Any], now: float) -> str:
    """``120 reports, 3 requests, 5s ago`` (dropped by the coordinator's limits), or ``-``."""
    counts = d.get("rate_limited") or {}
    parts = [f"{counts[kind]} {kind}" for kind in ("reports", "requests") if counts.get(kind)]
    if not parts:
        return "-"
    last = d.get("rate_limited_at")
    return ", ".join([*parts, format_age(now - last)] if last is not None else parts)


def format_rollouts(status: dict[str, Any]) -> list[str]:
    rollouts = status.get("rollouts") or []
    if not rollouts:
        return []
    rows: list[tuple[str, ...]] = [("ROLLOUT", "BASE", "TO", "STATE", "STAGE", "SHARE", "REASON")]
    for r in rollouts:
        rows.append(
            (
                r["rollout"],
                "-" if r["base"] is None else str(r["base"]),
                r["select"],
                r["state"],
                f"{r['stage']}/{len(r['stages'])}",
                f"{r['ppm'] / 10_000:.1f}%",
                r["reason"] or "",
            )
        )
    return ["", "rollouts:", *_table(rows)]
