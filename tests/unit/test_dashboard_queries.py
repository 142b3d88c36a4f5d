"""The dashboard's own reads of a real coordinator database (SQLite, made by the coordinator's
stores): read-only, a device's series in buckets, rejections by reason (capped), and counters
that never go down when old telemetry is pruned."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from coordinator.telemetry_store import TelemetryStore
from modelcast.dashboard import queries
from protocol import DeviceEvent, MetricsSample


def sample(device: str, seq: int, ts: float, cpu_pct: float = 0.0) -> MetricsSample:
    return MetricsSample(device=device, boot="b", seq=seq, ts=ts, interval_s=60.0, cpu_pct=cpu_pct)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "coord.db"
    store = TelemetryStore(path)
    for i in range(10):
        store.add_metrics("f", sample("a", i + 1, 1000.0 + 60 * i, cpu_pct=float(i)), 1.0)
    store.add_metrics("g", sample("z", 1, 1000.0), 1.0)  # another fleet
    for i, reason in enumerate(["bad-signature", "bad-signature", "malformed"]):
        event = DeviceEvent(
            device="a", event="rejected", ts=2000.0 + i, boot="b", seq=100 + i, reason=reason
        )
        store.add_event("f", event, 1.0)
    store.flush()
    store.close()
    return path


def test_read_only(db: Path) -> None:
    conn = queries.connect_read_only(db, 1.0)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        conn.execute("DELETE FROM metrics")


def test_series_rejections_and_events(db: Path) -> None:
    conn = queries.connect_read_only(db, 1.0)
    series = queries.device_series(conn, "f", "a", window=300.0)
    assert [r["cpu_pct"] for r in series] == [4.0, 5.0, 6.0, 7.0, 8.0, 9.0]  # the last 5 min
    assert queries.device_series(conn, "f", "nobody", 300.0) == []
    assert queries.rejections(conn, "f") == {"bad-signature": 2, "malformed": 1}
    assert queries.rejections(conn, "g") == {}
    events = queries.device_events(conn, "f", "a")
    assert [e["reason"] for e in events] == ["malformed", "bad-signature", "bad-signature"]


def test_reasons_are_capped() -> None:
    many = {f"r{i:03d}": i + 1 for i in range(200)}
    capped = queries.cap_reasons(many)
    assert len(capped) == queries.MAX_REASONS and "other" in capped
    assert sum(capped.values()) == sum(many.values()) and "r199" in capped


def test_counters_count_what_arrives_and_never_go_down(db: Path) -> None:
    counter = queries.IngestCounter("f")
    conn = queries.connect_read_only(db, 1.0)
    counter.update(conn)
    assert counter.totals == {"metrics": 10, "events": 3}
    assert counter.rejected == {"bad-signature": 2, "malformed": 1}
    writer = sqlite3.connect(db)
    writer.execute("DELETE FROM metrics WHERE seq <= 5")  # pruned
    writer.commit()
    counter.update(conn)
    assert counter.totals["metrics"] == 10
    store = TelemetryStore(db)
    store.add_metrics("f", sample("a", 50, 5000.0), 1.0)
    store.flush()
    store.close()
    counter.update(conn)
    assert counter.totals == {"metrics": 11, "events": 3}
