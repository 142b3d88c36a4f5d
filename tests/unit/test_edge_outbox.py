"""The edge's store-and-forward queue and its inference statistics."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_node.metrics import InferenceStats, percentile
from edge_node.outbox import Outbox


class FakeDelivery:
    def __init__(self) -> None:
        self.delivered = False


class FakeLink:
    """Stands in for the MQTT session: records what was handed over, acks on demand."""

    def __init__(self, capacity: int = 1000) -> None:
        self.sent: list[tuple[str, bytes, FakeDelivery]] = []
        self.capacity = capacity

    def publish(self, topic: str, payload: bytes) -> FakeDelivery | None:
        if len(self.sent) >= self.capacity:
            return None
        d = FakeDelivery()
        self.sent.append((topic, payload, d))
        return d

    def ack_all(self) -> None:
        for _, _, d in self.sent:
            d.delivered = True


def patch(payload: bytes, dropped: int) -> bytes:
    i, before = payload.decode().split(":")
    return f"{i}:{int(before) + dropped}".encode()


def box_at(path: Path, **kwargs: int) -> Outbox:
    return Outbox(path / "q.sqlite", patch, **kwargs)


def add(box: Outbox, i: int) -> None:
    box.add("t", f"{i}:0".encode())


def test_messages_leave_in_order_and_stay_until_acknowledged(tmp_path: Path) -> None:
    box = box_at(tmp_path, in_flight=3)
    for i in range(5):
        add(box, i)
    link = FakeLink()
    assert box.pump(link.publish) == 3
    assert box.pump(link.publish) == 0  # in flight is full until acks come
    assert [p for _, p, _ in link.sent] == [b"0:0", b"1:0", b"2:0"]
    link.ack_all()
    assert box.pump(link.publish) == 2
    assert [p for _, p, _ in link.sent][3:] == [b"3:0", b"4:0"]
    link.ack_all()
    box.pump(link.publish)
    assert len(box) == 0


def test_unacknowledged_messages_survive_a_restart(tmp_path: Path) -> None:
    box = box_at(tmp_path)
    for i in range(3):
        add(box, i)
    link = FakeLink()
    box.pump(link.publish)
    link.sent[0][2].delivered = True
    box.pump(link.publish)
    box.close()
    again = box_at(tmp_path)
    replay = FakeLink()
    again.pump(replay.publish)
    assert [p for _, p, _ in replay.sent] == [b"1:0", b"2:0"]


def test_full_queue_drops_the_oldest_and_reports_the_count(tmp_path: Path) -> None:
    box = box_at(tmp_path, capacity=3)
    for i in range(5):
        add(box, i)
    add(box, 5)
    link = FakeLink()
    box.pump(link.publish)
    payloads = [p for _, p, _ in link.sent]
    # 0, 1 and 2 were dropped as 3, 4 and 5 arrived: the next message sent says so, once
    assert payloads == [b"3:3", b"4:0", b"5:0"]
    assert box.dropped_total == 3


def test_the_dropped_count_survives_a_restart(tmp_path: Path) -> None:
    box = box_at(tmp_path, capacity=2)
    for i in range(4):
        add(box, i)
    box.close()
    again = box_at(tmp_path, capacity=2)
    link = FakeLink()
    again.pump(link.publish)
    assert [p for _, p, _ in link.sent] == [b"2:2", b"3:0"]


def test_a_refused_hand_over_is_retried(tmp_path: Path) -> None:
    box = box_at(tmp_path)
    for i in range(3):
        add(box, i)
    link = FakeLink(capacity=1)
    assert box.pump(link.publish) == 1
    link.capacity = 10
    assert box.pump(link.publish) == 2
    assert [p for _, p, _ in link.sent] == [b"0:0", b"1:0", b"2:0"]


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([], 95, None),
        ([5.0], 95, 5.0),
        ([float(i) for i in range(1, 101)], 95, 95.0),
        ([float(i) for i in range(1, 101)], 50, 50.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.0),
    ],
)
def test_percentile_nearest_rank(values: list[float], q: float, expected: float | None) -> None:
    assert percentile(values, q) == expected


def test_inference_stats_per_model_and_totals() -> None:
    stats = InferenceStats()
    for ms in (1.0, 2.0, 3.0, 4.0):
        stats.record("a", 1, ms, ok=True)
    stats.record("a", 1, None, ok=False)
    stats.record("b", 7, 10.0, ok=True)
    per_model, totals = stats.take()
    a, b = per_model
    assert (a.model, a.version, b.model, b.version) == ("a", 1, "b", 7)
    assert a.inferences == 5 and a.errors == 1
    assert a.latency_p95_ms == 4.0 and a.latency_p50_ms == 2.0
    assert b.latency_p50_ms == 10.0
    assert totals.inferences == 6 and totals.errors == 1 and totals.latency_p95_ms == 10.0
    again, empty = stats.take()
    assert again == () and empty.inferences == 0


def test_a_version_change_mid_interval_keeps_both_versions() -> None:
    stats = InferenceStats()
    stats.record("m", 1, 1.0, ok=True)
    stats.record("m", 2, 2.0, ok=False)
    per_model, _ = stats.take()
    assert [(s.version, s.inferences, s.errors) for s in per_model] == [(1, 1, 0), (2, 1, 1)]
