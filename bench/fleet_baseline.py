"""The baseline of ``fleet_delivery_ratio``: plain paho publishes the model's bytes once, QoS 1,
in chunks of the release's size, to N plain subscribers spread over the same number of processes
as the simulation (``bench.fleetsub``). Timed from the first publish to the last message in, at
the last subscriber."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

from testkit.cli_process import REPO

from .baseline import plain_publisher
from .common import BenchError


def fanout_baseline(
    url: str, topic: str, chunks: list[bytes], n: int, processes: int
) -> dict[str, Any]:
    """Seconds to move ``chunks`` to ``n`` subscribers over ``processes``, and what they used."""
    per = [n // processes + (1 if i < n % processes else 0) for i in range(processes)]
    subs = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.fleetsub", url, topic, str(len(chunks)), str(k)],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
            text=True,
        )
        for k in per
        if k
    ]
    try:
        for sub in subs:
            assert sub.stdout is not None
            if sub.stdout.readline().strip() != "ready":
                raise BenchError("a baseline subscriber process did not start")
        start = _publish(url, topic, chunks)
        results = [json.loads(_line(sub)) for sub in subs]
    finally:
        for sub in subs:
            if sub.poll() is None:
                sub.kill()
            sub.wait()
    if not all(r["complete"] for r in results):
        got = sum(r["messages"] for r in results)
        raise BenchError(f"baseline subscribers got {got} of {n * len(chunks)} messages")
    return {
        "seconds": max(r["last"] for r in results) - start,
        "subscriber_cpu_s": round(sum(r["cpu_s"] for r in results), 2),
        "bytes_received": sum(r["bytes"] for r in results),
    }


def _line(sub: subprocess.Popen[str]) -> str:
    assert sub.stdout is not None
    return sub.stdout.readline()


def _publish(url: str, topic: str, chunks: list[bytes]) -> float:
    """Publish every chunk (QoS 1, paho's defaults); the wall-clock time it started."""
    with plain_publisher(url, "bench-fleetpub") as pub:
        start = time.time()
        infos = [pub.publish(topic, piece, qos=1) for piece in chunks]
        for info in infos:
            info.wait_for_publish(60)
    return start
