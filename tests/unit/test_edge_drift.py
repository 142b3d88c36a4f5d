"""The edge's drift monitor: the profile read from the kept manifest, one sketch per model
version, windows taken into numbered ``drift`` telemetry samples, optional noise."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_node.drift import DriftMonitor, kept_profile
from edge_node.storage import MANIFEST
from edge_node.telemetry import Telemetry
from protocol import DriftProfile, DriftSample, Manifest, Topics
from protocol.signing import SigningKey
from runtime.drift_profile import fit_profile
from tests.unit.test_drift import cloud


@pytest.fixture(scope="module")
def profile() -> DriftProfile:
    p = fit_profile(cloud(np.random.default_rng(0), 200), n_directions=8, windows=200)
    return dataclasses.replace(p, min_count=30)


def keep_release(root: Path, version: int, drift: DriftProfile | None, variant: Any = None) -> Path:
    """A release directory as the edge keeps it: the signed manifest beside the model."""
    directory = root / "models" / "m" / str(version)
    directory.mkdir(parents=True)
    m = Manifest("f", "m", version, 100, b"\x01" * 32, 4096, b"\x02" * 32, 1.0, 2.0)
    m = dataclasses.replace(m, drift=drift, variant=variant)
    (directory / MANIFEST).write_bytes(m.sign(SigningKey.generate(), b"cert"))
    return directory / "model.onnx"


def test_a_release_without_a_profile_is_not_sketched(tmp_path: Path) -> None:
    monitor = DriftMonitor()
    assert monitor.sketch_for("m", 1, keep_release(tmp_path, 1, None)) is None
    assert monitor.sketch_for("m", 2, tmp_path / "nowhere" / "model.onnx") is None
    assert kept_profile(tmp_path / "nowhere") == (None, None)
    assert monitor.take() == []


def test_windows_are_taken_once_full_and_a_new_version_retires_the_old(
    tmp_path: Path, profile: DriftProfile
) -> None:
    rng = np.random.default_rng(1)
    monitor = DriftMonitor()
    v1 = monitor.sketch_for("m", 1, keep_release(tmp_path, 1, profile, "int8"))
    path = tmp_path / "models" / "m" / "1" / "model.onnx"
    assert v1 is not None and monitor.sketch_for("m", 1, path) is v1  # cached
    v1.update(cloud(rng, 20))
    assert monitor.take() == []  # 20 < min_count 30: the window stays open
    v1.update(cloud(rng, 15))
    v2 = monitor.sketch_for("m", 2, keep_release(tmp_path, 2, profile))
    assert v2 is not None
    v2.update(cloud(rng, 10))
    (taken,) = monitor.take()  # v1's retired window (35) is sent; v2's (10) stays open
    assert (taken.model, taken.version, taken.variant, taken.window.count) == ("m", 1, "int8", 35)
    assert taken.epsilon is None
    assert monitor.take() == []


def test_telemetry_publishes_a_numbered_drift_sample_per_full_window(
    tmp_path: Path, profile: DriftProfile
) -> None:
    telemetry = Telemetry(
        device="d1",
        boot="boot1",
        topics=Topics("f"),
        data_dir=tmp_path,
        interval=60,
        capacity=100,
        clock=lambda: 1000.0,
        drift_epsilon=2.0,
    )
    sketch = telemetry.drift.sketch_for("m", 1, keep_release(tmp_path, 1, profile))
    assert sketch is not None
    sketch.update(cloud(np.random.default_rng(2), 200))
    telemetry.sample(connected=True, active={"m": 1}, reconnects=0, bytes_received=0)
    sent: list[tuple[str, bytes]] = []

    class Done:
        delivered = True

    def publish(topic: str, payload: bytes) -> Done:
        sent.append((topic, payload))
        return Done()

    telemetry.pump(publish)
    telemetry.close()
    assert [t for t, _ in sent] == [
        "modelcast/f/devices/d1/telemetry/metrics",
        "modelcast/f/devices/d1/telemetry/drift",
    ]
    drift = DriftSample.decode(sent[1][1])
    assert (drift.device, drift.boot, drift.seq, drift.model, drift.version) == (
        "d1",
        "boot1",
        2,
        "m",
        1,
    )
    assert drift.epsilon == 2.0 and drift.proj_mean is None  # noisy: no means
    assert abs(drift.count - 200) < 200 and len(sent[1][1]) <= 2048


def test_a_non_positive_epsilon_is_refused() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        DriftMonitor(0.0)
