"""`modelcast status`: the registry's view of a fleet, as data and as a table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import protocol
from coordinator.device_rows import Sightings
from coordinator.registry import Registry
from coordinator.status import fleet_status, format_status
from coordinator.telemetry_store import TelemetryStore


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
        "CLOCK",
        "CPU",
        "RSS",
        "DISK-FREE",
        "POLICY",
        "RATE-LIMITED",
        "DRIFT",
        "REASON",
    ]
    assert "10m ago" in lines[2] and "hash-mismatch" in lines[2]
    assert "75%" in lines[3] and "3s ago" in lines[3] and "m@1" in lines[3]
    assert lines[3].index("75%") == lines[1].index("PROGRESS")  # aligned columns
    assert status["health"] == [] and status["devices"][0]["metrics"] is None
    assert lines[-1].startswith("health (all retained telemetry): no inference statistics")
    assert edge2["rate_limited"] == {"requests": 0, "reports": 0}
    assert edge2["rate_limited_at"] is None
    assert edge2["clock_skew"] is None and edge2["clock_checked"] is None  # unknown
    assert lines[3][lines[1].index("CLOCK") :].startswith("? ")


def test_status_shows_the_messages_each_device_had_dropped_by_the_rate_limits(
    tmp_path: Path,
) -> None:
    db = tmp_path / "registry.db"
    registry = Registry(db)
    registry.record_status("default", protocol.DeviceStatus(device="calm", online=True))
    registry.record_sightings("default", Sightings(limited={"flooder": (3, 40_000)}))
    registry.close()
    status = fleet_status(db)
    calm, flooder = status["devices"]
    assert calm["rate_limited"] == {"requests": 0, "reports": 0}
    assert flooder["rate_limited"] == {"requests": 3, "reports": 40_000}
    at = flooder["rate_limited_at"]
    json.dumps(status)  # --json prints it
    lines = format_status(status, now=at + 5).splitlines()
    column = lines[1].index("RATE-LIMITED")
    assert lines[2][column:].startswith("-")
    assert lines[3][column:].startswith("40000 reports, 3 requests, 5s ago")


def test_status_shows_latest_metrics_and_health(tmp_path: Path) -> None:
    db = tmp_path / "registry.db"
    Registry(db).record_status(
        "default", protocol.DeviceStatus(device="edge-1", online=True), seen=1000.0
    )
    store = TelemetryStore(db)
    for seq, (cpu, ts) in enumerate([(50.0, 900.0), (12.5, 990.0)], start=1):
        sample = protocol.MetricsSample(
            device="edge-1",
            boot="b",
            seq=seq,
            ts=ts,
            cpu_pct=cpu,
            rss_mb=80.0,
            disk_free_mb=2048.0,
            uptime_s=ts - 800,
            active={"m": 2},
            models=(protocol.ModelStats("m", 2, inferences=200, errors=3, latency_p95_ms=9.0),),
        )
        store.add_metrics("default", sample, received_at=ts)
    store.flush()
    store.close()

    status = fleet_status(db)
    assert status["devices"][0]["metrics"] == {
        "ts": 990.0,
        "cpu_pct": 12.5,
        "rss_mb": 80.0,
        "disk_free_mb": 2048.0,
        "uptime_s": 190.0,
    }
    assert status["health"] == [
        {
            "model": "m",
            "version": 2,
            "devices": 1,
            "inferences": 400,
            "errors": 6,
            "error_rate": pytest.approx(0.015),
            "latency_p95_ms": pytest.approx(9.0),
            "activation_failures": 0,
        }
    ]
    assert fleet_status(db, since=950.0)["health"][0]["inferences"] == 200
    lines = format_status(status, now=1003.0).splitlines()
    assert "12%" in lines[2] and "80M" in lines[2] and "2.0G" in lines[2]
    assert lines[-2].split() == [
        "MODEL",
        "VERSION",
        "DEVICES",
        "INFERENCES",
        "ERRORS",
        "ERROR-RATE",
        "P95-MS",
        "ACT-FAILED",
    ]
    assert lines[-1].split() == ["m", "2", "1", "400", "6", "1.50%", "9.0", "0"]


def test_fleet_status_needs_a_database(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        fleet_status(tmp_path / "missing.db")


def test_the_header_names_each_deployed_release_and_its_kind() -> None:
    """A text model is labelled with its kind (from its signed manifest); plain models are not."""
    status = {
        "fleet": "f",
        "deployments": {"minilm": 2, "m": 3},
        "kinds": {"minilm": "text-embedding", "m": "tensors"},
        "devices": [],
        "health": [],
        "health_since": None,
    }
    header = format_status(status, now=0.0).splitlines()[0]
    assert header == "fleet f: m@3, minilm@2 (text-embedding); 0 device(s), 0 online"


def test_status_reads_the_kind_of_a_deployed_release(tmp_path: Path) -> None:
    from testkit.synthetic_models import make_model
    from tests.support.fleet import make_keys

    db = tmp_path / "c.db"
    registry = Registry(db)
    keys = make_keys(tmp_path / "keys")
    model = make_model(tmp_path / "m.onnx", 64 * 1024, seed=1)
    registry.add_release(model, name="m", version=1, keys=keys.release, fleet="f")
    registry.deploy("m", 1, fleet="f")
    registry.close()
    assert fleet_status(db, "f")["kinds"] == {"m": "tensors"}


def test_status_says_what_each_device_s_last_update_cost(tmp_path: Path) -> None:
    db = tmp_path / "registry.db"
    registry = Registry(db)
    for device in ("edge-1", "edge-2", "edge-3"):
        registry.record_status("default", protocol.DeviceStatus(device, online=True), seen=1.0)
    registry.close()
    store = TelemetryStore(db)
    said = [
        ("edge-1", 1, "86.6 MB (the whole release)", 10.0),
        ("edge-1", 2, "5.0 KB of 86.6 MB (delta from m@1)", 20.0),
        ("edge-2", 2, "86.6 MB (the whole release)", 15.0),
        ("edge-3", 2, None, 15.0),  # an edge too old to say
    ]
    for seq, (device, version, detail, ts) in enumerate(said):
        event = protocol.DeviceEvent(
            device, "verified", ts, boot="b", seq=seq, model="m", version=version, detail=detail
        )
        store.add_event("default", event, received_at=ts)
    store.flush()
    store.close()

    status = fleet_status(db)
    updates = {d["device_id"]: d["last_update"] for d in status["devices"]}
    assert updates == {
        "edge-1": {"model": "m", "version": 2, "cost": "5.0 KB of 86.6 MB (delta from m@1)"},
        "edge-2": {"model": "m", "version": 2, "cost": "86.6 MB (the whole release)"},
        "edge-3": None,
    }
    lines = format_status(status, now=30.0).splitlines()
    first = lines.index("DEVICE  LAST-UPDATE  COST")
    assert lines[first + 1 : first + 3] == [
        "edge-1  m@2          5.0 KB of 86.6 MB (delta from m@1)",
        "edge-2  m@2          86.6 MB (the whole release)",
    ]
    assert lines[first + 3] == ""  # edge-3 said nothing: no row
