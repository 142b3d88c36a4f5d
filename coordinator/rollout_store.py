"""The ``rollouts`` table: one row per (fleet, model, version), with a revision.

The CLI (another process) starts, pauses, resumes and aborts rollouts by writing rows; the
coordinator's engine steps them. Every write is a compare-and-set on the revision, so an
operator's ``pause`` is never overwritten by an engine step computed from the state before it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol import Selector

from .db import Db, Store, create_rollout_tables
from .errors import RolloutError
from .rollout_plan import ACTIVE_STATES, Gates, Rollout


@dataclass(frozen=True)
class StoredRollout:
    rollout: Rollout
    rev: int
    synced: bool  # the deployment row reflects this rollout's state


def _to_row(r: Rollout) -> dict[str, Any]:
    return {
        "fleet": r.fleet,
        "name": r.name,
        "version": r.version,
        "base": r.base,
        "selector": json.dumps(r.select.to_dict(), sort_keys=True),
        "stages": json.dumps(list(r.stages)),
        "soak": r.soak,
        **r.gates.to_dict(),
        "rate": r.rate,
        "stage_timeout": r.stage_timeout,
        "state": r.state,
        "stage": r.stage,
        "ppm": r.ppm,
        "stage_ppms": json.dumps(list(r.stage_ppms)),
        "stage_started": r.stage_started,
        "soak_started": r.soak_started,
        "reason": r.reason,
        "created": r.created,
        "updated": r.updated,
        "gate_report": None if r.gate_report is None else json.dumps(r.gate_report),
    }


def _from_row(row: dict[str, Any]) -> StoredRollout:
    rollout = Rollout(
        fleet=row["fleet"],
        name=row["name"],
        version=int(row["version"]),
        base=None if row["base"] is None else int(row["base"]),
        select=Selector.from_dict(json.loads(row["selector"]), "stored rollout"),
        stages=tuple(float(s) for s in json.loads(row["stages"])),
        soak=float(row["soak"]),
        gates=Gates(
            max_failure_rate=float(row["max_failure_rate"]),
            max_error_rate=row["max_error_rate"],
            max_p95_ms=row["max_p95_ms"],
            max_p95_ratio=row.get("max_p95_ratio"),
            max_drift=row.get("max_drift"),
        ),
        rate=row["rate"],
        stage_timeout=float(row["stage_timeout"]),
        state=row["state"],
        stage=int(row["stage"]),
        ppm=int(row["ppm"]),
        stage_ppms=tuple(int(p) for p in json.loads(row["stage_ppms"])),
        stage_started=row["stage_started"],
        soak_started=row["soak_started"],
        reason=row["reason"],
        created=float(row["created"]),
        updated=float(row["updated"]),
        gate_report=json.loads(row["gate_report"]) if row["gate_report"] else None,
    )
    return StoredRollout(rollout, int(row["rev"]), bool(row["synced"]))


class RolloutStore(Store):
    """The ``rollouts`` table: one row per (fleet, model, version)."""

    def __init__(self, db_path: Path) -> None:
        super().__init__(Db(Path(db_path)))
        with self._db.lock:
            create_rollout_tables(self._db.sql)

    def get(self, fleet: str, name: str, version: int) -> StoredRollout | None:
        with self._db.lock:
            rows = list(
                self._db.sql.table("rollouts").rows_where(
                    "fleet = ? AND name = ? AND version = ?", [fleet, name, version]
                )
            )
        return _from_row(rows[0]) if rows else None

    def all(self, fleet: str) -> list[StoredRollout]:
        with self._db.lock:
            rows = list(
                self._db.sql.table("rollouts").rows_where(
                    "fleet = ?", [fleet], order_by="created, name, version"
                )
            )
        return [_from_row(r) for r in rows]

    def pending(self, fleet: str) -> list[StoredRollout]:
        """Rollouts the engine has work on: running or paused, or not yet synced."""
        marks = ", ".join("?" for _ in ACTIVE_STATES)
        with self._db.lock:
            rows = list(
                self._db.sql.table("rollouts").rows_where(
                    f"fleet = ? AND (state IN ({marks}) OR synced = 0)",
                    [fleet, *sorted(ACTIVE_STATES)],
                    order_by="created",
                )
            )
        return [_from_row(r) for r in rows]

    def insert(self, rollout: Rollout) -> None:
        """A new rollout; replaces an earlier finished one of the same release."""
        row = {**_to_row(rollout), "rev": 1, "synced": 0}
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        active = ", ".join(f"'{s}'" for s in sorted(ACTIVE_STATES))
        sql = (
            f"INSERT INTO rollouts ({columns}) VALUES ({marks}) "
            "ON CONFLICT (fleet, name, version) DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in row if c not in ("fleet", "name", "version"))
            + f" WHERE rollouts.state NOT IN ({active})"
        )
        with self._db.lock, self._db.sql.conn:
            cursor = self._db.sql.conn.execute(sql, list(row.values()))
        if cursor.rowcount != 1:
            raise RolloutError(f"a rollout of {rollout.release} is already under way")

    def save(self, stored: StoredRollout, rollout: Rollout, *, synced: bool = False) -> bool:
        """Write ``rollout`` if the row is still at ``stored.rev``; False if it moved on."""
        row = {**_to_row(rollout), "synced": int(synced)}
        sets = ", ".join(f"{c} = ?" for c in row)
        sql = (
            f"UPDATE rollouts SET {sets}, rev = rev + 1 "
            "WHERE fleet = ? AND name = ? AND version = ? AND rev = ?"
        )
        params = [*row.values(), rollout.fleet, rollout.name, rollout.version, stored.rev]
        with self._db.lock, self._db.sql.conn:
            cursor = self._db.sql.conn.execute(sql, params)
        return cursor.rowcount == 1

    def mark_synced(self, stored: StoredRollout) -> bool:
        r = stored.rollout
        with self._db.lock, self._db.sql.conn:
            cursor = self._db.sql.conn.execute(
                "UPDATE rollouts SET synced = 1, rev = rev + 1 "
                "WHERE fleet = ? AND name = ? AND version = ? AND rev = ?",
                [r.fleet, r.name, r.version, stored.rev],
            )
        return cursor.rowcount == 1
