"""``/metrics``: the fleet in the Prometheus exposition format (prometheus-client), from the
snapshot (a scrape never reads the database) and what the broker watch counted.

Gauges describe the fleet now; counters (``_total``) only go up: telemetry rows and rejections
are counted by row id as they arrive (``queries.IngestCounter``), chunk bytes as the broker
delivers them to the dashboard. Label values that devices choose (rejection reasons) are capped
(``queries.MAX_REASONS``), so a device cannot make the scrape grow without bound.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from coordinator.rollout_plan import STATES

from .broker_watch import BrokerState
from .fleet_view import state_of
from .snapshot import Snapshot

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class Scrape:
    snapshot: Snapshot
    broker: BrokerState
    now: float


class FleetCollector(Collector):
    """Yields the metric families of one ``Scrape`` (taken when Prometheus asks)."""

    def __init__(self, scrape: Callable[[], Scrape]) -> None:
        self._scrape = scrape

    def collect(self) -> Iterator[Metric]:
        s = self._scrape()
        yield from _dashboard(s)
        data = s.snapshot.fleet
        if data is not None:
            yield from _devices(data.status["devices"])
            yield from _rollouts(data.rollouts)
            yield from _health(data.status.get("health") or [])
            yield from _counters(data.ingested, data.rejected_total)
            yield from _chunks(s.broker, {r["release_id"]: r for r in data.releases})


def exposition(scrape: Callable[[], Scrape]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(scrape))
    return generate_latest(registry)


def _dashboard(s: Scrape) -> Iterator[Metric]:
    up = GaugeMetricFamily(
        "modelcast_dashboard_database_up", "1 if the last read of the database succeeded"
    )
    up.add_metric([], 0.0 if s.snapshot.error or s.snapshot.fleet is None else 1.0)
    age = GaugeMetricFamily(
        "modelcast_dashboard_snapshot_age_seconds", "Seconds since the data was read"
    )
    if s.snapshot.taken_at is not None:
        age.add_metric([], max(0.0, s.now - s.snapshot.taken_at))
    broker = GaugeMetricFamily("modelcast_dashboard_broker_up", "1 if the broker is connected")
    broker.add_metric([], 1.0 if s.broker.connected else 0.0)
    yield from (up, age, broker)


def _devices(devices: list[dict[str, Any]]) -> Iterator[Metric]:
    online = GaugeMetricFamily("modelcast_devices_online", "Devices whose status says online")
    online.add_metric([], float(sum(1 for d in devices if d.get("online"))))
    by_state = GaugeMetricFamily(
        "modelcast_devices", "Devices by their update state", labels=["state"]
    )
    for state, n in sorted(Counter(state_of(d) for d in devices).items()):
        by_state.add_metric([state], float(n))
    runs: Counter[tuple[str, str, str]] = Counter()
    for d in devices:
        variants = d.get("variants") or {}
        for model, version in (d.get("active") or {}).items():
            runs[(model, str(version), variants.get(model, ""))] += 1
    release = GaugeMetricFamily(
        "modelcast_release_devices",
        "Devices running each model version (and variant)",
        labels=["model", "version", "variant"],
    )
    for labels, n in sorted(runs.items()):
        release.add_metric(list(labels), float(n))
    yield from (online, by_state, release)


def _rollouts(reports: list[dict[str, Any]]) -> Iterator[Metric]:
    labels = ["model", "version"]
    stage = GaugeMetricFamily(
        "modelcast_rollout_stage", "The rollout's stage (1-based)", labels=labels
    )
    stages = GaugeMetricFamily(
        "modelcast_rollout_stages", "The rollout's number of stages", labels=labels
    )
    share = GaugeMetricFamily(
        "modelcast_rollout_share", "Share of the selected devices admitted (0-1)", labels=labels
    )
    state = GaugeMetricFamily(
        "modelcast_rollout_state",
        "1 for the rollout's state, 0 for the others",
        labels=[*labels, "state"],
    )
    for r in reports:
        key = [r["model"], str(r["version"])]
        stage.add_metric(key, float(r["stage"]))
        stages.add_metric(key, float(len(r["stages"])))
        share.add_metric(key, r["ppm"] / 1_000_000)
        for name in sorted(STATES):
            state.add_metric([*key, name], 1.0 if r["state"] == name else 0.0)
    yield from (stage, stages, share, state)


def _health(health: list[dict[str, Any]]) -> Iterator[Metric]:
    labels = ["model", "version"]
    families = {
        "activation_failures": GaugeMetricFamily(
            "modelcast_model_activation_failures",
            "activation-failed events in the window",
            labels=labels,
        ),
        "error_rate": GaugeMetricFamily(
            "modelcast_model_error_rate",
            "Failed inferences / inferences in the window",
            labels=labels,
        ),
        "latency_p95_ms": GaugeMetricFamily(
            "modelcast_model_latency_p95_ms",
            "Inference-weighted p95 latency in the window",
            labels=labels,
        ),
        "inferences": GaugeMetricFamily(
            "modelcast_model_inferences", "Inferences in the window", labels=labels
        ),
    }
    for h in health:
        for key, family in families.items():
            if h[key] is not None:
                family.add_metric([h["model"], str(h["version"])], float(h[key]))
    yield from families.values()


def _counters(ingested: Mapping[str, int], rejected: Mapping[str, int]) -> Iterator[Metric]:
    samples = CounterMetricFamily(
        "modelcast_telemetry_samples_ingested",
        "Telemetry messages the coordinator stored (metrics samples, events)",
        labels=["kind"],
    )
    for kind in ("metrics", "events"):
        samples.add_metric([kind], float(ingested.get(kind, 0)))
    rejections = CounterMetricFamily(
        "modelcast_rejections",
        "Messages devices reported they rejected, by reason",
        labels=["reason"],
    )
    for reason, n in sorted(rejected.items()):
        rejections.add_metric([reason], float(n))
    yield from (samples, rejections)


def _chunks(broker: BrokerState, releases: dict[str, dict[str, Any]]) -> Iterator[Metric]:
    labels = ["model", "version", "variant"]
    sent = CounterMetricFamily(
        "modelcast_chunk_bytes_published",
        "Chunk frame bytes the coordinator published (seen since the dashboard started)",
        labels=labels,
    )
    frames = CounterMetricFamily(
        "modelcast_chunks_published", "Chunk frames the coordinator published", labels=labels
    )
    for release_id, n in sorted(broker.bytes.items()):
        r = releases.get(release_id)
        key = [r["model"], str(r["version"]), r["variant"]] if r else ["?", "?", release_id]
        sent.add_metric(key, float(n))
        frames.add_metric(key, float(broker.chunks.get(release_id, 0)))
    yield from (sent, frames)
