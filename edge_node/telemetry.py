"""The edge's telemetry: metrics samples and events, numbered and stored before they are sent.

``seq`` counts every telemetry message of this agent start (metrics and events share it), so a
consumer that sees every message of a ``boot`` sees 1, 2, 3... with no gap. Messages made while
the broker is unreachable carry ``hist: true``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import msgpack

from protocol import DRIFT_KIND, DeviceEvent, DriftSample, MetricsSample, Topics
from protocol.codec import pack

from .drift import DriftMonitor
from .metrics import InferenceStats, ProcessSampler
from .outbox import Outbox, Publish


def add_dropped(payload: bytes, dropped: int) -> bytes:
    """Add ``dropped`` to the ``dropped`` field of a telemetry payload (our own msgpack map)."""
    obj = msgpack.unpackb(payload, raw=False)
    obj["dropped"] = int(obj.get("dropped", 0)) + dropped
    return pack(obj)


class Telemetry:
    def __init__(
        self,
        *,
        device: str,
        boot: str,
        topics: Topics,
        data_dir: Path,
        interval: float,
        capacity: int,
        clock: Callable[[], float] = time.time,
        drift_epsilon: float | None = None,
    ) -> None:
        self.device = device
        self.boot = boot
        self.topics = topics
        self.interval = interval
        self.clock = clock
        self.outbox = Outbox(data_dir / "telemetry.sqlite", add_dropped, capacity=capacity)
        self.stats = InferenceStats()
        self.drift = DriftMonitor(drift_epsilon)
        self.sampler = ProcessSampler(data_dir)
        self.seq = 0
        self._next_sample = time.monotonic() + interval

    def event(self, event: DeviceEvent, *, connected: bool) -> None:
        """Store an event (its ``seq``, ``boot`` and ``device`` are filled in here)."""
        self.seq += 1
        seq = self.seq

        self.outbox.add(
            self.topics.telemetry(self.device, "events"),
            DeviceEvent(
                device=self.device,
                event=event.event,
                ts=event.ts,
                boot=self.boot,
                seq=seq,
                reason=event.reason,
                detail=event.detail,
                topic=event.topic,
                model=event.model,
                version=event.version,
                hist=not connected,
            ).encode(),
        )

    def sample(
        self, *, connected: bool, active: dict[str, int], reconnects: int, bytes_received: int
    ) -> None:
        per_model, totals = self.stats.take()
        process = self.sampler.sample()
        self.seq += 1
        seq = self.seq
        ts = self.clock()

        self.outbox.add(
            self.topics.telemetry(self.device, "metrics"),
            MetricsSample(
                device=self.device,
                boot=self.boot,
                seq=seq,
                ts=ts,
                hist=not connected,
                reconnects=reconnects,
                bytes_received=bytes_received,
                inferences=totals.inferences,
                errors=totals.errors,
                latency_p50_ms=totals.latency_p50_ms,
                latency_p95_ms=totals.latency_p95_ms,
                active=active,
                models=per_model,
                **process,
            ).encode(),
        )
        self._drift_samples(connected, ts)

    def _drift_samples(self, connected: bool, ts: float) -> None:
        """A ``drift`` sample per model version whose window is full enough (drift.py)."""
        for taken in self.drift.take():
            self.seq += 1
            self.outbox.add(
                self.topics.telemetry(self.device, DRIFT_KIND),
                DriftSample(
                    device=self.device,
                    boot=self.boot,
                    seq=self.seq,
                    ts=ts,
                    hist=not connected,
                    model=taken.model,
                    version=taken.version,
                    variant=taken.variant,
                    epsilon=taken.epsilon,
                    **taken.window.to_sample_fields(),
                ).encode(),
            )

    def due(self) -> bool:
        now = time.monotonic()
        if now < self._next_sample:
            return False
        self._next_sample = max(self._next_sample + self.interval, now)
        return True

    def pump(self, publish: Publish) -> None:
        self.outbox.pump(publish)

    def close(self) -> None:
        self.outbox.close()
