"""``edge_rss_growth_mb``: how much the edge process's resident memory grows while it receives and
verifies a 256 MB release (quick: 128 MB). It must not grow with the model size.

Before: ``VmRSS`` of the edge, online and idle, just before the deploy (the high-water mark is
reset there). Peak: ``VmHWM`` (the kernel's high-water mark) read when the state ``verifying``
arrives, which covers the whole download exactly, and ``VmRSS`` sampled every 10 ms from then
until ``verified``, which covers the whole-file check. Activation is excluded: right after
``verified`` an agent activating a model loads onnxruntime, whose memory is not the
delivery's. The release is random bytes (``--kind file``): delivered, hashed and written
exactly like an ONNX file of that size, and activated, outside the measurement, without being
loaded.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from testkit.cli_process import CliProcess

from .common import MB, Bench, reached

SAMPLE_S = 0.01


def reset_hwm(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux: ``echo 5 > clear_refs``), so the
    high-water mark read later is this release's, not a start-up transient's."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


class RssSampler:
    """``VmRSS`` of a process every ``SAMPLE_S``, on a thread of its own, from ``start()`` until
    ``stop()`` (or until the process is gone)."""

    def __init__(self, process: CliProcess) -> None:
        self.samples: list[int] = []
        self._process = process
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(self._process.rss_kb())
            except (OSError, RuntimeError):
                return
            self._stop.wait(SAMPLE_S)


def run(b: Bench) -> dict[str, Any]:
    size = b.size(128, 256)
    b.progress(f"rss: generating a {size / MB:.0f} MB release")
    model = b.model(size, onnx=False, seed=4)
    fleet = b.fleet("rss")
    registry = b.registry(fleet)
    record = b.release(registry, fleet, model)
    service = b.coordinator(fleet)
    try:
        with b.watch(fleet) as watch:
            edge = b.edge(fleet, "edge-0")
            sampler = RssSampler(edge)
            try:
                watch.wait_online([edge.device], 30, [edge])
                time.sleep(0.5)  # let start-up settle (first state and status published)
                before_kb = edge.rss_kb()
                hwm_reset = reset_hwm(edge.pid)
                sampler.start()
                b.progress(f"rss: deploying {size / MB:.0f} MB (edge at {before_kb / 1024:.1f} MB)")
                registry.deploy(record.name, record.version, fleet=fleet)
                watch.wait_state(edge.device, reached("verifying", "verified"), 600, edge)
                hwm_kb = edge.hwm_kb()
                mark = len(sampler.samples)
                watch.wait_state(edge.device, reached("verified"), 600, edge)
                sampler.stop()
                peak_kb = max([hwm_kb, *sampler.samples[mark:]])
            finally:
                sampler.stop()
                edge.stop()
    finally:
        service.stop()
        registry.close()
    growth = (peak_kb - before_kb) / 1024
    return {
        "edge_rss_growth_mb": round(growth, 1),
        "rss": {
            "size_bytes": record.size,
            "before_mb": round(before_kb / 1024, 1),
            "peak_mb": round(peak_kb / 1024, 1),
            "hwm_at_verifying_mb": round(hwm_kb / 1024, 1),
            "samples": len(sampler.samples),
            "hwm_reset": hwm_reset,
            "growth_per_model_mb": round(growth / (record.size / MB), 4),
        },
    }
