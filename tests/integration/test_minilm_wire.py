"""MiniLM over the real wire (issue 15): its first install travels compressed, in fewer bytes
than the file; a new release with identical bytes costs no chunk; one whose last layer changed
costs the chunks of that layer. Real Mosquitto, the real coordinator, the edge as a process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from runtime.files import sha256_file
from tests.support.env import Env
from tests.support.fleet import release_and_deploy
from tests.support.minilm import BuiltMiniLM

LAST = "encoder.layer.5.output.dense.weight"


def retrain_last_layer(source: Path, out: Path) -> Path:
    model = onnx.load(str(source))
    init = next(i for i in model.graph.initializer if i.name == LAST)
    w = numpy_helper.to_array(init)
    noise = np.random.default_rng(0).standard_normal(w.shape).astype(np.float32)
    init.CopyFrom(numpy_helper.from_array(w * (1 + 1e-3 * noise), LAST))
    onnx.save(model, str(out))
    return out


def test_minilm_travels_compressed_and_a_new_version_as_its_changed_chunks(
    minilm: BuiltMiniLM, env: Env
) -> None:
    size = minilm.fp32.stat().st_size
    coordinator = env.start_coordinator()
    edge = env.edge("wire")
    release_and_deploy(env.registry, env.keys, minilm.fp32, "minilm", 1, env.fleet)
    env.watch.wait_active(edge.device, "minilm", 1, timeout=300)
    first = coordinator.bytes_published
    print(f"first install: {first} bytes on the wire for {size} ({first / size:.3f})")
    assert first < 0.95 * size  # compressed (fp32 weights: about 0.92)

    release_and_deploy(env.registry, env.keys, minilm.fp32, "minilm", 2, env.fleet)
    env.watch.wait_active(edge.device, "minilm", 2, timeout=300)
    same = coordinator.bytes_published - first
    print(f"identical bytes as a new release: {same} bytes on the wire")
    assert same == 0

    head = retrain_last_layer(minilm.fp32, env.tmp / "head.onnx")
    release_and_deploy(env.registry, env.keys, head, "minilm", 3, env.fleet)
    env.watch.wait_active(edge.device, "minilm", 3, timeout=300)
    changed = coordinator.bytes_published - first - same
    print(f"last layer changed: {changed} bytes on the wire ({changed / size:.4f})")
    assert 0 < changed < 0.05 * size
    assert sha256_file(edge.model_path("minilm", 3)) == sha256_file(head)
