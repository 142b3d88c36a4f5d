"""Chunk reuse end to end (issue 15): an edge that holds m@1 gets m@2 by copying the chunks the
two share from its own disk; the coordinator publishes only the others. Real Mosquitto, the real
coordinator, the edge as a real process. Released without deltas (``delta_bases=0``): a delta
may well be smaller here, and the edge would rightly choose it (test_delta_delivery.py)."""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import numpy_helper

from protocol import Manifest
from protocol.envelope import Envelope
from runtime.files import sha256_file
from testkit.synthetic_models import make_model
from tests.support.env import Env
from tests.support.fleet import release_and_deploy

MB = 1 << 20


def retrain_tail(source: Path, out: Path, rows: int) -> Path:
    """``source`` with the last ``rows`` rows of its weight changed: the same file but for a
    stretch near its end."""
    model = onnx.load(str(source))
    weight = model.graph.initializer[0]
    w = numpy_helper.to_array(weight).copy()
    w[-rows:, :] += 0.5
    weight.CopyFrom(numpy_helper.from_array(w, weight.name))
    onnx.save(model, str(out))
    return out


def chunk_hashes(env: Env, name: str, version: int) -> list[bytes]:
    record = env.registry.release(env.fleet, name, version)
    assert record is not None
    m = Manifest.decode(Envelope.decode(record.manifest, 1 << 20).body)
    return [m.chunk_hash(i) for i in range(m.n_chunks)]


def test_a_new_version_travels_as_the_chunks_that_changed(env: Env) -> None:
    m1 = make_model(env.tmp / "m1.onnx", 8 * MB, seed=5)
    m2 = retrain_tail(m1, env.tmp / "m2.onnx", rows=8)
    coordinator = env.start_coordinator()
    edge = env.edge("reuser")
    release_and_deploy(env.registry, env.keys, m1, "m", 1, env.fleet)
    env.watch.wait_active(edge.device, "m", 1)
    before = coordinator.chunks_published

    release_and_deploy(env.registry, env.keys, m2, "m", 2, env.fleet, delta_bases=0)
    final = env.watch.wait_active(edge.device, "m", 2)
    assert sha256_file(edge.model_path("m", 2)) == sha256_file(m2)
    old, new = chunk_hashes(env, "m", 1), chunk_hashes(env, "m", 2)
    changed = sum(1 for h in new if h not in set(old))
    assert 0 < changed < len(new) // 4, (changed, len(new))
    published = coordinator.chunks_published - before
    assert changed <= published <= changed + 2, (published, changed)  # +2: a repair at most
    assert final.received - final.duplicates == changed
    reused = [e for e in env.watch.events(edge.device) if e.event == "reused"]
    assert reused and reused[-1].version == 2
    assert reused[-1].detail is not None and "from m@1" in reused[-1].detail

    # the same bytes again, as a new release: nothing travels
    before = coordinator.chunks_published
    release_and_deploy(env.registry, env.keys, m2, "m", 3, env.fleet, delta_bases=0)
    env.watch.wait_active(edge.device, "m", 3)
    assert coordinator.chunks_published == before
    assert sha256_file(edge.model_path("m", 3)) == sha256_file(m2)
