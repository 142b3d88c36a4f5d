"""The coordinator's telemetry store: de-duplication, batching, retention, health figures."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coordinator.telemetry_store import TelemetryStore
from protocol import DeviceEvent, MetricsSample, ModelStats

FLEET = "f1"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TelemetryStore]:
    s = TelemetryStore(tmp_path / "coord.db", flush_interval=60.0)
    try:
        yield s
    finally:
        s.close()


def sample(
    device: str,
    seq: int,
    ts: float = 100.0,
    *,
    boot: str = "boot-1",
    models: tuple[ModelStats, ...] | None = None,
    active: dict[str, int] | None = None,
    **kw: Any,
) -> MetricsSample:
    return MetricsSample(
        device=device,
        boot=boot,
        seq=seq,
        ts=ts,
        models=models or (),
        active=active or {},
        **kw,
    )


def event(
    device: str,
    seq: int,
    ts: float = 100.0,
    *,
    name: str = "activation-failed",
    model: str | None = "m",
    version: int | None = 1,
    boot: str = "boot-1",
) -> DeviceEvent:
    return DeviceEvent(
        device=device, event=name, ts=ts, boot=boot, seq=seq, model=model, version=version
    )


# --- de-duplication ------------------------------------------------------------------------
def test_a_message_is_stored_once_per_device_boot_and_seq(store: TelemetryStore) -> None:
    s1 = sample("d1", 1, models=(ModelStats("m", 1, inferences=5),))
    store.add_metrics(FLEET, s1, received_at=100.0)
    store.add_metrics(FLEET, s1, received_at=100.5)  # a duplicate in the same batch
    store.add_event(FLEET, event("d1", 2), received_at=100.0)
    assert store.flush() == 3  # metrics row, model row, event row
    # Again after a reconnect, in a later batch, even with different contents.
    store.add_metrics(FLEET, sample("d1", 1, cpu_pct=99.0), received_at=200.0)
    store.add_event(FLEET, event("d1", 2, name="activated"), received_at=200.0)
    assert store.flush() == 0
    # Same seq, but another boot, another device or another fleet: new messages.
    store.add_metrics(FLEET, sample("d1", 1, boot="boot-2"), received_at=300.0)
    store.add_metrics(FLEET, sample("d2", 1), received_at=300.0)
    store.add_metrics("f2", s1, received_at=300.0)
    assert store.flush() == 4  # three metrics rows, one model row (f2)

    assert store.count("metrics", FLEET) == 3
    assert store.count("model_metrics", FLEET) == 1
    assert store.count("events", FLEET) == 1
    stats = store.stats()
    assert (stats.samples_stored, stats.events_stored, stats.duplicates) == (4, 1, 3)
    assert store.latest_metrics(FLEET)["d1"]["cpu_pct"] == 0.0  # the first copy stayed


def test_unnumbered_events_are_never_taken_for_duplicates(store: TelemetryStore) -> None:
    for _ in range(2):
        store.add_event(FLEET, event("d1", 0, name="resumed"), received_at=100.0)
    store.flush()
    assert store.count("events", FLEET) == 2


# --- batching ------------------------------------------------------------------------------
def test_rows_are_buffered_and_written_in_one_transaction(tmp_path: Path) -> None:
    store = TelemetryStore(tmp_path / "coord.db", batch_rows=5, flush_interval=60.0)
    reader = TelemetryStore(tmp_path / "coord.db")
    try:
        statements: list[str] = []
        store._db.sql.conn.set_trace_callback(statements.append)
        for seq in (1, 2):
            models = (ModelStats("a", 1, inferences=1), ModelStats("b", 2, inferences=1))
            store.add_metrics(FLEET, sample("d1", seq, models=models), received_at=1.0)
        assert store.pending == 6
        assert store.wait_due(0.0)  # 6 rows >= batch_rows
        assert reader.count("metrics") == 0  # nothing written before the flush
        assert store.flush() == 6
        assert store.pending == 0 and store.stats().flushes == 1
        assert reader.count("metrics") == 2 and reader.count("model_metrics") == 4
        commits = [s for s in statements if s.strip().upper() == "COMMIT"]
        begins = [s for s in statements if s.strip().upper().startswith("BEGIN")]
        assert len(commits) == 1 and len(begins) == 1, statements
        assert store.flush() == 0  # nothing buffered: no transaction at all
        assert store.stats().flushes == 1
    finally:
        store.close()
        reader.close()


def test_a_small_batch_is_due_after_the_flush_interval(tmp_path: Path) -> None:
    store = TelemetryStore(tmp_path / "coord.db", batch_rows=500, flush_interval=0.05)
    try:
        assert not store.wait_due(0.0)  # empty: never due
        store.add_event(FLEET, event("d1", 1), received_at=1.0)
        started = time.monotonic()
        assert store.wait_due(5.0)
        assert 0.04 <= time.monotonic() - started < 4.0
    finally:
        store.close()


def test_wake_ends_a_wait(tmp_path: Path) -> None:
    store = TelemetryStore(tmp_path / "coord.db")
    try:
        store.wake()
        started = time.monotonic()
        assert not store.wait_due(30.0)
        assert time.monotonic() - started < 5.0
    finally:
        store.close()


def test_a_full_buffer_drops_new_messages(tmp_path: Path) -> None:
    store = TelemetryStore(tmp_path / "coord.db", max_buffer_rows=2)
    try:
        assert store.add_event(FLEET, event("d1", 1), received_at=1.0)
        two_rows = sample("d1", 2, models=(ModelStats("m", 1),))
        assert not store.add_metrics(FLEET, two_rows, received_at=1.0)
        assert store.add_event(FLEET, event("d1", 3), received_at=1.0)
        assert store.stats().dropped == 1 and store.pending == 2
    finally:
        store.close()


def test_rows_stay_buffered_when_the_database_fails(store: TelemetryStore) -> None:
    store.add_event(FLEET, event("d1", 1), received_at=1.0)
    store._db.sql.conn.close()
    with pytest.raises(sqlite3.Error):
        store.flush()
    assert store.pending == 1


# --- retention -----------------------------------------------------------------------------
def test_prune_deletes_rows_received_before_the_retention(tmp_path: Path) -> None:
    day = 86400.0
    now = 100 * day
    store = TelemetryStore(tmp_path / "coord.db", retention_days=30, clock=lambda: now)
    try:
        old, new = now - 31 * day, now - 29 * day
        models = (ModelStats("m", 1, inferences=1),)
        # The device's clock is irrelevant: age is when the coordinator received it.
        store.add_metrics(FLEET, sample("d1", 1, ts=now, models=models), received_at=old)
        store.add_event(FLEET, event("d1", 2, ts=now), received_at=old)
        store.add_metrics(FLEET, sample("d1", 3, ts=0.0, models=models), received_at=new)
        store.add_event(FLEET, event("d1", 4, ts=0.0), received_at=new)
        store.add_metrics("f2", sample("d1", 1), received_at=old)
        store.flush()

        assert store.prune(FLEET) == 3  # metrics, model_metrics and events rows of FLEET
        assert store.count("metrics", FLEET) == 1
        assert store.count("model_metrics", FLEET) == 1
        assert store.count("events", FLEET) == 1
        assert store.count("metrics", "f2") == 1  # another fleet's coordinator prunes that
        assert store.prune() == 1  # every fleet
        assert store.stats().pruned == 4
    finally:
        store.close()


def test_maybe_prune_runs_at_most_once_per_interval(tmp_path: Path) -> None:
    now = [1000.0 * 86400]
    store = TelemetryStore(
        tmp_path / "coord.db", retention_days=1, prune_interval=3600.0, clock=lambda: now[0]
    )
    try:
        store.add_event(FLEET, event("d1", 1), received_at=0.0)
        store.flush()
        assert store.maybe_prune(FLEET) == 1
        store.add_event(FLEET, event("d1", 2), received_at=0.0)
        store.flush()
        assert store.maybe_prune(FLEET) == 0  # within the interval: not even looked at
        assert store.count("events", FLEET) == 1
    finally:
        store.close()


def test_retention_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        TelemetryStore(tmp_path / "coord.db", retention_days=0)


# --- health --------------------------------------------------------------------------------
def fill_health_fixture(store: TelemetryStore) -> None:
    """Four devices of FLEET (and noise in another fleet):

    * a: m@1 100 inferences (2 errors, p95 10 ms) at ts 100, 300 (1 error, p95 20 ms) at 160;
      then fails to activate m@2 at 170;
    * b: m@1 active but no inferences (p95 None) at 110; m@2 50 inferences (5 errors, p95 40)
      at 170;
    * c: m@1 active, no per-model statistics at all, at 150;
    * d: fails to activate m@3 at 120 (the event arrives twice).
    """
    m1 = {"m": 1}
    add = store.add_metrics
    add(FLEET, sample("a", 1, 100.0, active=m1, models=(ModelStats("m", 1, 100, 2, 5.0, 10.0),)), 1)
    add(FLEET, sample("a", 2, 160.0, active=m1, models=(ModelStats("m", 1, 300, 1, 7.0, 20.0),)), 1)
    add(FLEET, sample("b", 1, 110.0, active=m1, models=(ModelStats("m", 1, 0, 0),)), 1)
    add(
        FLEET,
        sample("b", 2, 170.0, active={"m": 2}, models=(ModelStats("m", 2, 50, 5, 30.0, 40.0),)),
        1,
    )
    add(FLEET, sample("c", 1, 150.0, active=m1), 1)
    store.add_event(FLEET, event("a", 3, 170.0, version=2), 1)
    store.add_event(FLEET, event("a", 4, 171.0, name="activated", version=1), 1)
    store.add_event(FLEET, event("d", 1, 120.0, version=3), 1)
    store.add_event(FLEET, event("d", 1, 120.0, version=3), 1)  # at-least-once
    add("f2", sample("a", 1, 100.0, active=m1, models=(ModelStats("m", 1, 10**6, 10**6),)), 1)
    store.flush()


def test_health_per_model_version(store: TelemetryStore) -> None:
    fill_health_fixture(store)
    assert store.health(FLEET) == [
        {
            "model": "m",
            "version": 1,
            "devices": 3,  # a and b reported statistics, c only had it active
            "inferences": 400,
            "errors": 3,
            "error_rate": pytest.approx(3 / 400),
            # weighted by successful inferences: (10 * 98 + 20 * 299) / (98 + 299) = 6960 / 397;
            # b's empty sample has no p95
            "latency_p95_ms": pytest.approx(6960 / 397),
            "activation_failures": 0,
        },
        {
            "model": "m",
            "version": 2,
            "devices": 2,  # b runs it, a failed to activate it
            "inferences": 50,
            "errors": 5,
            "error_rate": pytest.approx(0.1),
            "latency_p95_ms": pytest.approx(40.0),
            "activation_failures": 1,
        },
        {
            "model": "m",
            "version": 3,
            "devices": 1,
            "inferences": 0,
            "errors": 0,
            "error_rate": None,  # no traffic is not "no errors"
            "latency_p95_ms": None,
            "activation_failures": 1,  # the repeated event counts once
        },
    ]


def test_health_since(store: TelemetryStore) -> None:
    fill_health_fixture(store)
    health = {(h["model"], h["version"]): h for h in store.health(FLEET, since=155.0)}
    assert set(health) == {("m", 1), ("m", 2)}  # d's failure at 120 is out of the window
    m1 = health[("m", 1)]
    assert (m1["devices"], m1["inferences"], m1["errors"]) == (1, 300, 1)
    assert m1["error_rate"] == pytest.approx(1 / 300)
    assert m1["latency_p95_ms"] == pytest.approx(20.0)
    assert (health[("m", 2)]["devices"], health[("m", 2)]["activation_failures"]) == (2, 1)


def test_latency_p95_is_weighted_by_successful_inferences(store: TelemetryStore) -> None:
    stats = [ModelStats("m", 1, 100, 90, 1.0, 50.0), ModelStats("m", 1, 100, 0, 1.0, 10.0)]
    for seq, s in enumerate(stats, start=1):
        store.add_metrics(FLEET, sample("d1", seq, models=(s,)), 1)
    # a sample where every call failed has no latency to speak of
    store.add_metrics(FLEET, sample("d1", 3, models=(ModelStats("m", 1, 5, 5, None, None),)), 1)
    store.flush()
    [h] = store.health(FLEET)
    assert h["latency_p95_ms"] == pytest.approx((50.0 * 10 + 10.0 * 100) / 110)
    assert h["error_rate"] == pytest.approx(95 / 205)


def test_health_of_an_empty_fleet(store: TelemetryStore) -> None:
    assert store.health(FLEET) == []
    assert store.latest_metrics(FLEET) == {}


def test_latest_metrics_per_device(store: TelemetryStore) -> None:
    store.add_metrics(FLEET, sample("d1", 2, 200.0, cpu_pct=2.0, rss_mb=20.0), 1)
    store.add_metrics(FLEET, sample("d1", 1, 100.0, cpu_pct=1.0), 1)  # replayed later
    store.add_metrics(FLEET, sample("d2", 1, 150.0, disk_free_mb=5.0, uptime_s=9.0), 1)
    store.flush()
    latest = store.latest_metrics(FLEET)
    assert latest["d1"] == {
        "ts": 200.0,
        "cpu_pct": 2.0,
        "rss_mb": 20.0,
        "disk_free_mb": 0.0,
        "uptime_s": 0.0,
    }
    assert latest["d2"]["disk_free_mb"] == 5.0 and latest["d2"]["uptime_s"] == 9.0
