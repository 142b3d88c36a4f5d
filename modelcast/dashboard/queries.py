"""What the dashboard reads from the coordinator's database beyond ``modelcast status`` and
``modelcast rollout status``: releases, per-device figures, a device's events and telemetry
series, rejections by reason, and how many telemetry messages were ingested.

Read-only: one ``mode=ro`` connection (it cannot write, even by mistake), used by the
snapshot reader's thread only. The tables and their meaning are in docs/TELEMETRY.md.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from coordinator.release_record import ReleaseRecord
from protocol import ProtocolError

#: how many points a chart gets at most (the window is cut into this many buckets)
CHART_POINTS = 240
#: events shown on a device's page
EVENT_LIMIT = 200
#: a device's reason codes are its own text: more distinct ones than this count as "other"
MAX_REASONS = 50


def connect_read_only(db_path: Path, busy_timeout_s: float) -> sqlite3.Connection:
    conn = sqlite3.connect(
        f"file:{quote(str(Path(db_path).resolve()))}?mode=ro",
        uri=True,
        timeout=busy_timeout_s,
        check_same_thread=False,
    )
    conn.row_factory = sqlite3.Row
    return conn


def _rows(conn: sqlite3.Connection, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(sql, params)]


def releases(conn: sqlite3.Connection, fleet: str) -> list[dict[str, Any]]:
    """Every release of ``fleet`` (each variant its own entry), newest version first."""
    out = []
    for row in _rows(
        conn,
        "SELECT * FROM releases WHERE fleet = ? ORDER BY name, version DESC, variant",
        [fleet],
    ):
        record = ReleaseRecord.from_row(row)
        try:
            kind: str | None = record.model_kind
        except ProtocolError:  # a damaged stored manifest: the coordinator logs it
            kind = None
        out.append(
            {
                "model": record.name,
                "version": record.version,
                "variant": record.variant,
                "kind": kind,
                "size": record.size,
                "sha256": record.sha256,
                "chunk_size": record.chunk_size,
                "chunks": record.n_chunks,
                "created": record.created,
                "release_id": record.short_id.hex(),
            }
        )
    return out


def device_figures(conn: sqlite3.Connection, fleet: str, since: float) -> dict[str, dict[str, Any]]:
    """Per device, its inference calls and errors in samples since ``since`` (device time)."""
    rows = _rows(
        conn,
        "SELECT device, sum(inferences) AS inferences, sum(errors) AS errors FROM metrics "
        "WHERE fleet = ? AND ts >= ? GROUP BY device",
        [fleet, since],
    )
    return {
        r["device"]: {"inferences": int(r["inferences"] or 0), "errors": int(r["errors"] or 0)}
        for r in rows
    }


def rejections(conn: sqlite3.Connection, fleet: str, device: str | None = None) -> dict[str, int]:
    """``rejected`` events in retained telemetry, by reason (of one device, or all)."""
    where = "fleet = ? AND event = 'rejected'" + ("" if device is None else " AND device = ?")
    params = [fleet] if device is None else [fleet, device]
    rows = _rows(
        conn,
        f"SELECT coalesce(reason, '-') AS reason, count(*) AS n FROM events WHERE {where} "
        "GROUP BY reason ORDER BY n DESC, reason",
        params,
    )
    return cap_reasons({r["reason"]: int(r["n"]) for r in rows})


def cap_reasons(counts: dict[str, int]) -> dict[str, int]:
    """The ``MAX_REASONS`` most frequent reasons; the rest add up under ``other``."""
    if len(counts) <= MAX_REASONS:
        return dict(counts)
    ranked = Counter(counts).most_common()
    kept = dict(ranked[: MAX_REASONS - 1])
    kept["other"] = kept.get("other", 0) + sum(n for _r, n in ranked[MAX_REASONS - 1 :])
    return kept


def device_events(conn: sqlite3.Connection, fleet: str, device: str) -> list[dict[str, Any]]:
    """A device's latest events (newest first): its state history as it reported it."""
    return _rows(
        conn,
        "SELECT ts, received_at, event, reason, detail, topic, model, version, hist "
        "FROM events WHERE fleet = ? AND device = ? ORDER BY ts DESC LIMIT ?",
        [fleet, device, EVENT_LIMIT],
    )


