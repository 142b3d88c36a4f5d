"""The rollout engine the coordinator's poller runs each tick: it observes the fleet (registry
device rows, telemetry), steps each running rollout through ``rollout_plan.step``, and writes the
deployment row the deployer turns into the signed index: the rollout block while running or
paused, the new version once completed, the base version marked as a rollback target once halted
or aborted. All state is in the database, so a restarted coordinator resumes every rollout where
it was.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from protocol import PPM_ALL

from .deployer import rollout_spec
from .deployments import Deployment
from .drift import version_scores
from .registry import Registry
from .rollout_plan import (
    ACTIVE_STATES,
    COMPLETED,
    HALTED,
    RUNNING,
    DeviceView,
    Health,
    Observation,
    Rollout,
    step,
)
from .rollout_store import RolloutStore, StoredRollout
from .telemetry_queries import ACTIVATION_FAILED, TelemetryReader

log = logging.getLogger(__name__)


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


class RolloutEngine:
    def __init__(
        self,
        registry: Registry,
        telemetry: TelemetryReader,
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
            drift: dict[tuple[str, int], float] = {}
            if r.gates.max_drift is not None:
                drift = version_scores(self._telemetry, self._registry, self._fleet, since)
            base_drift = None if r.base is None else drift.get((r.name, r.base))
            return (
                _health(rows.get((r.name, r.version)), drift.get((r.name, r.version))),
                _health(rows.get((r.name, r.base)), base_drift),
            )

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
    registry: Registry, telemetry: TelemetryReader, r: Rollout
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


def _health(row: dict[str, Any] | None, drift_score: float | None = None) -> Health:
    if row is None:
        return Health(drift_score=drift_score)
    return Health(
        inferences=int(row["inferences"]),
        errors=int(row["errors"]),
        error_rate=row["error_rate"],
        latency_p95_ms=row["latency_p95_ms"],
        drift_score=drift_score,
    )
