"""`modelcast status`: the registry's view of a fleet, as data and as a table."""

from __future__ import annotations

from pathlib import Path

import pytest

import protocol
from coordinator.registry import Registry
from coordinator.status import fleet_status, format_status


def test_fleet_status_and_its_table(tmp_path: Path) -> None:
    db = tmp_path / "registry.db"
    registry = Registry(db)
    registry.record_state(
        "default",
        protocol.DeviceState(
            device="edge-2",
            state=protocol.UpdateState.DOWNLOADING,
            ts=1.0,
            model="m",
            version=2,
            chunks_held=30,
            chunks_total=40,
            active={"m": 1},
        ),
        seen=1000.0,
    )
    registry.record_status(
        "default", protocol.DeviceStatus(device="edge-2", online=True), seen=1000.0
    )
    registry.record_state(
        "default",
        protocol.DeviceState(
            device="edge-1",
            state=protocol.UpdateState.FAILED,
            ts=1.0,
            model="m",
            version=2,
            reason="hash-mismatch",
            rejections=3,
        ),
        seen=400.0,
    )
    registry.close()

    status = fleet_status(db)
    assert status["fleet"] == "default"
    assert [d["device_id"] for d in status["devices"]] == ["edge-1", "edge-2"]
    edge2 = status["devices"][1]
    assert edge2["progress"] == pytest.approx(0.75)
    assert edge2["online"] is True
    assert edge2["active"] == {"m": 1}
    assert status["devices"][0]["rejections"] == 3

    lines = format_status(status, now=1003.0).splitlines()
    assert lines[0].startswith("fleet default: nothing deployed")
    assert lines[1].split() == [
        "DEVICE",
        "ONLINE",
        "STATE",
        "PROGRESS",
        "ACTIVE",
        "LAST-SEEN",
        "REASON",
    ]
    assert "10m ago" in lines[2] and "hash-mismatch" in lines[2]
    assert "75%" in lines[3] and "3s ago" in lines[3] and "m@1" in lines[3]
    assert lines[3].index("75%") == lines[1].index("PROGRESS")  # aligned columns


def test_fleet_status_needs_a_database(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        fleet_status(tmp_path / "missing.db")
