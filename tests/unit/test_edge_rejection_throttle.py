"""The edge reports a flood of rejections in bounded numbers, and says how many it did not."""

from __future__ import annotations

from edge_node.rejection_throttle import MAX_REASONS, RejectionThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_one_per_interval_per_reason_and_the_rest_counted() -> None:
    clock = Clock()
    throttle = RejectionThrottle(clock, burst=3, interval=1.0)
    assert [throttle.admit("malformed") for _ in range(5)] == [0, 0, 0, None, None]
    assert throttle.admit("stale") == 0  # another reason has its own budget
    assert throttle.due() == []  # no budget yet for a summary
    clock.now += 1.0
    assert throttle.admit("malformed") == 2  # reported, with the two before it
    assert throttle.admit("malformed") is None
    clock.now += 1.0
    assert throttle.due() == [("malformed", 1)]
    assert throttle.due() == []


def test_made_up_reasons_share_one_budget() -> None:
    throttle = RejectionThrottle(Clock(), burst=1)
    for i in range(MAX_REASONS * 3):
        throttle.admit(f"r{i}")
    assert len(throttle._budgets) <= MAX_REASONS + 1
