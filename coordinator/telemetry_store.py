"""Telemetry in SQLite: metrics samples, per-model statistics and device events, de-duplicated,
written in batches, pruned by age (the reading side, health figures and all, is
``telemetry_queries.TelemetryReader``, which this store extends).

Delivery is at-least-once (QoS 1, and a device replays its on-disk queue after an outage), so the
same message can arrive twice. ``(fleet, device, boot, seq)`` identifies a telemetry message;
every table has a UNIQUE index on it and rows go in with ``INSERT OR IGNORE``, so a duplicate is
dropped by SQLite however late it comes. An event without a sequence number (``seq`` 0: senders
that predate telemetry numbering) is stored with ``seq`` NULL and is never treated as a
duplicate: SQLite's UNIQUE indexes consider NULLs distinct.

The store is passive: the coordinator's ingestion ``add_*``s decoded messages on the MQTT network
thread (cheap, only appends to a buffer under ``_cond``), and its telemetry writer thread
``wait_due``s and ``flush``es the buffer in one transaction every ``flush_interval`` seconds or
``batch_rows`` rows, whichever comes first, and calls ``maybe_prune``. Locks: ``_cond`` (the
buffer and the counters) and the connection's ``Db.lock`` are never held together.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from protocol import DeviceEvent, DriftSample, MetricsSample

from .db import TELEMETRY_TABLES, Db, create_telemetry_tables
from .telemetry_queries import ACTIVATION_FAILED, TelemetryReader

__all__ = [
    "ACTIVATION_FAILED",
    "DEFAULT_RETENTION_DAYS",
    "TelemetryStats",
    "TelemetryStore",
    "check_retention",
]

log = logging.getLogger(__name__)

DEFAULT_RETENTION_DAYS = 30.0
#: flush when this many rows are buffered ...
BATCH_ROWS = 500
#: ... or when the oldest buffered row is this old
FLUSH_INTERVAL_S = 0.5
#: rows kept in memory while the database cannot be written; beyond it new rows are dropped
MAX_BUFFER_ROWS = 100_000
#: pruning runs at most this often
PRUNE_INTERVAL_S = 60.0
#: rows deleted per transaction when pruning, so other writers get a turn
PRUNE_BATCH = 10_000


def _insert_sql(table: str) -> str:
    columns = list(TELEMETRY_TABLES[table][0])
    return (
        f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) "
        f"VALUES ({', '.join('?' for _ in columns)})"
    )


_INSERT = {table: _insert_sql(table) for table in TELEMETRY_TABLES}


def check_retention(days: float) -> None:
    if days <= 0:
        raise ValueError(f"retention must be positive, got {days} days")


@dataclass(frozen=True)
class TelemetryStats:
    """Counters since the store was opened (messages, not rows: a sample with three models is
    one sample)."""

    samples_stored: int
    events_stored: int
    duplicates: int
    dropped: int
    pending: int
    flushes: int
    pruned: int


class TelemetryStore(TelemetryReader):
    def __init__(
        self,
        db_path: Path,
        *,
        retention_days: float = DEFAULT_RETENTION_DAYS,
        batch_rows: int = BATCH_ROWS,
        flush_interval: float = FLUSH_INTERVAL_S,
        max_buffer_rows: int = MAX_BUFFER_ROWS,
        prune_interval: float = PRUNE_INTERVAL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        check_retention(retention_days)
        if batch_rows < 1:
            raise ValueError("batch_rows must be at least 1")
        self.retention_days = retention_days
        self.batch_rows = batch_rows
        self.flush_interval = flush_interval
        self.max_buffer_rows = max_buffer_rows
        self.prune_interval = prune_interval
        self._clock = clock
        super().__init__(Db(Path(db_path), relaxed=True))
        with self._db.lock:
            create_telemetry_tables(self._db.sql)
            # the health queries sort a row per sample of their window: with a helper thread,
            # 0.31 -> 0.25 s at 10,000 devices of 60 samples
            self._db.sql.execute("PRAGMA threads = 2")
        # The buffer, guarded by _cond; the writer waits on it.
        self._cond = threading.Condition()
        self._buffer: dict[str, list[tuple[Any, ...]]] = {table: [] for table in TELEMETRY_TABLES}
        self._rows = 0
        self._since: float | None = None  # monotonic time the oldest buffered row arrived
        self._woken = False
        self._last_prune: float | None = None
        self._samples_stored = 0
        self._events_stored = 0
        self._duplicates = 0
        self._dropped = 0
        self._flushes = 0
        self._pruned = 0

    # --- buffering (worker thread) -------------------------------------------------------
    def add_metrics(self, fleet: str, sample: MetricsSample, received_at: float) -> bool:
        """Buffer a decoded sample (one ``metrics`` row and one ``model_metrics`` row per model).
        False when the buffer is full and the sample was dropped."""
        key = (fleet, sample.device, sample.boot, sample.seq)
        rows: list[tuple[str, tuple[Any, ...]]] = [
            (
                "metrics",
                (
                    *key,
                    sample.ts,
                    int(sample.hist),
                    received_at,
                    sample.interval_s,
                    sample.uptime_s,
                    sample.cpu_pct,
                    sample.rss_mb,
                    sample.disk_free_mb,
                    sample.reconnects,
                    sample.bytes_received,
                    sample.inferences,
                    sample.errors,
                    sample.latency_p50_ms,
                    sample.latency_p95_ms,
                    sample.dropped,
                    json.dumps(sample.active, sort_keys=True),
                ),
            )
        ]
        for stats in sample.models:
            rows.append(
                (
                    "model_metrics",
                    (
                        *key,
                        sample.ts,
                        stats.model,
                        stats.version,
                        stats.inferences,
                        stats.errors,
                        stats.latency_p50_ms,
                        stats.latency_p95_ms,
                        received_at,
                    ),
                )
            )
        return self._add(rows)

    def add_event(self, fleet: str, event: DeviceEvent, received_at: float) -> bool:
        """Buffer a decoded event. False when the buffer is full and the event was dropped."""
        row = (
            fleet,
            event.device,
            event.boot,
            event.seq or None,  # unnumbered: never a duplicate (NULLs are distinct)
            event.ts,
            event.event,
            event.reason,
            event.detail,
            event.topic,
            event.model,
            event.version,
            int(event.hist),
            event.dropped,
            received_at,
        )
        return self._add([("events", row)])

    def add_drift(self, fleet: str, sample: DriftSample, received_at: float) -> bool:
        """Buffer a decoded drift sample (window statistics only). False when dropped."""
        row = (
            fleet,
            sample.device,
            sample.boot,
            sample.seq,
            sample.ts,
            int(sample.hist),
            received_at,
            sample.model,
            sample.version,
            sample.variant or "",
            sample.count,
            sample.cos_mean,
            sample.cos_var,
            sample.n_directions,
            sample.n_bins,
            np.asarray(sample.bins, dtype="<i4").tobytes(),
            None if sample.proj_mean is None else np.asarray(sample.proj_mean, "<f8").tobytes(),
            sample.epsilon,
        )
        return self._add([("drift", row)])

    def _add(self, rows: list[tuple[str, tuple[Any, ...]]]) -> bool:
        with self._cond:
            if self._rows + len(rows) > self.max_buffer_rows:
                self._dropped += 1
                if self._dropped == 1 or self._dropped % 1000 == 0:
                    log.warning(
                        "telemetry buffer full (%d rows; is the database locked?): %d messages "
                        "dropped so far",
                        self._rows,
                        self._dropped,
                    )
                return False
            for table, row in rows:
                self._buffer[table].append(row)
            first = self._rows == 0
            self._rows += len(rows)
            if first:
                self._since = time.monotonic()
            if first or self._rows >= self.batch_rows:
                self._cond.notify_all()
            return True

    @property
    def pending(self) -> int:
        """Rows buffered and not yet written."""
        with self._cond:
            return self._rows

    def due(self) -> bool:
        with self._cond:
            return self._due_locked() <= 0

    def _due_locked(self) -> float:
        """Seconds until the buffer is due for a flush (<= 0: now; inf: empty)."""
        if self._rows >= self.batch_rows:
            return 0.0
        if self._since is None:
            return float("inf")
        return self._since + self.flush_interval - time.monotonic()

    def wait_due(self, timeout: float) -> bool:
        """Block until the buffer is due for a flush (``batch_rows`` rows, or its oldest row
        ``flush_interval`` old), ``timeout`` passes, or ``wake`` is called. True when due."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                until_due = self._due_locked()
                if until_due <= 0:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._woken:
                    self._woken = False
                    return False
                self._cond.wait(min(remaining, until_due))

    def wake(self) -> None:
        """Make a pending ``wait_due`` return now (e.g. to stop)."""
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    # --- writing (writer thread) ---------------------------------------------------------
    def flush(self) -> int:
        """Write everything buffered in one transaction; returns the rows inserted (duplicates
        are ignored by SQLite and not counted). On a database error the rows are put back in
        front of the buffer and the error is raised."""
        with self._cond:
            if not self._rows:
                return 0
            batch, self._buffer = self._buffer, {table: [] for table in TELEMETRY_TABLES}
            taken, self._rows, self._since = self._rows, 0, None
        started = time.monotonic()
        inserted: dict[str, int] = {}
        try:
            with self._db.lock, self._db.sql.conn:  # one transaction, committed on exit
                for table, rows in batch.items():
                    if rows:
                        cursor = self._db.sql.conn.executemany(_INSERT[table], rows)
                        inserted[table] = max(cursor.rowcount, 0)
        except sqlite3.Error:
            with self._cond:
                for table, rows in batch.items():
                    self._buffer[table][:0] = rows
                self._rows += taken
                self._since = time.monotonic()
            raise
        duplicates = (len(batch["metrics"]) - inserted.get("metrics", 0)) + (
            len(batch["events"]) - inserted.get("events", 0)
        )
        with self._cond:
            self._samples_stored += inserted.get("metrics", 0)
            self._events_stored += inserted.get("events", 0)
            self._duplicates += duplicates
            self._flushes += 1
        total = sum(inserted.values())
        log.debug(
            "telemetry: %d rows written, %d duplicate messages ignored, in %.1f ms",
            total,
            duplicates,
            (time.monotonic() - started) * 1000,
        )
        return total

    def prune(self, fleet: str | None = None, *, now: float | None = None) -> int:
        """Delete rows received more than ``retention_days`` ago (of ``fleet``, or of every
        fleet); returns how many. Age is measured on the coordinator's clock (``received_at``),
        so a device with a wrong clock can neither keep rows forever nor lose them at once."""
        now = self._clock() if now is None else now
        cutoff = now - self.retention_days * 86400.0
        where = "received_at < ?" + (" AND fleet = ?" if fleet is not None else "")
        params: list[Any] = [cutoff] if fleet is None else [cutoff, fleet]
        deleted = 0
        for table in TELEMETRY_TABLES:
            while True:
                sql = (
                    f"DELETE FROM {table} WHERE rowid IN "
                    f"(SELECT rowid FROM {table} WHERE {where} LIMIT {PRUNE_BATCH})"
                )
                with self._db.lock, self._db.sql.conn:
                    n = self._db.sql.conn.execute(sql, params).rowcount
                deleted += max(n, 0)
                if n < PRUNE_BATCH:
                    break
        with self._cond:
            self._pruned += deleted
        if deleted:
            log.info(
                "telemetry: pruned %d rows older than %g days%s",
                deleted,
                self.retention_days,
                f" of fleet {fleet}" if fleet is not None else "",
            )
        return deleted

    def maybe_prune(self, fleet: str | None = None) -> int:
        """``prune``, at most once per ``prune_interval`` (the first call prunes)."""
        mono = time.monotonic()
        if self._last_prune is not None and mono - self._last_prune < self.prune_interval:
            return 0
        self._last_prune = mono
        return self.prune(fleet)

    def stats(self) -> TelemetryStats:
        with self._cond:
            return TelemetryStats(
                samples_stored=self._samples_stored,
                events_stored=self._events_stored,
                duplicates=self._duplicates,
                dropped=self._dropped,
                pending=self._rows,
                flushes=self._flushes,
                pruned=self._pruned,
            )
