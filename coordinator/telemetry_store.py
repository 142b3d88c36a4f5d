"""Telemetry in SQLite: metrics samples, per-model statistics and device events, de-duplicated,
written in batches, pruned by age; and the per-version health figures a rollout gates on.

Delivery is at-least-once (QoS 1, and a device replays its on-disk queue after an outage), so the
same message can arrive twice. ``(fleet, device, boot, seq)`` identifies a telemetry message;
every table has a UNIQUE index on it and rows go in with ``INSERT OR IGNORE``, so a duplicate is
dropped by SQLite however late it comes. An event without a sequence number (``seq`` 0: senders
that predate telemetry numbering) is stored with ``seq`` NULL and is never treated as a
duplicate: SQLite's UNIQUE indexes consider NULLs distinct.

The store is passive: the coordinator's worker thread ``add_*``s decoded messages (cheap, only
appends to a buffer), and its writer thread ``wait_due``s and ``flush``es the buffer in one
transaction every ``flush_interval`` seconds or ``batch_rows`` rows, whichever comes first, and
calls ``maybe_prune``. ``health`` and ``latest_metrics`` are read by ``modelcast status`` from
another process (WAL mode: readers never block the writer).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from protocol import DeviceEvent, MetricsSample

log = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 30.0
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
ACTIVATION_FAILED = "activation-failed"

_METRICS_COLUMNS: dict[str, type] = {
    "fleet": str,
    "device": str,
    "boot": str,
    "seq": int,
    "ts": float,
    "hist": int,
    "received_at": float,
    "interval_s": float,
    "uptime_s": float,
    "cpu_pct": float,
    "rss_mb": float,
    "disk_free_mb": float,
    "reconnects": int,
    "bytes_received": int,
    "inferences": int,
    "errors": int,
    "latency_p50_ms": float,
    "latency_p95_ms": float,
    "dropped": int,
    "active": str,  # JSON {name: version}
}

_MODEL_COLUMNS: dict[str, type] = {
    "fleet": str,
    "device": str,
    "boot": str,
    "seq": int,
    "ts": float,
    "model": str,
    "version": int,
    "inferences": int,
    "errors": int,
    "latency_p50_ms": float,
    "latency_p95_ms": float,
    "received_at": float,
}

_EVENT_COLUMNS: dict[str, type] = {
    "fleet": str,
    "device": str,
    "boot": str,
    "seq": int,
    "ts": float,
    "event": str,
    "reason": str,
    "detail": str,
    "topic": str,
    "model": str,
    "version": int,
    "hist": int,
    "dropped": int,
    "received_at": float,
}

_TABLES: dict[str, tuple[dict[str, type], tuple[str, ...]]] = {
    "metrics": (_METRICS_COLUMNS, ("fleet", "device", "boot", "seq")),
    "model_metrics": (_MODEL_COLUMNS, ("fleet", "device", "boot", "seq", "model", "version")),
    "events": (_EVENT_COLUMNS, ("fleet", "device", "boot", "seq")),
}


def _insert_sql(table: str) -> str:
    columns = list(_TABLES[table][0])
    return (
        f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) "
        f"VALUES ({', '.join('?' for _ in columns)})"
    )


_INSERT = {table: _insert_sql(table) for table in _TABLES}


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


class TelemetryStore:
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
        if retention_days <= 0:
            raise ValueError(f"retention must be positive, got {retention_days} days")
        if batch_rows < 1:
            raise ValueError("batch_rows must be at least 1")
        self.db_path = Path(db_path)
        self.retention_days = retention_days
        self.batch_rows = batch_rows
        self.flush_interval = flush_interval
        self.max_buffer_rows = max_buffer_rows
        self.prune_interval = prune_interval
        self._clock = clock
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.db_path), timeout=BUSY_TIMEOUT_S, check_same_thread=False)
        self._db = sqlite_utils.Database(conn)
        self._db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        self._db.enable_wal()
        # WAL + NORMAL: a commit does not wait for fsync (the WAL is synced at checkpoints).
        # The database stays consistent; an OS crash or power cut may lose the last batches,
        # which for telemetry (samples every minute per device) is the right trade for ingest
        # rate. The registry (releases, deployments) keeps the default FULL.
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db_lock = threading.Lock()  # one connection, shared by the writer and readers
        self._create_tables()
        # The buffer, guarded by _cond; the writer waits on it.
        self._cond = threading.Condition()
        self._buffer: dict[str, list[tuple[Any, ...]]] = {table: [] for table in _TABLES}
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

    def close(self) -> None:
        with self._db_lock:
            self._db.close()

    def _create_tables(self) -> None:
        with self._db_lock:
            for table, (columns, unique) in _TABLES.items():
                t = self._db.table(table)
                t.create(columns, if_not_exists=True)
                t.create_index(
                    unique, index_name=f"{table}_identity", unique=True, if_not_exists=True
                )
                t.create_index(
                    ["fleet", "received_at"], index_name=f"{table}_age", if_not_exists=True
                )
            self._db.table("metrics").create_index(
                ["fleet", "device", "ts"], index_name="metrics_latest", if_not_exists=True
            )
            self._db.table("model_metrics").create_index(
                ["fleet", "ts"], index_name="model_metrics_ts", if_not_exists=True
            )
            self._db.table("events").create_index(
                ["fleet", "event", "ts"], index_name="events_kind", if_not_exists=True
            )

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
            batch, self._buffer = self._buffer, {table: [] for table in _TABLES}
            taken, self._rows, self._since = self._rows, 0, None
        started = time.monotonic()
        inserted: dict[str, int] = {}
        try:
            with self._db_lock, self._db.conn:  # one transaction, committed on exit
                for table, rows in batch.items():
                    if rows:
                        cursor = self._db.conn.executemany(_INSERT[table], rows)
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
        for table in _TABLES:
            while True:
                sql = (
                    f"DELETE FROM {table} WHERE rowid IN "
                    f"(SELECT rowid FROM {table} WHERE {where} LIMIT {PRUNE_BATCH})"
                )
                with self._db_lock, self._db.conn:
                    n = self._db.conn.execute(sql, params).rowcount
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

    # --- reading -------------------------------------------------------------------------
    def _query(self, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        with self._db_lock:
            return list(self._db.query(sql, params))

    def health(self, fleet: str, since: float | None = None) -> list[dict[str, Any]]:
        """Health of every model version of ``fleet`` seen since ``since`` (device time, ``ts``;
        None: everything retained), sorted by model and version. One dict per version:

        * ``devices``: distinct devices that, in the window, ran it (it was in a metrics
          sample's ``active``), reported inference statistics for it, or failed to activate it;
        * ``inferences``, ``errors``: sums of the per-model statistics of every sample;
        * ``error_rate``: ``errors / inferences`` (an error is a failed inference, so it is
          also counted in ``inferences``); None when there were no inferences: no traffic is
          not the same as no errors;
        * ``latency_p95_ms``: the inference-weighted mean of the per-sample p95 latencies,
          ``sum(p95_i * n_i) / sum(n_i)`` over samples with a p95, where ``n_i`` is the number
          of successful inferences of the sample (``inferences - errors``: the edge measures
          latency on successful calls only, so those are what its p95 summarizes; without
          errors it is simply ``inferences``). None if no sample has a p95. This approximates
          the p95 of all inferences (the true figure needs the raw latencies, which are not
          sent): exact when every sample saw the same latency distribution, and a device with
          a bad tail moves it in proportion to its traffic rather than to its number of
          samples. It is not an upper bound: a short spike in one sample is diluted;
        * ``activation_failures``: ``activation-failed`` events naming that model and version.
        """
        window = "" if since is None else " AND ts >= ?"
        p: list[Any] = [fleet] if since is None else [fleet, since]
        stats = self._query(
            "SELECT model, version, sum(inferences) AS inferences, sum(errors) AS errors, "
            # a p95 summarizes the latencies of the successful calls only
            "sum(CASE WHEN latency_p95_ms IS NOT NULL AND inferences > errors "
            "THEN latency_p95_ms * (inferences - errors) END) AS p95_sum, "
            "sum(CASE WHEN latency_p95_ms IS NOT NULL AND inferences > errors "
            "THEN inferences - errors END) AS p95_weight "
            f"FROM model_metrics WHERE fleet = ?{window} GROUP BY model, version",
            p,
        )
        failures = self._query(
            "SELECT model, version, count(*) AS n FROM events "
            f"WHERE fleet = ? AND event = '{ACTIVATION_FAILED}' AND model IS NOT NULL "
            f"AND version IS NOT NULL{window} GROUP BY model, version",
            p,
        )
        devices = self._query(
            "SELECT model, version, count(DISTINCT device) AS n FROM ("
            f"SELECT model, version, device FROM model_metrics WHERE fleet = ?{window} "
            "UNION SELECT j.key, j.value, m.device FROM metrics AS m, json_each(m.active) AS j "
            f"WHERE m.fleet = ?{window.replace('ts', 'm.ts')} "
            "AND json_valid(m.active) AND j.type = 'integer' "
            f"UNION SELECT model, version, device FROM events WHERE fleet = ?{window} "
            f"AND event = '{ACTIVATION_FAILED}' AND model IS NOT NULL AND version IS NOT NULL"
            ") GROUP BY model, version",
            p * 3,
        )
        out: dict[tuple[str, int], dict[str, Any]] = {}

        def row(model: str, version: int) -> dict[str, Any]:
            key = (model, int(version))
            if key not in out:
                out[key] = {
                    "model": model,
                    "version": int(version),
                    "devices": 0,
                    "inferences": 0,
                    "errors": 0,
                    "error_rate": None,
                    "latency_p95_ms": None,
                    "activation_failures": 0,
                }
            return out[key]

        for r in stats:
            h = row(r["model"], r["version"])
            h["inferences"] = int(r["inferences"] or 0)
            h["errors"] = int(r["errors"] or 0)
            if h["inferences"]:
                h["error_rate"] = h["errors"] / h["inferences"]
            if r["p95_weight"]:
                h["latency_p95_ms"] = float(r["p95_sum"]) / float(r["p95_weight"])
        for r in failures:
            row(r["model"], r["version"])["activation_failures"] = int(r["n"])
        for r in devices:
            row(r["model"], r["version"])["devices"] = int(r["n"])
        return [out[key] for key in sorted(out)]

    def event_devices(
        self, fleet: str, event: str, model: str, version: int | None, since: float
    ) -> set[str]:
        """Devices that reported ``event`` for ``model@version`` since ``since`` (device time):
        the state topic keeps only each device's latest state, events keep them all."""
        rows = self._query(
            "SELECT DISTINCT device FROM events WHERE fleet = ? AND event = ? AND model = ? "
            "AND version IS ? AND ts >= ?",
            [fleet, event, model, version, since],
        )
        return {r["device"] for r in rows}

    def latest_metrics(self, fleet: str) -> dict[str, dict[str, Any]]:
        """Per device, its sample with the latest ``ts``: ``ts``, ``cpu_pct``, ``rss_mb``,
        ``disk_free_mb``, ``uptime_s``."""
        rows = self._query(
            # SQLite: with max(), the bare columns come from the row holding the maximum.
            "SELECT device, max(ts) AS ts, cpu_pct, rss_mb, disk_free_mb, uptime_s "
            "FROM metrics WHERE fleet = ? GROUP BY device",
            [fleet],
        )
        return {
            r["device"]: {k: r[k] for k in ("ts", "cpu_pct", "rss_mb", "disk_free_mb", "uptime_s")}
            for r in rows
        }

    def count(self, table: str, fleet: str | None = None) -> int:
        """Rows of one of the telemetry tables (of ``fleet``, or all)."""
        if table not in _TABLES:
            raise ValueError(f"no telemetry table {table!r}")
        where = "" if fleet is None else " WHERE fleet = ?"
        params = [] if fleet is None else [fleet]
        rows = self._query(f"SELECT count(*) AS n FROM {table}{where}", params)
        return int(rows[0]["n"])
