"""``modelcast status``: the fleet as the registry knows it, as data and as a table."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .registry import Registry

_DONE_STATES = frozenset({"verifying", "verified", "activating", "active"})


def fleet_status(db_path: Path, fleet: str = "default") -> dict[str, Any]:
    """Deployments and devices of ``fleet``, JSON-ready, devices sorted by id."""
    db_path = Path(db_path)
    if not db_path.exists():
        raise FileNotFoundError(f"no coordinator database at {db_path}")
    registry = Registry(db_path)
    try:
        deployments = registry.deployments(fleet)
        rows = registry.devices(fleet)
    finally:
        registry.close()
    return {
        "fleet": fleet,
        "deployments": dict(sorted(deployments.items())),
        "devices": [_device(row) for row in rows],
    }


def _device(row: dict[str, Any]) -> dict[str, Any]:
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
    }


def format_age(seconds: float) -> str:
    """``3s ago``, ``5m ago``, ``2h ago``, ``4d ago``."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"


def _releases(versions: dict[str, int]) -> str:
    return ", ".join(f"{name}@{version}" for name, version in sorted(versions.items()))


def format_status(status: dict[str, Any], *, now: float | None = None) -> str:
    """A header naming the fleet and its deployed releases, then one aligned row per device."""
    now = time.time() if now is None else now
    deployed = _releases(status["deployments"]) or "nothing deployed"
    devices = status["devices"]
    header = f"fleet {status['fleet']}: {deployed}; {len(devices)} device(s)"
    columns = ("DEVICE", "ONLINE", "STATE", "PROGRESS", "ACTIVE", "LAST-SEEN", "REASON")
    rows = [columns]
    for d in devices:
        online = {True: "yes", False: "no"}.get(d["online"], "?")
        state = d["state"] or "-"
        if d["model"] is not None and d["state"] not in (None, "idle", "active"):
            state = f"{state} {d['model']}@{d['version']}"
        progress = f"{d['progress'] * 100:.0f}%" if d["state"] not in (None, "idle") else "-"
        last_seen = format_age(now - d["last_seen"]) if d["last_seen"] is not None else "never"
        rows.append(
            (
                d["device_id"],
                online,
                state,
                progress,
                _releases(d["active"]) or "-",
                last_seen,
                d["reason"] or "",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    lines = [header]
    for row in rows:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if not devices:
        lines.append("(no device has reported yet)")
    return "\n".join(lines)
