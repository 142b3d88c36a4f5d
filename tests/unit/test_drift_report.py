"""The coordinator's drift figures from stored drift samples: per device and release, over the
fleet, in ``modelcast drift`` and ``modelcast status``, and the rollout gate ``--max-drift``."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pytest

import protocol
from coordinator.drift import drift_report, version_scores
from coordinator.keystore import init_keys, load_release_keys
from coordinator.registry import Registry
from coordinator.rollout_plan import HALTED, RUNNING, Gates, Health
from coordinator.status import fleet_status, format_status
from coordinator.telemetry_store import TelemetryStore
from modelcast.cli import main
from runtime.drift_profile import fit_profile
from runtime.drift_score import ProfileArrays
from runtime.drift_sketch import DriftSketch
from testkit.synthetic_models import make_model
from tests.unit.test_drift import cloud
from tests.unit.test_rollout_plan import FLEET, fleet_on, obs, rollout, step, view

NOW = time.time()


@pytest.fixture(scope="module")
def profile() -> protocol.DriftProfile:
    return fit_profile(cloud(np.random.default_rng(0), 300), n_directions=8, windows=500)


def sample(
    profile: protocol.DriftProfile, device: str, seq: int, shift: float, version: int = 1
) -> protocol.DriftSample:
    sketch = DriftSketch(ProfileArrays.of(profile))
    sketch.update(cloud(np.random.default_rng(seq + 100 * len(device)), 40, shift))
    window = sketch.take(1)
    assert window is not None
    return protocol.DriftSample(
        device=device,
        boot="b",
        seq=seq,
        ts=NOW - 60 + seq,
        model="m",
        version=version,
        **window.to_sample_fields(),
    )


@pytest.fixture
def db(tmp_path: Path, profile: protocol.DriftProfile) -> Path:
    """m@1 and m@2 released with ``profile``; d1 sends in-domain windows of m@1, d2 shifted
    ones, d3 one window of another shape (skipped)."""
    init_keys(tmp_path / "keys")
    keys = load_release_keys(tmp_path / "keys")
    path = tmp_path / "c.db"
    registry = Registry(path)
    for version in (1, 2):
        model = make_model(tmp_path / f"m{version}.onnx", 4096, inputs=4, seed=version)
        registry.add_release(
            model, name="m", version=version, keys=keys, profile=lambda _p, _k: profile
        )
    registry.close()
    store = TelemetryStore(path)
    for seq in range(1, 4):
        store.add_drift("default", sample(profile, "d1", seq, 0.0), NOW)
        store.add_drift("default", sample(profile, "d2", seq, 1.0), NOW)
    odd = dataclasses.replace(sample(profile, "d3", 1, 0.0), n_bins=5, bins=(1,) * 40)
    store.add_drift("default", odd, NOW)
    store.flush()
    store.close()
    return path


def test_each_device_is_scored_over_its_windows_and_the_fleet_pooled(db: Path) -> None:
    report = drift_report(db, since=NOW - 3600)
    by_device = {d["device_id"]: d for d in report["devices"]}
    assert set(by_device) == {"d1", "d2"}
    assert by_device["d1"]["drifted"] is False and by_device["d2"]["drifted"] is True
    assert by_device["d2"]["score"] >= 1 > by_device["d1"]["score"]
    assert by_device["d1"]["window"]["samples"] == 3 and by_device["d1"]["window"]["count"] == 120
    assert {"device_id", "model", "version", "score", "drifted", "window"} <= set(by_device["d1"])
    (version,) = report["fleet"]["versions"]
    assert (version["model"], version["version"], version["devices"]) == ("m", 1, 2)
    assert version["drifted_devices"] == 1 and version["share_drifted"] == 0.5
    assert report["fleet"]["skipped"] == 1  # d3's window does not fit the profile


def test_the_period_and_the_device_narrow_the_report(db: Path) -> None:
    assert drift_report(db, since=NOW + 10)["devices"] == []
    only = drift_report(db, since=NOW - 3600, device="d2")["devices"]
    assert [d["device_id"] for d in only] == ["d2"]


def test_modelcast_drift_prints_json_and_a_table(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["drift", "--db", str(db), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"devices", "fleet"} and len(report["devices"]) == 2
    assert main(["drift", "--db", str(db), "--device", "d2"]) == 0
    table = capsys.readouterr().out
    assert "DRIFTED" in table and "d2" in table and "d1 " not in table
    assert main(["drift", "--db", str(db), "--since", "-1"]) == 1  # a clear error


def test_status_flags_the_drifted_device(db: Path) -> None:
    registry = Registry(db)
    for device in ("d1", "d2"):
        registry.record_state(
            "default",
            protocol.DeviceState(device=device, state=protocol.UpdateState.ACTIVE, ts=NOW),
            seen=NOW,
        )
    registry.close()
    status = fleet_status(db, since=NOW - 3600)
    flags = {d["device_id"]: d["drifted"] for d in status["devices"]}
    assert flags == {"d1": False, "d2": True}
    lines = format_status(status, now=NOW).splitlines()
    assert "DRIFTED m@1" in next(line for line in lines if line.startswith("d2"))


def test_version_scores_pool_the_fleet(db: Path) -> None:
    store, registry = TelemetryStore(db), Registry(db)
    try:
        scores = version_scores(store, registry, "default", NOW - 3600)
    finally:
        store.close()
        registry.close()
    assert set(scores) == {("m", 1)} and scores[("m", 1)] > 0


# --- the rollout gate ----------------------------------------------------------------------
def gated(new: float | None, base: float | None, max_drift: float = 0.5) -> str:
    r = rollout(gates=Gates(max_drift=max_drift))
    r = step(r, 0.0, obs([view(d) for d in FLEET]))
    views = fleet_on(r, 2)
    r = step(r, 1.0, obs(views))
    r = step(r, 5.0, obs(views, Health(inferences=10, drift_score=new), Health(drift_score=base)))
    return r.state if r.state != HALTED else f"{r.state}: {r.reason}"


def test_the_drift_gate_holds_a_version_that_drifts_more_than_the_base() -> None:
    assert gated(1.2, 1.0) == RUNNING
    halted = gated(1.8, 1.0)
    assert halted.startswith(HALTED) and "input drift score 1.80 of m@2 exceeds 1.50" in halted
    assert gated(1.4, None) == RUNNING  # no figures for the base: it counts as 1
    assert gated(1.6, None).startswith(HALTED)
    assert gated(None, 0.2) == RUNNING  # no drift samples: nothing to gate on
    assert "drift score <= base + 0.5" in Gates(max_drift=0.5).describe()


def test_the_engine_reads_each_versions_pooled_drift_for_the_gate(
    db: Path, profile: protocol.DriftProfile
) -> None:
    from coordinator.rollouts import RolloutEngine, RolloutStore, start_rollout

    store = TelemetryStore(db)
    for seq in range(10, 13):  # m@2's devices see shifted inputs
        store.add_drift("default", sample(profile, "d4", seq, 1.0, version=2), NOW)
    store.flush()
    registry, rollouts = Registry(db), RolloutStore(db)
    try:
        registry.deploy("m", 1, fleet="default")
        engine = RolloutEngine(registry, store, rollouts, "default")
        r = start_rollout(
            registry,
            rollouts,
            fleet="default",
            name="m",
            version=2,
            select=protocol.Selector(),
            stages=(100.0,),
            soak=1.0,
            gates=Gates(max_drift=0.5),
        )
        new, base = engine.observe(r).health(NOW - 3600)
        assert new.drift_score is not None and base.drift_score is not None
        assert new.drift_score > base.drift_score
        ungated = dataclasses.replace(r, gates=Gates())  # the gate not set: nothing is scored
        new, base = engine.observe(ungated).health(NOW - 3600)
        assert new.drift_score is None and base.drift_score is None
    finally:
        rollouts.close()
        registry.close()
        store.close()
