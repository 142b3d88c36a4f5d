"""The snapshot reader: one read of the database per interval however many pages wait on it,
devices read while their page is open, and a failing or silent database kept as the last good
data under a banner."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator

import pytest

from modelcast.dashboard.broker_watch import BrokerState
from modelcast.dashboard.layout import PageContext, banners
from modelcast.dashboard.snapshot import SnapshotReader
from tests.unit.dashboard_fakes import FakeSource

INTERVAL = 0.05


@pytest.fixture
def source() -> FakeSource:
    return FakeSource()


@pytest.fixture
def reader(source: FakeSource) -> Iterator[SnapshotReader]:
    r = SnapshotReader(source, INTERVAL)
    r.start()
    yield r
    r.stop()


def context(reader: SnapshotReader, now: float, connected: bool = True) -> PageContext:
    broker = BrokerState("mqtt://b:1883", connected, since=now - 5)
    return PageContext("f", INTERVAL, "csrf", reader.snapshot(), broker, now)


def test_pages_waiting_on_the_snapshot_cost_no_read(
    reader: SnapshotReader, source: FakeSource
) -> None:
    """Eight pages follow five generations: five reads (one per interval), not forty."""
    seen: list[list[int]] = [[] for _ in range(8)]

    def page(i: int) -> None:
        generation = 0
        while generation < 5:
            generation = reader.wait_for_generation(generation, 5.0).generation
            seen[i].append(generation)

    threads = [threading.Thread(target=page, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert all(s and s[-1] >= 5 for s in seen)
    generation = reader.snapshot().generation
    assert reader.fleet_reads == generation
    assert source.fleet_reads in (generation, generation + 1)  # one may be under way


def test_a_device_is_read_when_asked_then_with_every_fleet_read(
    reader: SnapshotReader, source: FakeSource
) -> None:
    detail = reader.device("a", 3600.0)
    assert detail is not None and detail.device == "a"
    assert source.device_reads[0] == ("a", 3600.0)
    first = reader.snapshot().generation
    reader.wait_for_generation(first + 2, 5.0)
    assert source.device_reads.count(("a", 3600.0)) >= 3  # read again with the fleet
    assert reader.device("a", 3600.0) is not None
    assert ("a", 3600.0) in reader.snapshot().details


def test_a_failing_database_keeps_the_last_data_under_a_banner(
    reader: SnapshotReader, source: FakeSource
) -> None:
    good = reader.wait_for_generation(0, 5.0)
    assert good.fleet is not None and good.error is None
    source.failure = sqlite3.OperationalError("database is locked")
    closed = source.closed

    reader.refresh()
    bad = reader.wait(lambda s: s.error is not None, 5.0)
    assert bad.fleet is good.fleet and bad.taken_at == good.taken_at
    assert bad.error == "OperationalError: database is locked" and bad.failing_since is not None
    assert source.closed > closed  # a fresh connection next time
    [banner] = banners(context(reader, bad.failing_since + 1))
    assert "cannot be read" in banner and "database is locked" in banner
    source.failure = None
    recovered = reader.wait_for_generation(bad.generation, 5.0)
    assert recovered.error is None and recovered.failing_since is None
    assert banners(context(reader, recovered.taken_at or 0)) == []


def test_a_database_that_does_not_answer_shows_after_a_while(source: FakeSource) -> None:
    source.gate = threading.Event()
    reader = SnapshotReader(source, INTERVAL, clock=lambda: 1000.0)
    reader.start()
    try:
        assert reader.wait(lambda s: s.reading_since == 1000.0, 5.0).reading_since == 1000.0
        assert banners(context(reader, 1001.0)) == []
        [late] = banners(context(reader, 1030.0))
        assert "has not answered for 30 s" in late and "no data read yet" in late
        [broker, _db] = reversed(banners(context(reader, 1030.0, connected=False)))
        assert "mqtt://b:1883 cannot be reached" in broker
    finally:
        source.gate.set()
        reader.stop()
