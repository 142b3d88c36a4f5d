"""Ingestion without a broker: what the network thread handles itself (telemetry, requests of a
cached release) and what it queues for the worker, and every refusal counted by reason."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import protocol
from coordinator.chunk_serving import ChunkServer
from coordinator.devices import DeviceTracker
from coordinator.ingestion import Inbound, Ingestion
from coordinator.progress import Progress
from coordinator.ratelimit import DeviceLimits
from coordinator.registry import Registry, ReleaseRecord
from coordinator.release_askers import ReleaseAskers
from coordinator.release_cache import ReleaseCache
from coordinator.status import fleet_status, format_status
from coordinator.telemetry_store import TelemetryStore
from tests.unit.coordinator_fakes import FLEET, add_release, make_keys

T = protocol.Topics(FLEET)
DAY = 86400.0


@dataclass
class Setup:
    ingestion: Ingestion
    registry: Registry
    telemetry: TelemetryStore
    devices: DeviceTracker
    chunks: ChunkServer
    releases: ReleaseCache
    progress: Progress
    stopping: threading.Event
    record: ReleaseRecord
    limits: DeviceLimits


def make(
    tmp: Path, *, burst: float = 100.0, report_burst: float = 100.0, inbox_size: int = 100
) -> Setup:
    registry = Registry(tmp / "c.db")
    record = add_release(registry, make_keys(tmp), tmp)
    telemetry = TelemetryStore(tmp / "c.db", flush_interval=60.0)
    askers = ReleaseAskers()
    devices = DeviceTracker(registry, FLEET, askers=askers, flush_interval=60.0)
    progress, stopping = Progress(), threading.Event()
    releases = ReleaseCache(registry, FLEET)
    chunks = ChunkServer(T, releases, askers.of, progress, stopping, max_pending=4, fresh_hold=0.0)
    limits = DeviceLimits.make(1000.0, burst, 1000.0, report_burst)
    ingestion = Ingestion(
        T,
        devices,
        telemetry,
        chunks,
        releases,
        limits,
        progress,
        stopping,
        inbox_size=inbox_size,
    )
    return Setup(
        ingestion,
        registry,
        telemetry,
        devices,
        chunks,
        releases,
        progress,
        stopping,
        record,
        limits,
    )


@pytest.fixture(name="s")
def setup(tmp_path: Path) -> Iterator[Setup]:
    s = make(tmp_path)
    yield s
    close(s)


def close(s: Setup) -> None:
    s.chunks.close()
    s.telemetry.close()
    s.registry.close()


def sample(device: str = "d1", seq: int = 1) -> bytes:
    return protocol.MetricsSample(device=device, boot="b", seq=seq, ts=100.0).encode()


def chunk_request(s: Setup, device: str = "d1") -> bytes:
    return protocol.ChunkRequest(
        device=device,
        name="m",
        version=1,
        release_id=s.record.short_id,
        ranges=((0, 2),),
    ).encode()


def run_worker(s: Setup) -> threading.Thread:
    worker = threading.Thread(target=s.ingestion.run)
    worker.start()
    return worker


def stop_worker(s: Setup, worker: threading.Thread) -> None:
    s.stopping.set()
    s.ingestion.wake()
    worker.join(10)
    assert not worker.is_alive()


def test_telemetry_is_handled_on_the_network_thread(s: Setup) -> None:
    s.ingestion.on_message(T.telemetry("d1", "metrics"), sample(), False)  # no worker running
    assert s.progress.messages_processed == 1
    assert s.telemetry.pending == 1  # one metrics row in the buffer
    s.telemetry.flush()
    assert s.telemetry.count("metrics", FLEET) == 1
    s.devices.flush()  # the sighting moved the device's last_seen
    [row] = s.registry.devices(FLEET)
    assert row["device_id"] == "d1" and row["last_seen"] is not None


def test_a_state_report_goes_through_the_worker_to_the_registry(s: Setup) -> None:
    state = protocol.DeviceState("d1", protocol.UpdateState.IDLE, ts=5.0)
    s.ingestion.on_message(T.state("d1"), state.encode(), True)
    assert s.progress.messages_processed == 0  # queued, not handled here
    worker = run_worker(s)
    try:
        assert s.progress.wait_until(lambda: s.progress.messages_processed == 1, 10)
        s.ingestion.flush_devices()
    finally:
        stop_worker(s, worker)
    [row] = s.registry.devices(FLEET)
    assert row["state"] == "idle" and row["last_seen"] == 5.0  # retained: its own timestamp


def test_a_request_of_a_cached_release_is_scheduled_on_the_network_thread(s: Setup) -> None:
    s.releases.add([s.record])
    s.ingestion.on_message(T.request("d1"), chunk_request(s), False)
    assert s.progress.messages_processed == 1
    assert s.chunks.stats().requests == 1 and s.chunks.stats().pending == 2


def test_a_request_of_a_release_not_cached_yet_is_looked_up_by_the_worker(s: Setup) -> None:
    s.ingestion.on_message(T.request("d1"), chunk_request(s), False)
    assert s.chunks.stats().requests == 0  # the network thread never reads the database
    worker = run_worker(s)
    try:
        assert s.progress.wait_until(lambda: s.chunks.stats().requests == 1, 10)
    finally:
        stop_worker(s, worker)
    assert s.releases.get(s.record.short_id) == s.record


@pytest.mark.parametrize(
    ("topic", "payload", "retained", "reason"),
    [
        (T.telemetry("d2", "metrics"), sample("d1"), False, "device-mismatch"),
        (T.state("d2"), protocol.DeviceState("d1", protocol.UpdateState.IDLE, 1.0).encode(), True,
         "device-mismatch"),
        (T.telemetry("d1", "metrics"), b"\x00garbage", False, "malformed"),
        (f"{T.base}/devices/d1/whatever", b"x", False, "malformed"),
    ],
)  # fmt: skip
def test_refused_messages_are_counted_by_reason(
    s: Setup, topic: str, payload: bytes, retained: bool, reason: str
) -> None:
    s.ingestion.handle(Inbound(topic, payload, retained, 1.0))
    assert s.progress.rejections() == {reason: 1}
    assert s.telemetry.pending == 0 and not s.devices.pending


def test_refused_requests_are_counted_by_reason(s: Setup) -> None:
    s.releases.add([s.record])
    s.ingestion.handle(Inbound(T.request("d1"), chunk_request(s), True, 1.0))
    s.ingestion.handle(Inbound(T.request("d2"), chunk_request(s, "d1"), False, 1.0))
    unknown = protocol.ChunkRequest("d1", "nope", 1, s.record.short_id, ((0, 1),)).encode()
    s.ingestion.handle(Inbound(T.request("d1"), unknown, False, 1.0))
    assert s.progress.rejections() == {
        "retained-request": 1,
        "device-mismatch": 1,
        "unknown-release": 1,
    }
    assert s.chunks.stats().requests == 0


def test_requests_over_the_rate_limit_are_dropped_before_decoding(tmp_path: Path) -> None:
    s = make(tmp_path, burst=1.0)
    try:
        s.releases.add([s.record])
        s.ingestion.on_message(T.request("d1"), chunk_request(s), False)
        s.ingestion.on_message(T.request("d1"), b"not even decoded", False)
        assert s.chunks.stats().requests == 1
        assert s.progress.rejections() == {}  # counted by the limiter, not as malformed
    finally:
        close(s)


def test_reports_over_the_rate_limit_are_dropped_before_decoding(tmp_path: Path) -> None:
    """Telemetry, state and status share one bucket per device; a dropped message is not even
    decoded (garbage is not refused as malformed), reaches neither the telemetry buffer nor the
    worker's inbox, and another device's bucket is its own."""
    s = make(tmp_path, report_burst=3.0, inbox_size=2)
    try:
        state = protocol.DeviceState("d1", protocol.UpdateState.IDLE, ts=5.0).encode()
        s.ingestion.on_message(T.telemetry("d1", "metrics"), sample(seq=1), False)
        s.ingestion.on_message(T.state("d1"), state, False)
        s.ingestion.on_message(T.status("d1"), protocol.DeviceStatus("d1", True).encode(), False)
        for topic in (T.telemetry("d1", "metrics"), T.telemetry("d1", "events"), T.state("d1")):
            s.ingestion.on_message(topic, b"not even decoded", False)
        s.ingestion.on_message(T.status("d1"), b"not even decoded", False)
        s.ingestion.on_message(T.telemetry("d2", "metrics"), sample("d2"), False)
        assert s.telemetry.pending == 2  # d1's first sample, and d2's
        assert s.progress.inbox_dropped == 0  # d1's state and status; the rest never queued
        assert s.progress.rejections() == {}
        assert s.limits.reports.limited() == {"d1": 4}
        assert s.limits.requests.limited() == {}
        assert s.limits.take_unsaved() == {"d1": (0, 4)}
        assert s.limits.take_unsaved() == {}  # taken once
    finally:
        close(s)


def test_a_device_a_day_behind_shows_about_minus_one_day_in_status(s: Setup) -> None:
    """Every message with a time counts (state, status, metrics, events), but not retained ones
    nor store-and-forward history: those are old by design."""
    now = time.time()
    behind = now - DAY
    live: list[tuple[str, bytes]] = [
        (T.status("d1"), protocol.DeviceStatus("d1", True, ts=behind).encode()),
        (T.state("d1"), protocol.DeviceState("d1", protocol.UpdateState.IDLE, behind).encode()),
        (T.telemetry("d1", "metrics"), metrics(seq=1, ts=behind + 1)),
        (T.telemetry("d1", "events"), event(seq=2, ts=behind + 2)),
    ]
    old = now - 30 * DAY  # far older, so it would show if it counted
    for topic, payload in live:
        s.ingestion.handle(Inbound(topic, payload, False, now + 0.05))
    s.ingestion.handle(
        Inbound(T.telemetry("d1", "metrics"), metrics(3, old, hist=True), False, now)
    )
    retained = protocol.DeviceState("d2", protocol.UpdateState.IDLE, old).encode()
    s.ingestion.handle(Inbound(T.state("d2"), retained, True, now))
    s.ingestion.flush_devices()
    status = fleet_status(s.registry.db_path, FLEET)
    d1, d2 = status["devices"]
    assert d1["clock_skew"] == pytest.approx(-DAY, abs=5.0)
    assert d2["clock_skew"] is None  # only a retained message: unknown
    lines = format_status(status).splitlines()
    column = lines[1].index("CLOCK")
    assert lines[2][column:].startswith("-1d ") and lines[3][column:].startswith("? ")


def metrics(seq: int, ts: float, *, hist: bool = False) -> bytes:
    return protocol.MetricsSample(device="d1", boot="b", seq=seq, ts=ts, hist=hist).encode()


def event(seq: int, ts: float) -> bytes:
    return protocol.DeviceEvent("d1", "activated", ts=ts, boot="b", seq=seq).encode()


def test_a_full_inbox_drops_and_counts(tmp_path: Path) -> None:
    s = make(tmp_path, inbox_size=1)
    try:
        state = protocol.DeviceState("d1", protocol.UpdateState.IDLE, ts=5.0).encode()
        s.ingestion.on_message(T.state("d1"), state, False)
        s.ingestion.on_message(T.state("d1"), state, False)
        assert s.progress.inbox_dropped == 1
    finally:
        close(s)