def device_profile(conn: sqlite3.Connection, fleet: str, device: str) -> dict[str, Any] | None:
    """What the device said about itself in its status (agent, boot, profile), or None."""
    row = conn.execute(
        "SELECT agent, boot, profile FROM devices WHERE fleet = ? AND device_id = ?",
        [fleet, device],
    ).fetchone()
    if row is None:
        return None
    try:
        profile = json.loads(row["profile"]) if row["profile"] else {}
    except ValueError:
        profile = {}
    return {"agent": row["agent"], "boot": row["boot"], "profile": profile}


def device_series(
    conn: sqlite3.Connection, fleet: str, device: str, window: float
) -> list[dict[str, Any]]:
    """A device's metrics over the ``window`` seconds before its latest sample (device time, so
    a device with a wrong clock still has a chart), averaged into at most ``CHART_POINTS``
    buckets over the span the samples cover: CPU, RSS, p50 and p95 latency, errors and
    inferences."""
    row = conn.execute(
        "SELECT max(ts) FROM metrics WHERE fleet = ? AND device = ?", [fleet, device]
    ).fetchone()
    if row is None or row[0] is None:
        return []
    latest = float(row[0])
    first = conn.execute(
        "SELECT min(ts) FROM metrics WHERE fleet = ? AND device = ? AND ts >= ?",
        [fleet, device, latest - window],
    ).fetchone()[0]
    bucket = max((latest - float(first)) / CHART_POINTS, 1.0)
    return _rows(
        conn,
        "SELECT min(ts) AS ts, avg(cpu_pct) AS cpu_pct, max(rss_mb) AS rss_mb, "
        "avg(latency_p50_ms) AS latency_p50_ms, max(latency_p95_ms) AS latency_p95_ms, "
        "sum(errors) AS errors, sum(inferences) AS inferences "
        "FROM metrics WHERE fleet = ? AND device = ? AND ts >= ? "
        "GROUP BY CAST((ts - ?) / ? AS INTEGER) ORDER BY ts",
        [fleet, device, latest - window, first, bucket],
    )


@dataclass
class IngestCounter:
    """Telemetry messages the coordinator stored for ``fleet``, counted once at start and then
    by what came after the highest row id seen (pruning deletes the oldest rows, so counting
    the table would go down: a counter must not). Touched by the snapshot reader only."""

    fleet: str
    last: dict[str, int] = field(default_factory=dict)  # table -> highest rowid counted
    totals: Counter[str] = field(default_factory=Counter)  # metrics, events
    rejected: Counter[str] = field(default_factory=Counter)  # reason -> rejected events

    def update(self, conn: sqlite3.Connection) -> None:
        for table in ("metrics", "events"):
            top = conn.execute(f"SELECT max(rowid) FROM {table}").fetchone()[0] or 0
            start = self.last.get(table, 0)
            if top < start:  # the newest rows were deleted: new ones get ids from top + 1
                start = top
            n = conn.execute(
                f"SELECT count(*) FROM {table} WHERE rowid > ? AND rowid <= ? AND fleet = ?",
                [start, top, self.fleet],
            ).fetchone()[0]
            self.totals[table] += int(n)
            if table == "events":
                for r in _rows(
                    conn,
                    "SELECT coalesce(reason, '-') AS reason, count(*) AS n FROM events "
                    "WHERE rowid > ? AND rowid <= ? AND fleet = ? AND event = 'rejected' "
                    "GROUP BY reason",
                    [start, top, self.fleet],
                ):
                    reason = r["reason"]
                    if reason not in self.rejected and len(self.rejected) >= MAX_REASONS - 1:
                        reason = "other"
                    self.rejected[reason] += int(r["n"])
            self.last[table] = top
