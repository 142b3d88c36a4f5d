"""One read of the coordinator's database, for the snapshot reader: the fleet (the data of
``modelcast status --json`` and ``modelcast rollout status --json``, so that ``/api`` has their
shapes), releases, per-device figures and counters; and, for the devices whose page is open,
their history and telemetry series.

Only the snapshot reader's thread calls it (``snapshot.SnapshotReader``), once per interval
whatever the number of open pages.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coordinator.db import Db
from coordinator.rollout_status import rollout_reports
from coordinator.status import fleet_status
from coordinator.telemetry_queries import TelemetryReader

from . import queries
from .gates import live_reading

#: how long the dashboard's own connection waits for a lock before the read fails
BUSY_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class FleetData:
    """Everything the fleet, releases, rollouts and health pages and ``/metrics`` show."""

    status: Mapping[str, Any]  # coordinator.status.fleet_status
    rollouts: list[dict[str, Any]]  # coordinator.rollout_status reports, + "live_gates"
    releases: list[dict[str, Any]]
    figures: Mapping[str, dict[str, Any]]  # device -> inferences, errors in the window
    rejections: Mapping[str, int]  # rejected events in retained telemetry, by reason
    ingested: Mapping[str, int]  # telemetry rows stored since counting began: metrics, events
    rejected_total: Mapping[str, int]  # rejected events since counting began, by reason
    window: float
    read_seconds: float = field(default=0.0, compare=False)


@dataclass(frozen=True)
class DeviceDetail:
    device: str
    window: float
    events: list[dict[str, Any]]
    series: list[dict[str, Any]]
    rejections: Mapping[str, int]
    about: Mapping[str, Any] | None  # agent, boot, profile; None: no such device


class DatabaseSource:
    """Reads ``db_path`` for ``fleet``; health and per-device figures over ``window`` seconds."""

    def __init__(self, db_path: Path, fleet: str, window: float) -> None:
        self.db_path = Path(db_path)
        self.fleet = fleet
        self.window = window
        self._ingest = queries.IngestCounter(fleet)

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """A read-only connection for one read, closed after it: between reads the dashboard
        holds nothing open on the database (as the CLI's commands do not)."""
        conn = queries.connect_read_only(self.db_path, BUSY_TIMEOUT_S)
        try:
            yield conn
        finally:
            conn.close()

    def read_fleet(self) -> FleetData:
        started = time.perf_counter()
        since = time.time() - self.window
        status = fleet_status(self.db_path, self.fleet, since=since)
        reports = rollout_reports(self.db_path, self.fleet)
        self._live_gates(reports)
        with self._connection() as conn:
            releases = queries.releases(conn, self.fleet)
            figures = queries.device_figures(conn, self.fleet, since)
            rejections = queries.rejections(conn, self.fleet)
            self._ingest.update(conn)
        return FleetData(
            status=status,
            rollouts=reports,
            releases=releases,
            figures=figures,
            rejections=rejections,
            ingested=dict(self._ingest.totals),
            rejected_total=dict(self._ingest.rejected),
            window=self.window,
            read_seconds=time.perf_counter() - started,
        )

    def _live_gates(self, reports: list[dict[str, Any]]) -> None:
        """Add each soaking rollout's gate reading now (``live_gates``; None otherwise)."""
        soaking = [r for r in reports if r.get("soak_started") is not None]
        reader = TelemetryReader(Db(self.db_path)) if soaking else None
        try:
            for report in reports:
                health = []
                if reader is not None and report in soaking:
                    health = reader.health(self.fleet, report["soak_started"])
                report["live_gates"] = live_reading(report, health)
        finally:
            if reader is not None:
                reader.close()

    def read_device(self, device: str, window: float) -> DeviceDetail:
        with self._connection() as conn:
            return DeviceDetail(
                device=device,
                window=window,
                events=queries.device_events(conn, self.fleet, device),
                series=queries.device_series(conn, self.fleet, device, window),
                rejections=queries.rejections(conn, self.fleet, device),
                about=queries.device_profile(conn, self.fleet, device),
            )

    def close(self) -> None:
        """Nothing stays open between reads."""
