"""Chunk verification cost (reported, no target): ``DownloadSession.accept`` per MB, in this
process, against ``hashlib.sha256`` alone over the same payloads.

``accept`` is what the edge does to every chunk frame before it writes a byte: parse the header,
check release id, index, length, and the chunk's sha256 against the signed manifest. The ratio
says how much the checks cost beyond the hash itself (1.0: nothing).
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from protocol import ChunkFrame, DownloadSession, TrustedRoot, VerifyKey, open_manifest

from .common import MB, Bench

REPS = 5


def run(b: Bench) -> dict[str, Any]:
    size = b.size(32, 64)
    model = b.model(size, onnx=False, seed=6)
    fleet = b.fleet("ver")
    registry = b.registry(fleet)
    record = b.release(registry, fleet, model)
    registry.close()
    trust = TrustedRoot(VerifyKey.from_pem((b.keydir / "root.pub").read_bytes()))
    release = open_manifest(trust, record.manifest, now=time.time(), fleet=fleet)
    m = release.manifest
    data = model.read_bytes()
    frames = [
        ChunkFrame.encode(i, release.id, data[i * m.chunk_size : (i + 1) * m.chunk_size])
        for i in range(m.n_chunks)
    ]
    payloads = [memoryview(f)[32:] for f in frames]
    del data
    b.progress(f"verify: {m.n_chunks} chunks of {m.chunk_size // 1024} KiB, best of {REPS}")
    accept_s = []
    sha_s = []
    for _ in range(REPS):
        session = DownloadSession(release)
        t0 = time.perf_counter()
        for frame in frames:
            session.accept(frame)
        t1 = time.perf_counter()
        for payload in payloads:
            hashlib.sha256(payload).digest()
        t2 = time.perf_counter()
        accept_s.append(t1 - t0)
        sha_s.append(t2 - t1)
    mb = m.size / MB
    accept_ms = 1000 * min(accept_s) / mb
    sha_ms = 1000 * min(sha_s) / mb
    return {
        "verify_ms_per_mb": round(accept_ms, 3),
        "verify_sha256_ratio": round(accept_ms / sha_ms, 3),
        "verify": {
            "size_bytes": m.size,
            "chunk_size": m.chunk_size,
            "sha256_ms_per_mb": round(sha_ms, 3),
        },
    }
