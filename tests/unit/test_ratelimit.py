"""Per-device token buckets of the coordinator: chunk requests, and reports."""

from __future__ import annotations

import pytest

from coordinator.ratelimit import OTHERS, DeviceLimits, DeviceRateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_the_rate_and_each_device_has_its_own_bucket() -> None:
    clock = Clock()
    limiter = DeviceRateLimiter(rate=10, burst=5, clock=clock)
    assert [limiter.allow("a") for _ in range(7)] == [True] * 5 + [False] * 2
    assert limiter.allow("b")  # another device is not affected
    clock.now += 0.25  # 2.5 tokens back
    assert [limiter.allow("a") for _ in range(3)] == [True, True, False]
    clock.now += 100  # refills up to the burst, not beyond
    assert sum(limiter.allow("a") for _ in range(10)) == 5
    assert limiter.limited() == {"a": 3 + 5}


def test_logging_is_rate_limited_per_device() -> None:
    clock = Clock()
    limiter = DeviceRateLimiter(rate=1, burst=1, clock=clock)
    assert limiter.should_log("a")
    assert not limiter.should_log("a")
    assert limiter.should_log("b")
    clock.now += 11
    assert limiter.should_log("a")


def test_memory_stays_bounded_with_made_up_device_ids() -> None:
    clock = Clock()
    limiter = DeviceRateLimiter(rate=1, burst=1, clock=clock, max_buckets=100)
    for i in range(10_000):
        limiter.allow(f"d{i}")
        limiter.allow(f"d{i}")  # limited
        clock.now += 0.001
    assert len(limiter._buckets) <= 100
    counts = limiter.limited()
    assert len(counts) <= 101 and counts[OTHERS] > 0
    assert sum(counts.values()) == 10_000


def test_drops_are_taken_once_for_persisting() -> None:
    clock = Clock()
    limiter = DeviceRateLimiter(rate=1, burst=1, clock=clock, max_buckets=2)
    for device in ("a", "a", "a", "b", "b"):
        limiter.allow(device)
    assert limiter.has_unsaved()
    assert limiter.take_unsaved() == {"a": 2, "b": 1}
    assert not limiter.has_unsaved() and limiter.take_unsaved() == {}
    limiter.allow("c")
    limiter.allow("c")  # beyond the devices counted by name: only in limited(), as OTHERS
    assert not limiter.has_unsaved()
    assert limiter.limited() == {"a": 2, "b": 1, OTHERS: 1}


def test_both_limits_are_taken_together_per_device() -> None:
    limits = DeviceLimits.make(1.0, 1.0, 1.0, 2.0)
    assert limits.requests.what == "chunk requests" and limits.reports.what == "reports"
    for _ in range(3):
        limits.requests.allow("a")
        limits.reports.allow("a")
        limits.reports.allow("b")
    assert limits.has_unsaved()
    assert limits.take_unsaved() == {"a": (2, 1), "b": (0, 1)}
    assert not limits.has_unsaved()


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        DeviceRateLimiter(rate=0)
    with pytest.raises(ValueError):
        DeviceRateLimiter(burst=0.5)
