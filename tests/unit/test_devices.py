"""The coordinator's device tracker: reports batched into the registry."""

from __future__ import annotations

import time
from pathlib import Path

from coordinator.devices import DeviceTracker
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
