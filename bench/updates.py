"""What an update costs on the edge's link, on the real MiniLM (issue 15): bytes the coordinator
published for each new version, divided by the new model's size, and what applying a delta
costs the edge.

One edge (a ``modelcast edge`` process) and the real coordinator. The versions, each made here
from the MiniLM that ``modelcast models build minilm`` builds (86.6 MB), released and deployed
in turn, so the edge holds the one before each:

- ``update_bytes_first``: m@1, the first install, nothing to start from;
- ``update_bytes_same``: m@2, the same file released again (the demo's ``minilm@2``);
- ``update_bytes_head``: m@3, only the last layer (``encoder.layer.5.output.*``) changed, each
  weight times ``1 + 0.01 N(0, 1)`` (retraining a head);
- ``update_bytes_full``: m@4, every float weight times ``1 + 0.001 N(0, 1)`` (a full fine-tune).

The figure is the coordinator's ``bytes_published`` (chunk frames, headers included) from the
deploy until the edge reports the version active, over the version's size.

``update_apply_ratio``: applying m@4's delta (the largest) to m@3 file to file, with the edge's
own ``edge_node.delta_updates.apply_file`` (read the delta and the base, write the result,
checking its sha256 as it streams, ``fdatasync``), over writing the same bytes as the edge
writes a release from the network, with its own code (``DownloadSession.accept`` and
``PartialDownload.write`` per chunk frame, then the whole-file check and ``finalize``): 5 pairs
in alternation, the median of their ratios.
``update_apply_rss_growth_mb``: the peak RSS (``VmHWM``) of a process that applies that delta,
over its RSS just before (after its imports): what an apply adds to the edge. (The issue's
``edge_rss_growth_mb`` is already the receiving figure of ``bench.rss``.)
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from coordinator.delta_build import delta_blob
from edge_node.delta_updates import apply_file
from edge_node.storage import PartialDownload
from modelcast.textmodels.build import build_minilm
from protocol import (
    DEFAULT_CHUNK_SIZE,
    ChunkFrame,
    DeviceState,
    DownloadSession,
    Manifest,
    UpdateState,
    VerifiedManifest,
    hash_chunks,
)
from protocol.delta import read_header
from protocol.onnx_layout import tensor_spans

from .common import MB, Bench, BenchError, edges_running

REPS = 5
HEAD_PREFIX = "encoder.layer.5.output."

KINDS = (
    ("update_bytes_first", "first install"),
    ("update_bytes_same", "identical weights, new release"),
    ("update_bytes_head", "only the last layer changed"),
    ("update_bytes_full", "every weight changed slightly"),
)


def versions(b: Bench) -> list[Path]:
    """MiniLM and the three versions made from it (see the module's docstring)."""
    out = b.dir("minilm")
    built = build_minilm(out).model
    base = built.read_bytes()
    spans = [s for s in tensor_spans(base) if s.width == 4 and s.length >= 1024]
    rng = np.random.default_rng(15)

    def scaled(data: bytes, prefix: str, noise: float, name: str) -> Path:
        new = bytearray(data)
        for s in spans:
            if s.name.startswith(prefix):
                a = np.frombuffer(data, dtype="<f4", count=s.length // 4, offset=s.offset)
                moved = a * (1 + noise * rng.standard_normal(a.shape)).astype("<f4")
                new[s.offset : s.end] = moved.astype("<f4").tobytes()
        path = out / name
        path.write_bytes(new)
        return path

    head = scaled(base, HEAD_PREFIX, 1e-2, "head.onnx")
    full = scaled(head.read_bytes(), "", 1e-3, "full.onnx")
    return [built, built, head, full]


def run(b: Bench) -> dict[str, Any]:
    b.progress("updates: building MiniLM and three new versions of it")
    paths = versions(b)
    fleet = b.fleet("upd")
    registry = b.registry(fleet)
    service = b.coordinator(fleet)
    results: dict[str, Any] = {}
    detail: list[dict[str, Any]] = []
    try:
        with b.watch(fleet) as watch, edges_running([b.edge(fleet, "edge-0")]) as edges:
            (edge,) = edges
            watch.wait_online([edge.device], 60, edges)
            for version, (path, (key, what)) in enumerate(zip(paths, KINDS, strict=True), 1):
                record = b.release(registry, fleet, path, name="minilm", version=version)
                before = service.bytes_published
                registry.deploy("minilm", version, fleet=fleet)
                watch.wait_state(edge.device, _active("minilm", version), 600, edge)
                sent = service.bytes_published - before
                results[key] = round(sent / record.size, 4)
                deltas = [(d.base_version, d.size) for d in record.signed.deltas]
                detail.append(
                    {"key": key, "what": what, "size": record.size, "sent": sent, "deltas": deltas}
                )
                b.progress(f"updates: {what}: {sent / MB:.2f} MB of {record.size / MB:.1f} MB")
            full_delta = delta_blob(registry.blob_dir, record.signed.deltas[0].sha256)
    finally:
        service.stop()
        registry.close()
    results.update(apply_figures(b, paths[2], full_delta))
    results["updates"] = {"versions": detail}
    return results


def _active(name: str, version: int) -> Callable[[DeviceState], bool]:
    return lambda s: s.state is UpdateState.ACTIVE and s.active.get(name) == version


def apply_figures(b: Bench, base: Path, delta: Path) -> dict[str, Any]:
    """Apply and write in alternation, ``REPS`` pairs: each pair's ratio is taken under the same
    load, and the figure is their median (the best times' ratio is in the details)."""
    out = b.dir("apply") / "out.onnx"
    _apply(base, delta, out)
    write = _downloader_writes(out)
    pairs = [(_timed(lambda: _apply(base, delta, out)), _timed(write)) for _ in range(REPS)]
    ratio = statistics.median(a / w for a, w in pairs)
    apply_s, write_s = min(a for a, _ in pairs), min(w for _, w in pairs)
    growth = _apply_rss_growth(base, delta, out)
    b.progress(f"updates: apply {apply_s:.2f}s, write {write_s:.2f}s (best), RSS +{growth:.1f} MB")
    return {
        "update_apply_ratio": round(ratio, 3),
        "update_apply_rss_growth_mb": round(growth, 1),
        "update_apply": {
            "apply_s": round(apply_s, 3),
            "write_s": round(write_s, 3),
            "best_ratio": round(apply_s / write_s, 3),
            "pairs": [[round(a, 3), round(w, 3)] for a, w in pairs],
        },
    }


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _apply(base: Path, delta: Path, out: Path) -> None:
    """What the edge does: ``edge_node.delta_updates.apply_file`` (stream, write, check, sync)."""
    with delta.open("rb") as d:
        promised = read_header(d.read).target_sha256
    apply_file(delta, base, out, promised)


def _downloader_writes(source: Path) -> Callable[[], None]:
    """The baseline: the bytes of ``source`` as the edge writes a release from the network,
    with its own code: each chunk frame accepted (``DownloadSession.accept``: header, release
    id, the chunk's sha256 against the manifest), written (``PartialDownload.write``: pwrite,
    flush-behind), committed; then ``finish`` and the rename of ``finalize`` (which syncs).
    The frames are in memory already: the network's own time is not counted. Returns the timed
    part as a callable."""
    whole, hashes, size = hash_chunks(_pieces(source, DEFAULT_CHUNK_SIZE))
    manifest = Manifest(
        fleet="bench",
        name="m",
        version=1,
        size=size,
        sha256=whole,
        chunk_size=DEFAULT_CHUNK_SIZE,
        chunks=hashes,
        created=1.0,
        expires=2.0,
    )
    release = VerifiedManifest(manifest, manifest.release_id, None, b"")  # type: ignore[arg-type]
    frames = [
        ChunkFrame.encode(i, release.id, piece)
        for i, piece in enumerate(_pieces(source, DEFAULT_CHUNK_SIZE))
    ]
    directory = source.parent / "written"

    def write() -> None:
        shutil.rmtree(directory, ignore_errors=True)
        session = DownloadSession(release)
        part = PartialDownload(directory, manifest, b"")
        for frame in frames:
            chunk = session.accept(frame)
            assert chunk is not None
            part.write(chunk)
            session.commit(chunk, 0.0)
        session.finish()
        part.finalize()

    return write


def _pieces(path: Path, size: int) -> Iterator[bytes]:
    with path.open("rb") as f:
        while piece := f.read(size):
            yield piece


_CHILD = """
import os, sys
from bench.updates import _apply, _status_kb
before = _status_kb("VmRSS")
_apply(*map(__import__("pathlib").Path, sys.argv[1:4]))
print(before, _status_kb("VmHWM"))
"""


def _apply_rss_growth(base: Path, delta: Path, out: Path) -> float:
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(base), str(delta), str(out)],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[1],
    )
    if proc.returncode != 0:
        raise BenchError(f"the apply process failed: {proc.stderr[-500:]}")
    before, peak = (int(v) for v in proc.stdout.split())
    return (peak - before) / 1024


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise BenchError(f"no {field} in /proc/self/status")
