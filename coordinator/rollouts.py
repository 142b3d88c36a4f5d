"""Staged rollouts in SQLite, and the engine the coordinator's poller runs each tick.

The CLI (another process) starts, pauses, resumes and aborts rollouts by writing rows; the
coordinator's ``RolloutEngine.tick`` observes the fleet (registry device rows, telemetry), steps
each running rollout through ``rollout_plan.step``, and writes the deployment row the deployer
turns into the signed index: the rollout block while running or paused, the new version once
completed, the base version marked as a rollback target once halted or aborted. Every row
carries a revision: a write is a compare-and-set on it, so an operator's ``pause`` is never
overwritten by an engine step computed from the state before it. All state is in the database,
so a restarted coordinator resumes every rollout where it was.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import sqlite_utils

from protocol import PPM_ALL, Selector

from .deployer import rollout_spec
from .errors import RegistryError, RolloutError
from .registry import Deployment, Registry
from .rollout_plan import (
    ABORTED,
    ACTIVE_STATES,
    COMPLETED,
    HALTED,
    PAUSED,
    RUNNING,
    DeviceView,
    Gates,
    Health,
    Observation,
    Rollout,
    step,
    validate_stages,
)
from .telemetry_store import ACTIVATION_FAILED, TelemetryStore

log = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class StoredRollout:
    rollout: Rollout
    rev: int
    synced: bool  # the deployment row reflects this rollout's state


_COLUMNS: dict[str, type] = {
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
}


def _to_row(r: Rollout) -> dict[str, Any]:
    return {
        "fleet": r.fleet,
        "name": r.name,
        "version": r.version,
        "base": r.base,
        "selector": json.dumps(r.select.to_dict(), sort_keys=True),
        "stages": json.dumps(list(r.stages)),
        "soak": r.soak,
        "max_failure_rate": r.gates.max_failure_rate,
        "max_error_rate": r.gates.max_error_rate,
        "max_p95_ms": r.gates.max_p95_ms,
        "max_p95_ratio": r.gates.max_p95_ratio,
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


class RolloutStore:
    """The ``rollouts`` table: one row per (fleet, model, version)."""

    def __init__(self, db_path: Path) -> None:
        self._lock = threading.Lock()
        conn = sqlite3.connect(str(db_path), timeout=BUSY_TIMEOUT_S, check_same_thread=False)
        self._db = sqlite_utils.Database(conn)
        self._db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        self._db.enable_wal()
        self._db.table("rollouts").create(
            _COLUMNS, pk=("fleet", "name", "version"), if_not_exists=True
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def get(self, fleet: str, name: str, version: int) -> StoredRollout | None:
        with self._lock:
            rows = list(
                self._db.table("rollouts").rows_where(
                    "fleet = ? AND name = ? AND version = ?", [fleet, name, version]
                )
            )
        return _from_row(rows[0]) if rows else None

    def all(self, fleet: str) -> list[StoredRollout]:
        with self._lock:
            rows = list(
                self._db.table("rollouts").rows_where(
                    "fleet = ?", [fleet], order_by="created, name, version"
                )
            )
        return [_from_row(r) for r in rows]

    def pending(self, fleet: str) -> list[StoredRollout]:
        """Rollouts the engine has work on: running or paused, or not yet synced."""
        marks = ", ".join("?" for _ in ACTIVE_STATES)
        with self._lock:
            rows = list(
                self._db.table("rollouts").rows_where(
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
        with self._lock, self._db.conn:
            cursor = self._db.conn.execute(sql, list(row.values()))
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
        with self._lock, self._db.conn:
            cursor = self._db.conn.execute(sql, params)
        return cursor.rowcount == 1

    def mark_synced(self, stored: StoredRollout) -> bool:
        r = stored.rollout
        with self._lock, self._db.conn:
            cursor = self._db.conn.execute(
                "UPDATE rollouts SET synced = 1, rev = rev + 1 "
                "WHERE fleet = ? AND name = ? AND version = ? AND rev = ?",
                [r.fleet, r.name, r.version, stored.rev],
            )
        return cursor.rowcount == 1


def desired_deployment(r: Rollout) -> Deployment | None:
    """The deployment row (and so the index entry) that rollout state ``r`` calls for."""
    if r.state in ACTIVE_STATES:
        return Deployment(
            r.version, rollout_spec(rollout=r.id, ppm=r.ppm, select=r.select, base=r.base)
        )
    if r.state == COMPLETED:
        if r.select.is_all:
            return Deployment(r.version)
        return Deployment(
            r.version, rollout_spec(rollout=r.id, ppm=PPM_ALL, select=r.select, base=r.base)
        )
    # halted or aborted: everyone targets the base, which devices that moved on go back to
    if r.base is None:
        return None
    return Deployment(r.base, rollout_spec(rollback=True))


# --- commands (the CLI) -------------------------------------------------------------------
def start_rollout(
    registry: Registry,
    store: RolloutStore,
    *,
    fleet: str,
    name: str,
    version: int,
    select: Selector,
    stages: tuple[float, ...],
    soak: float,
    gates: Gates,
    rate: float | None = None,
    stage_timeout: float | None = None,
    now: float | None = None,
) -> Rollout:
    if registry.release(fleet, name, version) is None:
        raise RolloutError(f"no release {name}@{version} in fleet {fleet}")
    try:
        stages = validate_stages(stages)
    except ValueError as exc:
        raise RolloutError(str(exc)) from None
    if soak < 0 or (rate is not None and rate <= 0):
        raise RolloutError("soak must be >= 0 and rate > 0")
    current = registry.deployment_entries(fleet).get(name)
    base = current.version if current is not None else None
    if base is not None and base >= version:
        raise RolloutError(
            f"{name}@{base} is deployed in fleet {fleet}: a rollout needs a newer version"
        )
    for other in store.all(fleet):
        o = other.rollout
        if o.name == name and o.state in ACTIVE_STATES and o.version != version:
            raise RolloutError(f"rollout of {o.release} is {o.state}: abort it first")
    now = time.time() if now is None else now
    rollout = Rollout(
        fleet=fleet,
        name=name,
        version=version,
        base=base,
        select=select,
        stages=stages,
        soak=soak,
        gates=gates,
        rate=rate,
        created=now,
        updated=now,
    )
    if stage_timeout is not None:
        rollout = replace(rollout, stage_timeout=stage_timeout)
    store.insert(rollout)
    log.info(
        "rollout of %s to %s in fleet %s started: stages %s, soak %gs, gates: %s",
        rollout.release,
        select.describe(),
        fleet,
        ",".join(f"{s:g}%" for s in stages),
        soak,
        gates.describe(),
    )
    return rollout


def change_rollout(
    store: RolloutStore, *, fleet: str, name: str, version: int, action: str
) -> Rollout:
    """``pause``, ``resume`` or ``abort`` (abort sends every device back to the base)."""
    for _ in range(20):  # compare-and-set against the engine's steps
        stored = store.get(fleet, name, version)
        if stored is None:
            raise RolloutError(f"no rollout of {name}@{version} in fleet {fleet}")
        r = stored.rollout
        now = time.time()
        if action == "pause":
            if r.state != RUNNING:
                raise RolloutError(f"rollout of {r.release} is {r.state}, not running")
            new = replace(r, state=PAUSED, updated=now)
        elif action == "resume":
            if r.state != PAUSED:
                raise RolloutError(f"rollout of {r.release} is {r.state}, not paused")
            new = replace(r, state=RUNNING, updated=now)
        elif action == "abort":
            if r.state not in ACTIVE_STATES:
                raise RolloutError(f"rollout of {r.release} is {r.state}: nothing to abort")
            new = replace(r, state=ABORTED, reason="aborted by the operator", updated=now)
        else:
            raise RolloutError(f"unknown rollout action {action!r}")
        if store.save(stored, new):
            log.info("rollout of %s in fleet %s: %s -> %s", r.release, fleet, r.state, new.state)
            return new
    raise RolloutError(f"rollout of {name}@{version} keeps changing; try again")


def rollback(
    registry: Registry,
    store: RolloutStore,
    *,
    fleet: str,
    name: str,
    version: int,
    select: Selector,
) -> Deployment:
    """Send the devices ``select`` matches back to ``name@version`` (each goes back if it kept
    that version as its previous one); the others keep what is deployed. A rollout of the model
    under way is aborted (without touching the deployment this writes)."""
    if registry.release(fleet, name, version) is None:
        raise RolloutError(f"no release {name}@{version} in fleet {fleet}")
    for stored in store.all(fleet):
        r = stored.rollout
        if r.name == name and r.state in ACTIVE_STATES:
            new = replace(
                r, state=ABORTED, reason=f"rolled back to {name}@{version}", updated=time.time()
            )
            if not store.save(stored, new, synced=True):
                raise RolloutError(f"rollout of {r.release} changed meanwhile; try again")
    for _ in range(20):
        current = registry.deployment_entries(fleet).get(name)
        if select.is_all or current is None:
            wanted = Deployment(version, rollout_spec(rollback=True))
        else:
            wanted = Deployment(
                version,
                rollout_spec(
                    rollback=True,
                    rollout=f"rollback-{name}@{version}",
                    ppm=PPM_ALL,
                    select=select,
                    base=current.version,
                ),
            )
        try:
            if registry.set_deployment(fleet, name, wanted, expect=current):
                log.info(
                    "rollback of %s in fleet %s to %s@%d",
                    select.describe(),
                    fleet,
                    name,
                    version,
                )
                return wanted
        except RegistryError as exc:
            raise RolloutError(str(exc)) from None
    raise RolloutError(f"deployment of {name} keeps changing; try again")


# --- the engine (coordinator poller) ------------------------------------------------------
class RolloutEngine:
    def __init__(
        self,
        registry: Registry,
        telemetry: TelemetryStore,
        store: RolloutStore,
        fleet: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._registry = registry
        self._telemetry = telemetry
        self._store = store
        self._fleet = fleet
        self._clock = clock

    def tick(self) -> bool:
        """Step every rollout with work to do; True if a deployment row changed."""
        changed = False
        for stored in self._store.pending(self._fleet):
            changed |= self._tick_one(stored)
        return changed

    def _tick_one(self, stored: StoredRollout) -> bool:
        r = stored.rollout
        if r.state == RUNNING:
            new = step(r, self._clock(), self.observe(r))
            if new != r:
                if not self._store.save(stored, new):
                    return False  # the operator changed it meanwhile: next tick
                self._log_change(r, new)
                stored = StoredRollout(new, stored.rev + 1, False)
                r = new
        return self._sync(stored)

    def _sync(self, stored: StoredRollout) -> bool:
        r = stored.rollout
        wanted = desired_deployment(r)
        current = self._registry.deployment_entries(self._fleet).get(r.name)
        wrote = False
        if current != wanted:
            wrote = self._registry.set_deployment(self._fleet, r.name, wanted, expect=current)
            if not wrote:
                return False
        if not stored.synced:
            self._store.mark_synced(stored)
        return wrote

    def observe(self, r: Rollout) -> Observation:
        views = device_views(self._registry, self._telemetry, r)

        def health(since: float) -> tuple[Health, Health]:
            rows = {
                (h["model"], h["version"]): h for h in self._telemetry.health(self._fleet, since)
            }
            return _health(rows.get((r.name, r.version))), _health(rows.get((r.name, r.base)))

        return Observation(views, health)

    def _log_change(self, old: Rollout, new: Rollout) -> None:
        what = f"rollout of {new.release} in fleet {self._fleet}"
        if new.state == HALTED:
            log.error("%s HALTED: %s; devices go back to %s", what, new.reason, _base(new))
        elif new.state == COMPLETED:
            log.info("%s completed", what)
        elif new.stage != old.stage:
            log.info(
                "%s: stage %d passed its gates, entering stage %d",
                what,
                old.stage + 1,
                new.stage + 1,
            )
        elif new.soak_started is not None and old.soak_started is None:
            log.info("%s: stage %d settled, soaking %gs", what, new.stage + 1, new.soak)
        elif new.ppm != old.ppm:
            log.info(
                "%s: stage %d admits %.2f%% of the devices (ppm %d)",
                what,
                new.stage + 1,
                new.ppm / PPM_ALL * 100,
                new.ppm,
            )


def device_views(
    registry: Registry, telemetry: TelemetryStore, r: Rollout
) -> tuple[DeviceView, ...]:
    """The fleet's devices as rollout ``r`` sees them (registry rows, failure events)."""
    failed = telemetry.event_devices(r.fleet, ACTIVATION_FAILED, r.name, r.version, r.created)
    rolled_back = (
        telemetry.event_devices(r.fleet, "rolled-back", r.name, r.base, r.created)
        if r.base is not None
        else set()
    )
    views = []
    for row in registry.devices(r.fleet):
        profile = row.get("profile") or {}
        raw_tags = profile.get("tags")
        tags: dict[str, str] = raw_tags if isinstance(raw_tags, dict) else {}
        active = (row.get("active") or {}).get(r.name)
        state_failed = (
            row.get("state") == "failed"
            and row.get("model") == r.name
            and row.get("version") == r.version
        )
        views.append(
            DeviceView(
                device=row["device_id"],
                tags=tags,
                online=bool(row.get("online")),
                active=None if active is None else int(active),
                failed=state_failed or row["device_id"] in failed,
                rolled_back=row["device_id"] in rolled_back,
            )
        )
    return tuple(views)


def _base(r: Rollout) -> str:
    return f"{r.name}@{r.base}" if r.base is not None else "nothing (no base version)"


def _health(row: dict[str, Any] | None) -> Health:
    if row is None:
        return Health()
    return Health(
        inferences=int(row["inferences"]),
        errors=int(row["errors"]),
        error_rate=row["error_rate"],
        latency_p95_ms=row["latency_p95_ms"],
    )
