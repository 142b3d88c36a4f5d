"""``modelcast rollout status``: each rollout with every device's part in it, as data and text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from protocol import PPM_ALL
from runtime.display import printable

from .errors import RolloutError
from .registry import Registry
from .rollout_engine import device_views
from .rollout_plan import ABORTED, HALTED, DeviceView, Rollout
from .rollout_store import RolloutStore
from .telemetry_store import TelemetryStore


def rollout_reports(
    db_path: Path, fleet: str, name: str | None = None, version: int | None = None
) -> list[dict[str, Any]]:
    """Reports of the rollouts of ``fleet`` (only ``name@version``'s when given)."""
    db_path = Path(db_path)
    if not db_path.exists():
        raise FileNotFoundError(f"no coordinator database at {db_path}")
    registry, store, telemetry = Registry(db_path), RolloutStore(db_path), TelemetryStore(db_path)
    try:
        if name is not None and version is not None:
            stored = store.get(fleet, name, version)
            if stored is None:
                raise RolloutError(f"no rollout of {name}@{version} in fleet {fleet}")
            found = [stored]
        else:
            found = store.all(fleet)
        return [
            rollout_report(s.rollout, device_views(registry, telemetry, s.rollout)) for s in found
        ]
    finally:
        telemetry.close()
        store.close()
        registry.close()


def rollout_summary(r: Rollout) -> dict[str, Any]:
    """What ``modelcast status`` and ``modelcast rollout status`` both say of a rollout."""
    return {
        "rollout": r.id,
        "model": r.name,
        "version": r.version,
        "base": r.base,
        "state": r.state,
        "stage": r.stage_number,
        "stages": list(r.stages),
        "ppm": r.ppm,
        "reason": r.reason,
        "updated": r.updated,
    }


def device_rollout_state(r: Rollout, view: DeviceView) -> dict[str, Any]:
    stage = r.stage_of(view.device) if r.select.matches(view.device, view.tags) else None
    if not r.select.matches(view.device, view.tags):
        state = "not-selected"
    elif stage is None:
        state = "waiting"  # keeps the base until its stage comes
    elif view.active == r.version:
        state = "updated"
    elif view.failed:
        state = "failed"
    elif r.state in (HALTED, ABORTED):
        # stopped before it got the release, or went back to the base after activating it
        state = "rolled-back" if view.rolled_back else "not-updated"
    else:
        state = "pending"
    return {
        "stage": None if stage is None else stage + 1,
        "state": state,
        "active": view.active,
        "online": view.online,
    }


def rollout_report(r: Rollout, devices: tuple[DeviceView, ...]) -> dict[str, Any]:
    """JSON-ready status of one rollout (``modelcast rollout status``)."""
    per_device = {d.device: device_rollout_state(r, d) for d in devices}
    counts: dict[str, int] = {}
    for d in per_device.values():
        counts[d["state"]] = counts.get(d["state"], 0) + 1
    return {
        **rollout_summary(r),
        "fleet": r.fleet,
        "stage_ppms": list(r.stage_ppms),
        "soak_started": r.soak_started,
        "select": r.select.to_dict(),
        "soak": r.soak,
        "rate": r.rate,
        "gates": r.gates.to_dict(),
        "last_gates": r.gate_report,
        "created": r.created,
        "counts": dict(sorted(counts.items())),
        "devices": dict(sorted(per_device.items())),
    }


def format_rollout(report: dict[str, Any]) -> str:
    stages = ",".join(f"{s:g}%" for s in report["stages"])
    base = report["base"]
    lines = [
        f"rollout {report['rollout']} (base {report['model']}@{base}) in fleet "
        f"{report['fleet']}: {report['state'].upper()}, stage {report['stage']} of "
        f"{len(report['stages'])} ({stages}), {report['ppm'] / PPM_ALL:.1%} of selected devices",
    ]
    if report["reason"]:
        lines.append(f"reason: {report['reason']}")
    counts = ", ".join(f"{n} {state}" for state, n in report["counts"].items())
    lines.append(f"devices: {counts or 'none known'}")
    for device, d in report["devices"].items():
        stage = "-" if d["stage"] is None else str(d["stage"])
        active = "-" if d["active"] is None else f"{report['model']}@{d['active']}"
        online = "online" if d["online"] else "offline"
        lines.append(f"  {device:<20} stage {stage:<2} {d['state']:<13} {active:<16} {online}")
    return "\n".join(printable(line) for line in lines)
