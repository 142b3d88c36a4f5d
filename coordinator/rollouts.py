"""Staged rollouts: the operator's commands (the CLI, another process), which start, pause,
resume and abort rollouts and roll devices back by writing rows. The rows are the
``rollout_store``'s; the coordinator's ``rollout_engine`` steps them (both re-exported here).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from protocol import PPM_ALL, Selector

from .deployer import rollout_spec
from .deployments import Deployment
from .errors import RegistryError, RolloutError
from .registry import Registry
from .rollout_engine import RolloutEngine
from .rollout_plan import (
    ABORTED,
    ACTIVE_STATES,
    DEFAULT_STAGE_TIMEOUT_S,
    PAUSED,
    RUNNING,
    Gates,
    Rollout,
    validate_stages,
)
from .rollout_store import RolloutStore, StoredRollout

__all__ = [
    "RolloutEngine",
    "RolloutError",
    "RolloutStore",
    "StoredRollout",
    "change_rollout",
    "rollback",
    "start_rollout",
]

log = logging.getLogger(__name__)


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
    stages = validate_stages(stages)
    if soak < 0 or (rate is not None and rate <= 0):
        raise RolloutError("soak must be >= 0 and rate > 0")
    base = _rollout_base(registry, store, fleet, name, version)
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
        stage_timeout=DEFAULT_STAGE_TIMEOUT_S if stage_timeout is None else stage_timeout,
        created=now,
        updated=now,
    )
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


def _rollout_base(
    registry: Registry, store: RolloutStore, fleet: str, name: str, version: int
) -> int | None:
    """The version a new rollout of ``name@version`` starts from (what is deployed), refused
    unless it is older and no other rollout of the model is under way."""
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
    return base


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
