"""``edge_idle_rss_mb`` and ``edge_idle_cpu_pct``: the agent with one small model active (so
onnxruntime is loaded and the local inference endpoint is up), idle for 10 s.

CPU is utime + stime from /proc/PID/stat over the 10 s (100 = one core); RSS is ``VmRSS`` at the
end. For scale, the same is read, over the same 10 s, from a plain paho subscriber process
(``bench.rawsub``, connected and idle): the least an MQTT client in Python costs.
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

from testkit.cli_process import REPO
from testkit.procfs import proc_cpu_s, proc_status_kb

from .common import MB, Bench, reached

IDLE_S = 10.0


def idle_subscriber(url: str, topic: str) -> subprocess.Popen[str]:
    """A plain paho subscriber (``bench.rawsub``) waiting for one message that never comes (it
    gives up after 60 s)."""
    return subprocess.Popen(
        [sys.executable, "-m", "bench.rawsub", url, topic, "1", "--timeout", "60"],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        cwd=REPO,
        text=True,
    )


def run(b: Bench) -> dict[str, Any]:
    model = b.model(1 * MB, seed=5)
    fleet = b.fleet("idle")
    registry = b.registry(fleet)
    record = b.release(registry, fleet, model)
    registry.deploy(record.name, record.version, fleet=fleet)
    service = b.coordinator(fleet)
    raw = idle_subscriber(b.url, f"bench/idle/{fleet}")
    try:
        with b.watch(fleet) as watch:
            edge = b.edge(fleet, "edge-0", http="127.0.0.1:0")
            try:
                watch.wait_state(edge.device, reached("active"), 60, edge)
                time.sleep(1.0)  # the activation's aftermath (state, status, events) is sent
                b.progress(f"idle: {record.name}@{record.version} active, idle for {IDLE_S:.0f} s")
                cpu0, raw_cpu0, t0 = edge.cpu_s(), proc_cpu_s(raw.pid), time.monotonic()
                time.sleep(IDLE_S)
                cpu1, raw_cpu1, t1 = edge.cpu_s(), proc_cpu_s(raw.pid), time.monotonic()
                rss_kb = edge.rss_kb()
                raw_rss_kb = proc_status_kb(raw.pid, "VmRSS")
                edge.check_alive()
            finally:
                edge.stop()
    finally:
        raw.kill()
        raw.wait()
        service.stop()
        registry.close()
    cpu_pct = 100 * (cpu1 - cpu0) / (t1 - t0)
    return {
        "edge_idle_rss_mb": round(rss_kb / 1024, 1),
        "edge_idle_cpu_pct": round(cpu_pct, 2),
        "idle": {
            "seconds": round(t1 - t0, 2),
            "model_bytes": record.size,
            "paho_rss_mb": round(raw_rss_kb / 1024, 1),
            "paho_cpu_pct": round(100 * (raw_cpu1 - raw_cpu0) / (t1 - t0), 2),
        },
    }
