"""The coordinator's database module: one connection factory, and the schema and migrations of
every store, so databases made by earlier coordinators still open."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import sqlite_utils

import protocol
from coordinator.db import BUSY_TIMEOUT_S, DEVICE_COLUMNS, HEALTH_INDEXES, ROLLOUT_COLUMNS, Db
from coordinator.registry import Registry
from coordinator.rollout_store import RolloutStore
from coordinator.telemetry_store import TelemetryStore

#: The schema a new database gets (the devices table as issue 13 extended it, the health
#: indexes of issue 14).
SCHEMA = Path(__file__).with_name("coordinator_schema.sql")
#: The columns issue 13 added to the devices table: without them, and with the telemetry
#: indexes of before issue 14, the schema is the one made before (also before the stores shared
#: one database module), and such databases must open.
ADDED_IN_I13 = ("limited_requests", "limited_reports", "limited_at", "clock_skew", "clock_checked")
#: Issue 14 replaced this index by the covering ones of ``HEALTH_INDEXES``.
DROPPED_IN_I14 = 'CREATE INDEX "model_metrics_ts"\n    ON "model_metrics" ("fleet", "ts")'


def statements(schema: str) -> list[str]:
    return [s.strip() for s in schema.split(";\n") if s.strip()]


def schema_before_i14() -> list[str]:
    kept = [
        s
        for s in statements(SCHEMA.read_text())
        if not _made_in_i14(s) and 'ON "drift"' not in s and 'TABLE "drift"' not in s
    ]
    return sorted([*kept, DROPPED_IN_I14], key=lambda s: (not s.startswith("CREATE TABLE"), s))


def _made_in_i14(statement: str) -> bool:
    return any(f'INDEX "{name}"' in statement for name in HEALTH_INDEXES)


#: Issue 18 added the drift table (and its indexes) and the rollouts' max_drift column.
ADDED_IN_I18 = ("max_drift",)


def schema_before_i13() -> str:
    return "".join(
        "".join(
            line
            for line in statement.splitlines(keepends=True)
            if not any(f'"{column}"' in line for column in (*ADDED_IN_I13, *ADDED_IN_I18))
        )
        + ";\n"
        for statement in schema_before_i14()
    )


def schema_of(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return [
            sql
            for (sql,) in conn.execute(
                "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY type DESC, name"
            )
        ]
    finally:
        conn.close()


def open_all(db: Path) -> tuple[Registry, TelemetryStore, RolloutStore]:
    return Registry(db), TelemetryStore(db), RolloutStore(db)


def close_all(*stores: Registry | TelemetryStore | RolloutStore) -> None:
    for store in stores:
        store.close()


def test_a_new_database_has_the_recorded_schema(tmp_path: Path) -> None:
    close_all(*open_all(tmp_path / "c.db"))
    assert schema_of(tmp_path / "c.db") == statements(SCHEMA.read_text())


def test_a_database_of_the_schema_of_before_opens_with_its_rows(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    conn.executescript(schema_before_i13())
    conn.execute(
        "INSERT INTO releases VALUES ('f', 'm', 1, 10, 'aa', 4096, 1, 16, x'00', x'01', "
        "'/nowhere', 1.0, '')"
    )
    conn.execute("INSERT INTO deployments VALUES ('f', 'm', 1, 2.0, NULL)")
    conn.execute("INSERT INTO index_state VALUES ('f', 7, 2.0)")
    conn.execute(
        "INSERT INTO devices (fleet, device_id, online, last_seen) VALUES ('f', 'd1', 1, 3.0)"
    )
    conn.execute(
        "INSERT INTO events (fleet, device, boot, seq, ts, event, received_at) "
        "VALUES ('f', 'd1', 'b', 1, 4.0, 'activated', 4.0)"
    )
    conn.commit()
    conn.close()
    before = schema_of(db)
    registry, telemetry, rollouts = open_all(db)
    try:
        record = registry.release("f", "m", 1)
        assert record is not None and record.blob_path == "/nowhere"
        assert registry.deployments("f") == {"m": 1}
        assert registry.next_index_seq("f") == 8
        [device] = registry.devices("f")
        assert device["device_id"] == "d1" and device["limited_reports"] is None
        assert telemetry.count("events", "f") == 1
        assert rollouts.all("f") == []
    finally:
        close_all(registry, telemetry, rollouts)
    migrated = schema_of(db)
    # the devices and rollouts tables have the columns added since, NULL in old rows; the
    # health indexes replaced the one they cover; the drift table is new; nothing else changed
    changed = ('"devices"', '"rollouts"', '"drift"')
    assert [s for s in migrated if not any(c in s for c in changed) and not _made_in_i14(s)] == [
        s for s in before if not any(c in s for c in changed) and s != DROPPED_IN_I14
    ]
    assert DROPPED_IN_I14 in before and DROPPED_IN_I14 not in migrated
    assert sorted(s for s in migrated if _made_in_i14(s)) == [
        s for s in statements(SCHEMA.read_text()) if _made_in_i14(s)
    ]
    tables = sqlite_utils.Database(db)
    assert list(tables.table("rollouts").columns_dict) == list(ROLLOUT_COLUMNS)
    assert tables.table("drift").exists()
    assert list(sqlite_utils.Database(db).table("devices").columns_dict) == list(DEVICE_COLUMNS)
    close_all(*open_all(db))
    assert schema_of(db) == migrated  # and opening it again changes nothing


def test_columns_added_later_are_added_to_an_old_database(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    conn.execute(
        "CREATE TABLE deployments (fleet TEXT, name TEXT, version INTEGER, deployed_at FLOAT, "
        "PRIMARY KEY (fleet, name))"
    )
    conn.execute("INSERT INTO deployments VALUES ('f', 'm', 1, 1.0)")
    conn.execute(
        "CREATE TABLE devices (fleet TEXT, device_id TEXT, online INTEGER, last_seen FLOAT, "
        "updated FLOAT, PRIMARY KEY (fleet, device_id))"
    )
    conn.execute("INSERT INTO devices VALUES ('f', 'd1', 1, 5.0, 5.0)")
    conn.commit()
    conn.close()
    registry = Registry(db)
    try:
        assert registry.deployment_entries("f")["m"].spec is None
        [row] = registry.devices("f")
        assert row["profile"] == {} and row["last_seen"] == 5.0
        registry.record_status(
            "f", protocol.DeviceStatus("d1", online=True, profile={"tags": {"a": "b"}})
        )
        [row] = registry.devices("f")
        assert row["profile"] == {"tags": {"a": "b"}}
    finally:
        registry.close()


def test_connections_wait_for_a_writer_and_only_telemetry_skips_fsync(tmp_path: Path) -> None:
    durable, relaxed = Db(tmp_path / "sub" / "c.db"), Db(tmp_path / "sub" / "c.db", relaxed=True)
    try:
        for db in (durable, relaxed):
            assert db.sql.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            timeout = db.sql.execute("PRAGMA busy_timeout").fetchone()
            assert timeout == (int(BUSY_TIMEOUT_S * 1000),)
        assert durable.sql.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
        assert relaxed.sql.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
    finally:
        durable.close()
        relaxed.close()


def test_a_connection_is_shared_by_threads(tmp_path: Path) -> None:
    db = Db(tmp_path / "c.db")
    db.sql.execute("CREATE TABLE t (x INTEGER)")
    errors: list[BaseException] = []

    def write(k: int) -> None:
        try:
            for i in range(20):
                with db.lock, db.sql.conn:
                    db.sql.conn.execute("INSERT INTO t VALUES (?)", [k * 100 + i])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    try:
        assert errors == []
        assert db.sql.execute("SELECT count(*) FROM t").fetchone() == (60,)
    finally:
        db.close()


def test_release_blobs_live_beside_the_database(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "c.db")
    try:
        assert registry.blob_dir == tmp_path / "c.blobs"
        assert registry.db_path == tmp_path / "c.db"
    finally:
        registry.close()
