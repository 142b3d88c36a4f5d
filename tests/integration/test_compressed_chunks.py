"""Chunks compressed on the wire, end to end (issue 15): the real coordinator sends a
compressible model to two edges as real processes in fewer bytes than the model, compressing
each chunk once; and an edge on an open broker refuses decompression bombs and garbage with
their reason, and still gets the release."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import zstandard
from onnx import numpy_helper

from protocol import ChunkFrame, compress_chunk
from runtime.files import sha256_file
from testkit.synthetic_models import make_model
from tests.integration.test_edge_adversarial import rejected_on, start_download
from tests.integration.test_rejections import CHUNK, Setup, setup
from tests.support.env import Env
from tests.support.fleet import release_and_deploy

__all__ = ["setup"]

MB = 1 << 20


def sparse_model(path: Path, size: int, seed: int) -> Path:
    """A synthetic model with most of its weights zero (as if pruned): it compresses well."""
    make_model(path, size, seed=seed)
    model = onnx.load(str(path))
    weight = model.graph.initializer[0]
    w = numpy_helper.to_array(weight).copy()
    w[np.abs(w) < 1.0] = 0.0  # about 68 % of a standard normal
    weight.CopyFrom(numpy_helper.from_array(w, weight.name))
    onnx.save(model, str(path))
    return path


def test_a_compressible_release_travels_in_fewer_bytes_compressed_once(env: Env) -> None:
    model = sparse_model(env.tmp / "sparse.onnx", 6 * MB, seed=7)
    size = model.stat().st_size
    edges = [env.edge(f"z-{i}") for i in range(2)]
    for e in edges:
        env.wait_online(e.device)
    coordinator = env.start_coordinator()
    release_and_deploy(env.registry, env.keys, model, "m", 1, env.fleet)
    for e in edges:
        env.watch.wait_active(e.device, "m", 1)
        assert sha256_file(e.model_path("m", 1)) == sha256_file(model)
    record = env.registry.release(env.fleet, "m", 1)
    assert record is not None
    codec = coordinator.chunk_codec
    assert codec.compressions == record.n_chunks  # once each, however many sends
    assert codec.compressed_sent >= record.n_chunks and codec.raw_sent == 0
    per_copy = coordinator.bytes_published / (coordinator.chunks_published / record.n_chunks)
    assert per_copy < 0.75 * size, (per_copy, size)


def test_decompression_bombs_and_garbage_are_refused_and_the_release_still_arrives(
    setup: Setup,
) -> None:
    c, t = setup.coord, setup.coord.topics
    v2 = start_download(setup)
    block, resend = t.chunk_block("m", 2, 0), t.resend("target")
    bombs = {
        "declared": zstandard.ZstdCompressor().compress(bytes(64 * MB)),
        "hidden": zstandard.ZstdCompressor(write_content_size=False).compress(bytes(CHUNK + 1)),
    }
    for topic in (block, resend):
        for bomb in bombs.values():
            c.probe.publish(topic, ChunkFrame.encode(0, v2.id, bomb, compressed=True))
            rejected_on(setup, "decompression-bomb", topic)
        c.probe.publish(
            topic, ChunkFrame.encode(0, v2.id, b"\x28\xb5\x2f\xfd junk", compressed=True)
        )
        rejected_on(setup, "bad-compression", topic)
    setup.assert_untouched()
    # the genuine chunks, compressed where that pays
    m = v2.manifest
    for i in range(m.n_chunks):
        data = v2.data[i * CHUNK : (i + 1) * CHUNK]
        packed = compress_chunk(data)
        frame = ChunkFrame.encode(i, v2.id, packed or data, compressed=packed is not None)
        c.probe.publish(t.chunk_block(m.name, m.version, m.block_of(i)), frame)
    setup.watch.wait_active("target", "m", 2)
    path = setup.edge.model_path("m", 2)
    assert sha256_file(path) == hashlib.sha256(v2.data).digest()
    assert setup.edge.alive
