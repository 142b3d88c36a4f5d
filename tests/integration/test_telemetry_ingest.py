"""The coordinator's telemetry ingestion and ``modelcast telemetry tail``, against a real
Mosquitto, with a plain paho client (``TopicRecorder``) publishing hand-built messages: not our
edge, so the coordinator is tested against the contract, not against our own sender."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

import protocol
from coordinator import Coordinator, CoordinatorConfig, init_keys
from coordinator.status import fleet_status
from coordinator.telemetry_store import TelemetryStore
from testkit.mqtt_recorder import TopicRecorder
from tests.support.brokers import Broker

TIMEOUT = 15.0
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Setup:
    coordinator: Coordinator
    topics: protocol.Topics
    db: Path


@pytest.fixture
def setup(broker: Broker, mqtt_fleet: str, tmp_path: Path) -> Iterator[Setup]:
    init_keys(tmp_path / "keys")
    db = tmp_path / "coord.db"
    coordinator = Coordinator(
        CoordinatorConfig(
            broker_url=broker.url, db_path=db, keydir=tmp_path / "keys", fleet=mqtt_fleet
        )
    )
    coordinator.start()
    try:
        yield Setup(coordinator, protocol.Topics(mqtt_fleet), db)
    finally:
        coordinator.stop()


def metrics(device: str, seq: int, ts: float, stats: protocol.ModelStats, **kw: Any) -> bytes:
    return protocol.MetricsSample(
        device=device,
        boot=f"{device}-boot",
        seq=seq,
        ts=ts,
        interval_s=60.0,
        uptime_s=60.0 * seq,
        cpu_pct=4.5,
        rss_mb=81.0,
        disk_free_mb=2048.0,
        inferences=stats.inferences,
        errors=stats.errors,
        latency_p95_ms=stats.latency_p95_ms,
        active={"m": stats.version},
        models=(stats,),
        **kw,
    ).encode()


def await_subscribed(device: TopicRecorder, setup: Setup, device_id: str) -> None:
    """A retained online status is replayed to the coordinator once it has subscribed (in one
    SUBSCRIBE with the telemetry topics): when it is recorded, telemetry reaches it too."""
    status = protocol.DeviceStatus(device=device_id, online=True, ts=time.time(), agent="fake/1")
    device.publish(setup.topics.status(device_id), status.encode(), retain=True)

    def online() -> bool:
        return any(
            d["device_id"] == device_id and d["online"]
            for d in fleet_status(setup.db, setup.topics.fleet)["devices"]
        )

    assert setup.coordinator.wait_until(online, TIMEOUT)


def test_telemetry_is_stored_once_counted_when_malformed_and_summed_into_health(
    broker: Broker, setup: Setup
) -> None:
    topics, coordinator = setup.topics, setup.coordinator
    started = time.time()
    now = time.time()
    with TopicRecorder(broker.host, broker.port) as device:
        try:
            await_subscribed(device, setup, "d1")
            first = metrics("d1", 1, now - 120, protocol.ModelStats("m", 1, 100, 1, 4.0, 10.0))
            second = metrics("d1", 2, now - 60, protocol.ModelStats("m", 1, 300, 3, 6.0, 20.0))
            failed = protocol.DeviceEvent(
                device="d1",
                event="activation-failed",
                ts=now - 30,
                boot="d1-boot",
                seq=3,
                reason="load-failed",
                model="m",
                version=2,
            ).encode()
            replayed = metrics("d2", 1, now - 90, protocol.ModelStats("m", 1, 100, 0, 3.0, 30.0))
            replayed_hist = metrics(
                "d2", 1, now - 90, protocol.ModelStats("m", 1, 100, 0, 3.0, 30.0), hist=True
            )
            assert replayed != replayed_hist
            device.publish(topics.telemetry("d1", "metrics"), first)
            device.publish(topics.telemetry("d1", "metrics"), second)
            device.publish(topics.telemetry("d1", "metrics"), second)  # exact duplicate
            device.publish(topics.telemetry("d1", "events"), failed)
            device.publish(topics.telemetry("d1", "metrics"), b"\x93garbage")  # malformed
            device.publish(topics.telemetry("d1", "metrics"), replayed)  # d2's, on d1's topic
            device.publish(topics.telemetry("d2", "metrics"), replayed_hist)

            def settled() -> bool:
                t = coordinator.telemetry
                return (
                    t.samples_stored == 3
                    and t.events_stored == 1
                    and t.duplicates == 1
                    and coordinator.rejections == {"malformed": 1, "device-mismatch": 1}
                )

            assert coordinator.wait_until(settled, TIMEOUT), (
                coordinator.telemetry,
                coordinator.rejections,
            )
        finally:  # the broker is shared by the whole session
            device.publish(topics.status("d1"), b"", retain=True)

    store = TelemetryStore(setup.db)
    try:
        assert store.count("metrics", topics.fleet) == 3
        assert store.count("model_metrics", topics.fleet) == 3
        assert store.count("events", topics.fleet) == 1
    finally:
        store.close()

    def devices_recorded() -> bool:  # device rows are written in their own batches
        seen = fleet_status(setup.db, topics.fleet)["devices"]
        return len(seen) == 2 and all(d["metrics"] and d["last_seen"] for d in seen)

    assert coordinator.wait_until(devices_recorded, TIMEOUT)
    status = fleet_status(setup.db, topics.fleet)
    assert status["health"] == [
        {
            "model": "m",
            "version": 1,
            "devices": 2,
            "inferences": 500,
            "errors": 4,
            "error_rate": pytest.approx(4 / 500),
            # weighted by successful inferences
            "latency_p95_ms": pytest.approx((10.0 * 99 + 20.0 * 297 + 30.0 * 100) / 496),
            "activation_failures": 0,
        },
        {
            "model": "m",
            "version": 2,
            "devices": 1,
            "inferences": 0,
            "errors": 0,
            "error_rate": None,
            "latency_p95_ms": None,
            "activation_failures": 1,
        },
    ]
    devices = {d["device_id"]: d for d in status["devices"]}
    assert set(devices) == {"d1", "d2"}  # d2 only ever sent telemetry
    for d in devices.values():
        assert d["last_seen"] is not None and d["last_seen"] >= started
        assert d["metrics"]["cpu_pct"] == 4.5 and d["metrics"]["disk_free_mb"] == 2048.0
    assert devices["d1"]["metrics"]["uptime_s"] == 120.0  # its latest sample, seq 2
    assert devices["d2"]["online"] is None  # never said


def _lines(stream: IO[str], out: queue.Queue[str]) -> None:
    for line in stream:
        out.put(line)


@pytest.mark.portable
def test_tail_prints_decoded_messages_as_json(any_broker: Broker, mqtt_fleet: str) -> None:
    topics = protocol.Topics(mqtt_fleet)
    status = protocol.DeviceStatus(device="d9", online=True, ts=1.0, agent="fake/1")
    sample = metrics("d9", 1, 1000.0, protocol.ModelStats("m", 4, 10, 1, 1.0, 2.0))
    with TopicRecorder(any_broker.host, any_broker.port) as device:
        # Retained, so the tail gets it as soon as it has subscribed: once it printed it, it
        # is subscribed to the telemetry topics too (same SUBSCRIBE) and live messages reach it.
        device.publish(topics.status("d9"), status.encode(), retain=True)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "modelcast.cli",
                "telemetry",
                "tail",
                "--broker",
                any_broker.url,
                "--fleet",
                mqtt_fleet,
                "--device",
                "d9",
                "--json",
                "--count",
                "3",
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stderr is not None
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
        try:
            try:
                first = json.loads(lines.get(timeout=TIMEOUT))
            except queue.Empty:
                pytest.fail("the tail printed nothing")
            device.publish(topics.telemetry("d9", "metrics"), sample)
            device.publish(topics.telemetry("d9", "events"), b"\xc1")  # never valid msgpack
            assert proc.wait(timeout=TIMEOUT) == 0, proc.stderr.read()
            second = json.loads(lines.get(timeout=TIMEOUT))
            third = json.loads(lines.get(timeout=TIMEOUT))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            device.publish(topics.status("d9"), b"", retain=True)

    assert first["kind"] == "status" and first["retained"] is True
    assert first["message"]["online"] is True and first["message"]["agent"] == "fake/1"
    assert second["kind"] == "metrics" and second["retained"] is False
    assert second["topic"] == topics.telemetry("d9", "metrics")
    assert second["message"]["seq"] == 1 and second["message"]["cpu_pct"] == 4.5
    assert second["message"]["models"] == [
        {
            "model": "m",
            "version": 4,
            "inferences": 10,
            "errors": 1,
            "latency_p50_ms": 1.0,
            "latency_p95_ms": 2.0,
        }
    ]
    assert third["kind"] == "events" and third["error"]["reason"] == "malformed"
    assert third["payload"] == "c1"
    assert lines.empty()
