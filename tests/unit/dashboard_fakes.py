"""Data in the shapes the dashboard reads (``modelcast status --json``, ``modelcast rollout
status --json``), and a source that hands it over and counts its reads."""

from __future__ import annotations

import threading
from typing import Any

from modelcast.dashboard.source import DeviceDetail, FleetData


def device(device_id: str, **fields: Any) -> dict[str, Any]:
    """A device entry of ``modelcast status --json``."""
    entry: dict[str, Any] = {
        "device_id": device_id,
        "online": True,
        "last_seen": 1000.0,
        "active": {"m": 1},
        "state": "active",
        "model": None,
        "version": None,
        "progress": 1.0,
        "reason": None,
        "rejections": 0,
        "tags": {},
        "variants": {},
        "config": None,
        "rate_limited": {"requests": 0, "reports": 0},
        "rate_limited_at": None,
        "clock_skew": 0.1,
        "clock_checked": 1000.0,
        "metrics": None,
    }
    entry.update(fields)
    return entry


def rollout(state: str = "running", **fields: Any) -> dict[str, Any]:
    """A report of ``modelcast rollout status --json`` (m@2 over m@1, two stages)."""
    report: dict[str, Any] = {
        "rollout": "m@2",
        "model": "m",
        "version": 2,
        "base": 1,
        "state": state,
        "stage": 1,
        "stages": [50.0, 100.0],
        "ppm": 500_000,
        "reason": None,
        "updated": 1000.0,
        "fleet": "f",
        "stage_ppms": [500_000],
        "soak_started": None,
        "select": {},
        "soak": 60.0,
        "rate": None,
        "gates": {
            "max_failure_rate": 0.0,
            "max_error_rate": 0.01,
            "max_p95_ms": None,
            "max_p95_ratio": None,
        },
        "last_gates": None,
        "created": 900.0,
        "counts": {},
        "devices": {
            "a": {"stage": 1, "state": "updated", "active": 2, "online": True},
            "b": {"stage": None, "state": "waiting", "active": 1, "online": True},
        },
        "live_gates": None,
    }
    report.update(fields)
    return report


def fleet_data(
    devices: list[dict[str, Any]] | None = None,
    rollouts: list[dict[str, Any]] | None = None,
    **fields: Any,
) -> FleetData:
    values: dict[str, Any] = {
        "status": {
            "fleet": "f",
            "deployments": {"m": 1},
            "kinds": {"m": "tensors"},
            "devices": devices if devices is not None else [device("a"), device("b")],
            "health": [],
            "health_since": None,
            "rollouts": [],
        },
        "rollouts": rollouts or [],
        "releases": [],
        "figures": {},
        "rejections": {},
        "ingested": {"metrics": 0, "events": 0},
        "rejected_total": {},
        "window": 3600.0,
    }
    values.update(fields)
    return FleetData(**values)


class FakeSource:
    """Hands out ``data`` (or raises ``failure``), counting reads; ``gate`` (when set) holds
    each fleet read until released, to stand for a database that does not answer."""

    def __init__(self, data: FleetData | None = None) -> None:
        self.data = data or fleet_data()
        self.failure: Exception | None = None
        self.fleet_reads = 0
        self.device_reads: list[tuple[str, float]] = []
        self.gate: threading.Event | None = None
        self.closed = 0

    def read_fleet(self) -> FleetData:
        if self.gate is not None:
            self.gate.wait(30)
        self.fleet_reads += 1
        if self.failure is not None:
            raise self.failure
        return self.data

    def read_device(self, device: str, window: float) -> DeviceDetail:
        self.device_reads.append((device, window))
        if self.failure is not None:
            raise self.failure
        return DeviceDetail(device, window, events=[], series=[], rejections={}, about=None)

    def close(self) -> None:
        self.closed += 1
