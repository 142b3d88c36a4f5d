"""``delivery_ratio``: a full modelcast delivery to one edge against plain paho; and the time to
the first chunk.

modelcast side: the coordinator (in this process) and one edge (``modelcast edge`` subprocess,
``--http off``), online before the deploy. Timed from ``Registry.deploy`` to the arrival of the
edge's retained state ``verified``: the signed index and manifest, every chunk verified and
written to disk, the whole-file sha256; activation excluded (the release is random bytes, a
``file`` release, delivered and checked like a model, never loaded). Baseline: the same bytes,
in the same chunk size, from a plain paho publisher to a plain paho subscriber through the same
broker (``bench.baseline``). Throughput ratio = baseline seconds / modelcast seconds.

The model is large enough that a delivery takes over a second here (quick 512 MB, full 1 GB):
at 32 MB it took 0.15-0.25 s and the start-up latency, which the baseline does not have, was a
third of it. That latency is reported on its own (``delivery_first_chunk_ms``): from the deploy
to the first chunk on the wire, as a subscriber to the release's first block sees it (arriving
with the edge's copy; it adds 16 chunks to the broker's work, not the release), next to the
time to the signed index on the wire.

The two alternate, ``reps`` times each; each pair, measured back to back, gives a ratio under the
same load, and the figure is the median of those ratios. On a shared machine the load changes
within seconds: a ratio of each side's best time would pair moments that did not coincide (one
lucky baseline run on an idle machine swings it by a third), the median of paired ratios does
not. Every time, and the ratio of the best times, are in the JSON details. Each run's files (the
edge's copy, the release blob) are removed after it, so that runs do not pile up gigabytes.
"""

from __future__ import annotations

import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol import DEFAULT_CHUNK_SIZE, Topics
from runtime.urls import parse_broker_url
from testkit.local_broker import LocalBroker
from testkit.mqtt_recorder import TopicRecorder

from .baseline import raw_transfer, read_chunks
from .common import MB, Bench, BenchError, reached

#: The pair's own Mosquitto: the dev profile, and no cap on a client's queue. The plain paho
#: publisher has no flow control: beyond the default cap (1000 messages, 250 MB in 256 KiB
#: chunks) the broker would drop what its subscriber has not taken yet. modelcast never has more
#: than its window queued, so the cap changes nothing on its side.
UNBOUNDED_QUEUE = "max_queued_messages 0"


@dataclass
class Delivery:
    seconds: float
    chunks_published: int
    bytes_published: int
    #: from the deploy to the signed index on the wire, and to the first chunk on it
    index_s: float
    first_chunk_s: float


def modelcast_delivery(
    b: Bench,
    url: str,
    model: Path,
    chunk_size: int,
    *,
    label: str = "dlv",
    timeout: float = 300.0,
) -> Delivery:
    """One delivery of ``model`` to a fresh edge in a fresh fleet, through the broker at
    ``url``."""
    fleet = b.fleet(label)
    registry = b.registry(fleet)
    record = b.release(registry, fleet, model, chunk_size=chunk_size)
    service = b.coordinator(fleet, broker_url=url)
    topics = Topics(fleet)
    first = [topics.index(), topics.chunk_block(record.name, record.version, 0)]
    try:
        with (
            b.watch(fleet, broker_url=url) as watch,
            TopicRecorder(*parse_broker_url(url), first, qos=0) as wire,
        ):
            edge = b.edge(fleet, "edge-0", broker_url=url)
            try:
                watch.wait_online([edge.device], 30, [edge])
                start = time.monotonic()
                registry.deploy(record.name, record.version, fleet=fleet)
                done, _ = watch.wait_state_received(
                    edge.device, reached("verified", "activating", "active"), timeout, edge
                )
            finally:
                edge.stop()
            index_at, chunk_at = _first_arrivals(wire, first)
        return Delivery(
            done - start,
            service.chunks_published,
            service.bytes_published,
            index_at - start,
            chunk_at - start,
        )
    finally:
        service.stop()
        registry.close()
        shutil.rmtree(b.dir(f"edges/{fleet}"), ignore_errors=True)
        Path(record.blob_path).unlink(missing_ok=True)


def _first_arrivals(wire: TopicRecorder, topics: list[str]) -> tuple[float, ...]:
    """When the first message of each of ``topics`` arrived."""
    seen = {
        topic: min((m.at for m in wire.messages if m.topic == topic), default=None)
        for topic in topics
    }
    missing = [topic for topic, at in seen.items() if at is None]
    if missing:
        raise BenchError(f"nothing seen on {', '.join(missing)}")
    return tuple(at for at in seen.values() if at is not None)


def measure_pair(b: Bench, model: Path, chunk_size: int, label: str, reps: int) -> dict[str, Any]:
    """``reps`` alternating runs of paho and modelcast: the median of their paired ratios, and
    the details."""
    size = model.stat().st_size
    chunks = read_chunks(model, chunk_size)
    raw: list[float] = []
    runs: list[Delivery] = []
    with LocalBroker(extra_conf=UNBOUNDED_QUEUE, workdir=b.dir(f"broker-{label}")) as broker:
        for _ in range(reps):
            raw.append(raw_transfer(broker.url, f"bench/raw/{b.fleet(label)}", chunks))
            runs.append(modelcast_delivery(b, broker.url, model, chunk_size, label=label))
    mc = [run.seconds for run in runs]
    best_raw, best_mc = min(raw), min(mc)
    paired = [r / m for r, m in zip(raw, mc, strict=True)]
    return {
        "size_bytes": size,
        "chunk_size": chunk_size,
        "reps": reps,
        "modelcast_s": [round(t, 3) for t in mc],
        "raw_s": [round(t, 3) for t in raw],
        "paired_ratios": [round(r, 3) for r in paired],
        "ratio": round(statistics.median(paired), 3),
        "best_ratio": round(best_raw / best_mc, 3),
        "modelcast_mb_s": round(size / MB / statistics.median(mc), 1),
        "raw_mb_s": round(size / MB / statistics.median(raw), 1),
        "best_modelcast_mb_s": round(size / MB / best_mc, 1),
        "best_raw_mb_s": round(size / MB / best_raw, 1),
        "chunks_published": runs[-1].chunks_published,
        "index_ms": [round(run.index_s * 1000, 1) for run in runs],
        "first_chunk_ms": [round(run.first_chunk_s * 1000, 1) for run in runs],
        "first_chunk_median_ms": round(statistics.median(r.first_chunk_s for r in runs) * 1000, 1),
    }


def run(b: Bench) -> dict[str, Any]:
    size = b.size(512, 1024)
    reps = 5
    model = b.model(size, onnx=False)
    b.progress(
        f"delivery: {size / MB:.0f} MB in {DEFAULT_CHUNK_SIZE // 1024} KiB chunks, "
        f"{reps} pairs (modelcast vs plain paho)"
    )
    detail = measure_pair(b, model, DEFAULT_CHUNK_SIZE, "dlv", reps)
    b.progress(
        f"delivery: modelcast {detail['modelcast_mb_s']} MB/s, paho {detail['raw_mb_s']} MB/s; "
        f"first chunk after {detail['first_chunk_median_ms']} ms"
    )
    return {
        "delivery_ratio": detail["ratio"],
        "delivery_first_chunk_ms": detail["first_chunk_median_ms"],
        "delivery": detail,
    }
