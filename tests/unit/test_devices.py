"""The coordinator's device tracker: reports batched into the registry."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

import protocol
from coordinator.devices import DeviceTracker
from coordinator.ratelimit import DeviceLimits
from coordinator.registry import Registry


def test_a_backlog_of_old_messages_does_not_make_the_batch_overdue(tmp_path: Path) -> None:
    """A worker behind its inbox handles messages received a while ago: the batch's age counts
    from when it started here, or every message would commit on its own (and the worker fall
    further behind)."""
    tracker = DeviceTracker(Registry(tmp_path / "r.db"), "f", flush_interval=30.0)
    received_long_ago = time.time() - 600
    for i in range(100):
        tracker.on_seen(f"dev-{i}", received_long_ago)
    assert not tracker.due(time.time())
    assert tracker.pending == 0  # telemetry sightings wait for the batch to be due
    assert tracker.due(time.time() + 31)


def test_the_latest_sighting_is_recorded(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "r.db")
    tracker = DeviceTracker(registry, "f", flush_interval=0.0)
    tracker.on_seen("dev-1", 1000.0)
    tracker.on_seen("dev-1", 2000.0)
    tracker.on_seen("dev-1", 1500.0)
    assert tracker.flush() == 1
    (row,) = registry.devices("f")
    assert row["last_seen"] == 2000.0


def test_rate_limited_messages_are_added_up_per_device_over_flushes(tmp_path: Path) -> None:
    """Drop counts reach the devices table (where `modelcast status` reads them), added to what
    an earlier flush, or an earlier coordinator, recorded; they are due once per flush interval."""
    registry = Registry(tmp_path / "r.db")
    limits = DeviceLimits.make(1e-9, 1.0, 1e-9, 1.0)  # no refill during the test
    tracker = DeviceTracker(registry, "f", limits=limits, flush_interval=0.0)
    assert tracker.pending == 0
    for _ in range(3):
        limits.reports.allow("dev-1")
        limits.requests.allow("dev-1")
    limits.reports.allow("dev-2")
    limits.reports.allow("dev-2")
    limits.reports.allow("bad/id")  # no device may have it: counted, never recorded
    limits.reports.allow("bad/id")
    assert tracker.pending == 1
    assert tracker.flush() == 2
    assert tracker.pending == 0 and tracker.flush() == 0
    limits.reports.allow("dev-1")
    later = DeviceTracker(registry, "f", limits=limits, flush_interval=0.0)  # a restart
    assert later.flush() == 1
    rows = {row["device_id"]: row for row in registry.devices("f")}
    assert set(rows) == {"dev-1", "dev-2"}
    assert (rows["dev-1"]["limited_reports"], rows["dev-1"]["limited_requests"]) == (3, 2)
    assert (rows["dev-2"]["limited_reports"], rows["dev-2"]["limited_requests"]) == (1, 0)
    assert rows["dev-1"]["limited_at"] >= rows["dev-2"]["limited_at"] > time.time() - 60
    assert limits.reports.limited()["bad/id"] == 1
    registry.close()


def test_drop_counts_wait_for_the_flush_interval(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "r.db")
    limits = DeviceLimits.make(1e-9, 1.0, 1e-9, 1.0)  # no refill during the test
    tracker = DeviceTracker(registry, "f", limits=limits, flush_interval=30.0)
    limits.reports.allow("dev-1")
    limits.reports.allow("dev-1")
    assert tracker.pending == 0  # not due yet: a flood must not commit once per drop
    assert tracker.flush() == 1  # (stopping flushes whatever is there)
    registry.close()


def test_the_clock_skew_is_recorded_from_live_messages_of_the_device(tmp_path: Path) -> None:
    """Not from a retained message (a replay), nor an offline status (the broker's will, made
    when the device connected), nor a status without a time."""
    registry = Registry(tmp_path / "r.db")
    tracker = DeviceTracker(registry, "f", flush_interval=0.0)
    now = 1_800_000_000.0
    idle = protocol.UpdateState.IDLE
    tracker.on_state(protocol.DeviceState("a", idle, now - 7200), retained=True, received_at=now)
    tracker.on_status(
        protocol.DeviceStatus("a", True, ts=now - 60), retained=False, received_at=now
    )
    tracker.on_status(
        protocol.DeviceStatus("b", False, ts=now - 9e5), retained=False, received_at=now
    )
    tracker.on_status(protocol.DeviceStatus("c", True), retained=False, received_at=now)
    tracker.on_seen("c", now, None)  # history: no clock
    tracker.on_seen("d", now + 1.0, now + 3.5)
    tracker.flush()
    rows = {row["device_id"]: row for row in registry.devices("f")}
    clocks = {device: (row["clock_skew"], row["clock_checked"]) for device, row in rows.items()}
    assert clocks == {
        "a": (-60.0, now),
        "b": (None, None),
        "c": (None, None),
        "d": (2.5, now + 1.0),
    }
    tracker.on_seen("a", now + 10.0, now + 10.0)  # set right: the largest of the recent ones
    tracker.flush()
    [a] = [row for row in registry.devices("f") if row["device_id"] == "a"]
    assert (a["clock_skew"], a["clock_checked"]) == (0.0, now + 10.0)
    registry.close()


def test_a_clock_far_off_is_logged_once_and_again_when_set_right(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = Registry(tmp_path / "r.db")
    tracker = DeviceTracker(registry, "f", flush_interval=0.0)
    now = 1_800_000_000.0
    caplog.set_level(logging.INFO, logger="coordinator.devices")
    for i in range(3):  # a day behind, three flushes: one warning
        tracker.on_seen("d1", now + i, now + i - 86400.0)
        tracker.on_seen("d2", now + i, now + i + 2.0)  # a little off: never logged
        tracker.flush()
    tracker.on_seen("d1", now + 10.0, 120.0)  # a reboot at 1970
    tracker.flush()
    for i in range(5):  # NTP answered: set forward, right at once; logged once
        tracker.on_seen("d1", now + 20.0 + i, now + 20.0 + i)
        tracker.flush()
    clock_lines = [
        (r.levelname, r.getMessage()) for r in caplog.records if "clock" in r.getMessage()
    ]
    assert clock_lines == [
        ("WARNING", "device d1: clock off (-1d)"),
        ("INFO", "device d1: clock set right (+0.0s)"),
    ]
    registry.close()


def test_a_state_says_how_much_of_the_release_the_device_reused() -> None:
    from coordinator.devices import describe_state

    state = protocol.DeviceState(
        "d1",
        protocol.UpdateState.DOWNLOADING,
        0.0,
        model="m",
        version=2,
        chunks_held=46,
        chunks_total=48,
        size=12_000_000,
        bytes_reused=11_000_000,
    )
    assert describe_state(state) == "m@2 downloading 46/48 (reused 11000000 of 12000000 bytes)"
    decoded = protocol.DeviceState.decode(state.encode())
    assert decoded.bytes_reused == 11_000_000
    plain = protocol.DeviceState("d1", protocol.UpdateState.IDLE, 0.0)
    assert b"bytes_reused" not in plain.encode()  # older states keep their bytes
    assert describe_state(plain) == "idle"
