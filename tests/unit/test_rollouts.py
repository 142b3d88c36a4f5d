"""Rollouts in SQLite without MQTT: the engine writes the deployment the index is signed from,
operator commands win over engine steps, rollback targets, and the published index."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import protocol
from coordinator.deployer import DeploymentPublisher
from coordinator.keystore import ReleaseKeys, init_keys, load_release_keys
from coordinator.registry import Registry
from coordinator.rollout_plan import Gates
from coordinator.rollouts import (
    RolloutEngine,
    RolloutError,
    RolloutStore,
    change_rollout,
    rollback,
    start_rollout,
)
from coordinator.telemetry_store import TelemetryStore
from protocol.textmodel import KIND_FILE

DEVICES = [f"d{i}" for i in range(6)]


@dataclass
class Setup:
    tmp: Path
    keys: ReleaseKeys
    registry: Registry
    store: RolloutStore
    engine: RolloutEngine

    def index(self) -> protocol.DeploymentIndex:
        publisher = DeploymentPublisher(self.registry, self.keys, "f", index_expires_in=86400.0)
        plan = publisher.plan(time.time(), republish=False)
        assert plan is not None
        trust = protocol.TrustedRoot(
            protocol.VerifyKey.from_pem((self.tmp / "keys" / "root.pub").read_bytes())
        )
        return protocol.open_index(trust, plan.publications[-1].payload, now=time.time(), fleet="f")


@pytest.fixture(name="s")
def setup(tmp_path: Path) -> Iterator[Setup]:
    init_keys(tmp_path / "keys")
    keys = load_release_keys(tmp_path / "keys")
    db = tmp_path / "coord.db"
    registry = Registry(db)
    model = tmp_path / "model.onnx"
    for version in (1, 2, 3):
        model.write_bytes(os.urandom(5000))
        registry.add_release(
            model, model_kind=KIND_FILE, name="m", version=version, keys=keys, fleet="f"
        )
    registry.deploy("m", 1, fleet="f")
    for i, device in enumerate(DEVICES):
        tags = {"class": "gateway" if i < 3 else "camera"}
        registry.record_status(
            "f",
            protocol.DeviceStatus(device, online=True, active={"m": 1}, profile={"tags": tags}),
        )
    telemetry = TelemetryStore(db)
    store = RolloutStore(db)
    yield Setup(tmp_path, keys, registry, store, RolloutEngine(registry, telemetry, store, "f"))
    store.close()
    telemetry.close()
    registry.close()


def start(s: Setup, version: int = 2, **kw: object) -> None:
    args: dict[str, object] = {
        "fleet": "f",
        "name": "m",
        "version": version,
        "select": protocol.Selector(),
        "stages": (34.0, 100.0),
        "soak": 60.0,
        "gates": Gates(),
    }
    args.update(kw)
    start_rollout(s.registry, s.store, **args)  # type: ignore[arg-type]


def test_the_engine_publishes_the_first_stage_as_a_signed_rollout_block(s: Setup) -> None:
    start(s)
    assert s.engine.tick()
    entry = s.index().targets["m"]
    assert entry.version == 2 and entry.rollout is not None
    assert entry.rollout.base is not None and entry.rollout.base.version == 1
    inside = [
        d for d in DEVICES if entry.for_device(d, {}) == protocol.Target(2, entry.manifest_id)
    ]
    assert len(inside) >= 3  # at least ceil(34% of 6)
    assert not s.engine.tick()  # nothing moved: the deployment is not rewritten


def test_pause_holds_abort_goes_back_to_the_base_as_a_rollback_target(s: Setup) -> None:
    start(s)
    s.engine.tick()
    change_rollout(s.store, fleet="f", name="m", version=2, action="pause")
    stored = s.store.get("f", "m", 2)
    assert stored is not None and stored.rollout.state == "paused"
    with pytest.raises(RolloutError):
        change_rollout(s.store, fleet="f", name="m", version=2, action="pause")
    change_rollout(s.store, fleet="f", name="m", version=2, action="abort")
    s.engine.tick()
    entry = s.index().targets["m"]
    assert (entry.version, entry.rollback, entry.rollout) == (1, True, None)
    with pytest.raises(RolloutError):
        change_rollout(s.store, fleet="f", name="m", version=2, action="resume")


def test_a_stale_engine_step_does_not_overwrite_an_operator_change(s: Setup) -> None:
    start(s)
    stale = s.store.get("f", "m", 2)
    assert stale is not None
    change_rollout(s.store, fleet="f", name="m", version=2, action="pause")
    assert not s.store.save(stale, stale.rollout)
    stored = s.store.get("f", "m", 2)
    assert stored is not None and stored.rollout.state == "paused"


def test_one_rollout_per_model_and_only_forward(s: Setup) -> None:
    start(s)
    with pytest.raises(RolloutError, match="abort it first"):
        start(s, version=3)
    with pytest.raises(RolloutError, match="already under way"):
        start(s)
    s.registry.deploy("m", 3, fleet="f")
    with pytest.raises(RolloutError, match="needs a newer version"):
        start(s, version=3)
    with pytest.raises(RolloutError, match="no release"):
        start(s, version=9)


def test_rollback_to_a_selection_keeps_the_others_on_the_deployed_version(s: Setup) -> None:
    s.registry.deploy("m", 3, fleet="f")
    rollback(
        s.registry,
        s.store,
        fleet="f",
        name="m",
        version=1,
        select=protocol.Selector({"class": "camera"}),
    )
    entry = s.index().targets["m"]
    assert entry.for_device("d4", {"class": "camera"}) == protocol.Target(
        1, entry.manifest_id, rollback=True
    )
    gateway = entry.for_device("d0", {"class": "gateway"})
    assert gateway is not None and (gateway.version, gateway.rollback) == (3, False)


def test_rollback_aborts_a_rollout_of_the_model(s: Setup) -> None:
    start(s)
    s.engine.tick()
    rollback(s.registry, s.store, fleet="f", name="m", version=1, select=protocol.Selector())
    stored = s.store.get("f", "m", 2)
    assert stored is not None and stored.rollout.state == "aborted"
    s.engine.tick()  # the aborted rollout does not overwrite the rollback
    entry = s.index().targets["m"]
    assert (entry.version, entry.rollback, entry.rollout) == (1, True, None)
