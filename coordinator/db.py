"""The coordinator's SQLite database: how a connection is opened, and the schema and migrations of
every store that keeps its tables in it (registry, telemetry, rollouts).

Several processes share one database file: the coordinator service polls it while the CLI's
``release``, ``deploy`` and ``rollout`` write to it. WAL mode lets readers and one writer proceed
together, and a busy timeout makes writers queue instead of failing. Within a process a
connection is shared by threads (``check_same_thread=False``) under its ``Db.lock``; each store
opens its own connection, so the telemetry writer's batches never wait behind a registry read.

The schemas are created with ``if_not_exists`` and migrated in place, so a database made by an
older coordinator opens: columns added later are added (NULL, or a default, in old rows), and the
releases table of a database from before variants gets its ``variant`` column and primary key.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import sqlite_utils

BUSY_TIMEOUT_S = 30.0

_RELEASE_COLUMNS: dict[str, type] = {
    "fleet": str,
    "name": str,
    "version": int,
    "size": int,
    "sha256": str,
    "chunk_size": int,
    "n_chunks": int,
    "block_chunks": int,
    "manifest": bytes,
    "release_id": bytes,
    "blob_path": str,
    "created": float,
    "variant": str,
}
RELEASE_COLUMNS = tuple(_RELEASE_COLUMNS)
RELEASE_KEY = ("fleet", "name", "version", "variant")

DEVICE_COLUMNS: dict[str, type] = {
    "fleet": str,
    "device_id": str,
    "online": int,
    "last_seen": float,
    "state": str,
    "model": str,
    "version": int,
    "chunks_held": int,
    "chunks_total": int,
    "reason": str,
    "active": str,
    "rejections": int,
    "boot": str,
    "agent": str,
    "profile": str,  # JSON: what the device reported about itself (tags, RAM, ...)
    "updated": float,
    # messages the coordinator's per-device rate limits dropped, in total, and the last time
    "limited_requests": int,
    "limited_reports": int,
    "limited_at": float,
    # the device's clock minus the coordinator's (clock_skew), and when it was last observed
    "clock_skew": float,
    "clock_checked": float,
}
DEVICE_KEY = ("fleet", "device_id")

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

_MODEL_METRICS_COLUMNS: dict[str, type] = {
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

#: drift samples (protocol.DriftSample): window statistics, never texts or vectors
_DRIFT_COLUMNS: dict[str, type] = {
    "fleet": str,
    "device": str,
    "boot": str,
    "seq": int,
    "ts": float,
    "hist": int,
    "received_at": float,
    "model": str,
    "version": int,
    "variant": str,
    "count": int,
    "cos_mean": float,
    "cos_var": float,
    "n_directions": int,
    "n_bins": int,
    "bins": bytes,  # n_directions x n_bins counts, row by row, int32 little-endian
    "proj_mean": bytes,  # n_directions float64 little-endian, or NULL (differential privacy)
    "epsilon": float,
}

#: The telemetry tables: columns, and the columns that identify a message (a UNIQUE index).
TELEMETRY_TABLES: dict[str, tuple[dict[str, type], tuple[str, ...]]] = {
    "metrics": (_METRICS_COLUMNS, ("fleet", "device", "boot", "seq")),
    "model_metrics": (
        _MODEL_METRICS_COLUMNS,
        ("fleet", "device", "boot", "seq", "model", "version"),
    ),
    "events": (_EVENT_COLUMNS, ("fleet", "device", "boot", "seq")),
    "drift": (_DRIFT_COLUMNS, ("fleet", "device", "boot", "seq")),
}

ROLLOUT_COLUMNS: dict[str, type] = {
    "fleet": str,
    "name": str,
    "version": int,
    "base": int,
    "selector": str,
    "stages": str,
    "soak": float,
    "max_failure_rate": float,
    "max_error_rate": float,
    "max_p95_ms": float,
    "max_p95_ratio": float,
    "rate": float,
    "stage_timeout": float,
    "state": str,
    "stage": int,
    "ppm": int,
    "stage_ppms": str,
    "stage_started": float,
    "soak_started": float,
    "reason": str,
    "created": float,
    "updated": float,
    "gate_report": str,
    "rev": int,
    "synced": int,
    "max_drift": float,  # added in issue 18: last, so migrated tables have the same order
}


class Db:
    """One connection to the database at ``path``, shared by threads under ``lock``.

    ``relaxed=True`` (telemetry): WAL with ``synchronous = NORMAL``, so a commit does not wait
    for fsync (the WAL is synced at checkpoints). The database stays consistent; an OS crash or
    power cut may lose the last batches, which for telemetry (samples every minute per device) is
    the right trade for ingest rate. Releases, deployments and rollouts keep the default FULL.
    """

    def __init__(self, path: Path, *, relaxed: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, check_same_thread=False)
        self.sql = sqlite_utils.Database(conn)
        self.sql.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        self.sql.enable_wal()
        if relaxed:
            self.sql.execute("PRAGMA synchronous = NORMAL")
        #: Reentrant: a store method holding it may call another of the same connection.
        self.lock = threading.RLock()

    def close(self) -> None:
        with self.lock:
            self.sql.close()


class Store:
    """The base of the stores that keep their tables on one ``Db`` (see ``registry.Registry``:
    the registry's four stores share its connection)."""

    def __init__(self, db: Db) -> None:
        self._db = db

    @property
    def db_path(self) -> Path:
        return self._db.path

    def close(self) -> None:
        self._db.close()


# --- schemas and migrations ------------------------------------------------------------------
def create_registry_tables(db: sqlite_utils.Database) -> None:
    """Releases, deployments and the index sequence, variant rules and fleet configuration,
    device rows."""
    _create_releases(db)
    db.table("fleet_config").create(
        {"fleet": str, "selector": str, "settings": str, "updated": float},
        pk=("fleet", "selector"),
        if_not_exists=True,
    )
    db.table("variant_rules").create(
        {"fleet": str, "name": str, "rules": str, "default_variant": str},
        pk=("fleet", "name"),
        if_not_exists=True,
    )
    db.table("deployments").create(
        {"fleet": str, "name": str, "version": int, "deployed_at": float, "spec": str},
        pk=("fleet", "name"),
        if_not_exists=True,
    )
    db.table("index_state").create(
        {"fleet": str, "seq": int, "published_at": float}, pk="fleet", if_not_exists=True
    )
    db.table("devices").create(DEVICE_COLUMNS, pk=DEVICE_KEY, if_not_exists=True)
    # databases made before a column existed get it (NULL in old rows)
    for table, columns in (("deployments", {"spec": str}), ("devices", DEVICE_COLUMNS)):
        present = db.table(table).columns_dict
        for column, kind in columns.items():
            if column not in present:
                db.table(table).add_column(column, kind)


def _create_releases(db: sqlite_utils.Database) -> None:
    db.table("releases").create(
        _RELEASE_COLUMNS,
        pk=RELEASE_KEY,
        not_null={"manifest", "release_id", "blob_path", "variant"},
        defaults={"variant": ""},
        if_not_exists=True,
    )
    releases = db.table("releases")
    if "variant" not in releases.columns_dict:  # made before variants: one build a version
        releases.add_column("variant", str, not_null_default="")
    if releases.pks != list(RELEASE_KEY):
        releases.transform(pk=RELEASE_KEY)


def create_telemetry_tables(db: sqlite_utils.Database) -> None:
    """Metrics samples, per-model statistics and events, each with a UNIQUE index on what
    identifies a message and an index on its age (for pruning), plus the indexes of the
    readers (latest sample per device, health windows, events by kind)."""
    for table, (columns, unique) in TELEMETRY_TABLES.items():
        t = db.table(table)
        t.create(columns, if_not_exists=True)
        t.create_index(unique, index_name=f"{table}_identity", unique=True, if_not_exists=True)
        t.create_index(["fleet", "received_at"], index_name=f"{table}_age", if_not_exists=True)
    db.table("metrics").create_index(
        ["fleet", "device", "ts"], index_name="metrics_latest", if_not_exists=True
    )
    db.table("events").create_index(
        ["fleet", "event", "ts"], index_name="events_kind", if_not_exists=True
    )
    db.table("drift").create_index(["fleet", "ts"], index_name="drift_ts", if_not_exists=True)
    _create_health_indexes(db)


#: The health queries' (``telemetry_queries.health``) covering indexes: each answers its query
#: from the index alone over the window, without reading a table row per sample (at 10,000
#: devices of 60 samples, 1.9 s before them, see docs/BENCHMARKS.md). The columns after ``ts``
#: are what the query reads; ``model_metrics_ts`` (fleet, ts), their prefix, is dropped.
HEALTH_INDEXES: dict[str, tuple[str, tuple[str, ...]]] = {
    "model_metrics_health": (
        "model_metrics",
        ("fleet", "ts", "model", "version", "device", "inferences", "errors", "latency_p95_ms"),
    ),
    "metrics_window": ("metrics", ("fleet", "ts", "device", "active")),
}


def _create_health_indexes(db: sqlite_utils.Database) -> None:
    """Made on a database that lacks them (a one-off cost on an old one: about 1.3 s for
    600,000 samples), by whichever process opens the telemetry store first."""
    for name, (table, columns) in HEALTH_INDEXES.items():
        db.table(table).create_index(list(columns), index_name=name, if_not_exists=True)
    db.execute("DROP INDEX IF EXISTS model_metrics_ts")


def create_rollout_tables(db: sqlite_utils.Database) -> None:
    """One row per (fleet, model, version) rollout."""
    rollouts = db.table("rollouts")
    rollouts.create(ROLLOUT_COLUMNS, pk=("fleet", "name", "version"), if_not_exists=True)
    present = rollouts.columns_dict  # made before a gate existed: it gets the column (NULL)
    for column, kind in ROLLOUT_COLUMNS.items():
        if column not in present:
            rollouts.add_column(column, kind)
