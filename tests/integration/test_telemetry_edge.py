"""Telemetry as an integrator sees it: plain paho and msgpack, none of modelcast's decoders."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import msgpack
import pytest

from coordinator.status import fleet_status
from runtime.urls import parse_broker_url
from testkit.faultproxy import FaultProxy
from testkit.mqtt_recorder import Received, TopicRecorder
from testkit.synthetic_models import make_model
from tests.support.env import Env
from tests.support.fleet import release_and_deploy


def decode(item: Received) -> dict[str, Any]:
    obj = msgpack.unpackb(item.payload, raw=False)
    assert isinstance(obj, dict)
    return obj


def integrator(env: Env, device: str = "+") -> TopicRecorder:
    """What an integrator would run: subscribe to status and telemetry with a plain client."""
    host, port = parse_broker_url(env.broker.url)
    base = f"modelcast/{env.fleet}/devices/{device}"
    return TopicRecorder(host, port, [f"{base}/status", f"{base}/telemetry/+"], timeout=60)


def deploy_small_model(env: Env) -> None:
    env.start_coordinator()
    model = make_model(env.tmp / "m1.onnx", 200_000, seed=1, inputs=16)
    release_and_deploy(env.registry, env.keys, model, "m", 1, env.fleet)


def is_metrics(item: Received) -> bool:
    return item.topic.endswith("/telemetry/metrics")


@pytest.mark.portable
def test_a_plain_paho_subscriber_reads_status_and_telemetry(env: Env) -> None:
    with integrator(env) as sub:
        deploy_small_model(env)
        env.edge("d1", extra=("--tag", "site=plant-3"))
        status = sub.wait_for(lambda m: m.topic.endswith("/d1/status") and decode(m)["online"])
        profile = decode(status)["profile"]
        assert profile["tags"] == {"site": "plant-3"}
        assert profile["cores"] >= 1 and profile["ram_mb"] > 0 and profile["arch"]
        assert "CPUExecutionProvider" in profile["providers"] and profile["onnxruntime"]
        sub.wait_for(
            lambda m: m.topic.endswith("/telemetry/events") and decode(m)["event"] == "activated"
        )
        sample = decode(sub.wait_for(lambda m: is_metrics(m) and decode(m)["active"] == {"m": 1}))
        for key in (
            "v",
            "device",
            "boot",
            "seq",
            "ts",
            "cpu_pct",
            "rss_mb",
            "disk_free_mb",
            "uptime_s",
            "inferences",
            "latency_p95_ms",
            "errors",
            "reconnects",
            "bytes_received",
        ):
            assert key in sample, key
        assert sample["device"] == "d1" and sample["rss_mb"] > 0
        # the model came over this link (200 kB, some of it zstd-compressed on the wire)
    assert sample["bytes_received"] > 100_000


def test_local_endpoint_answers_and_its_latency_appears_in_metrics(env: Env) -> None:
    with integrator(env, "d1") as sub:
        deploy_small_model(env)
        env.edge("d1")
        env.watch.wait_active("d1", "m", 1)
        status = sub.wait_for(
            lambda m: m.topic.endswith("/status") and decode(m).get("active") == {"m": 1}
        )
        port = decode(status)["profile"]["http_port"]
        url = f"http://127.0.0.1:{port}/v1/models/m/infer"
        body = json.dumps({"inputs": {"x": [[0.5] * 16]}}).encode()
        for _ in range(5):
            with urllib.request.urlopen(urllib.request.Request(url, data=body)) as resp:
                answer = json.load(resp)
            assert answer["model"] == "m" and answer["version"] == 1
            assert len(answer["outputs"]["y"][0]) == make_model_outputs(200_000, 16)
        bad = json.dumps({"inputs": {"x": [["not a number"]]}}).encode()
        try:
            urllib.request.urlopen(urllib.request.Request(url, data=bad))
            raise AssertionError("a bad input was accepted")
        except urllib.error.HTTPError as exc:
            assert exc.code == 400
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models") as resp:
            assert json.load(resp) == {"models": {"m": 1}}

        def counted(m: Received) -> bool:
            if not is_metrics(m):
                return False
            stats = [s for x in sub.messages if is_metrics(x) for s in decode(x)["models"]]
            total = sum(s["inferences"] for s in stats if s["model"] == "m")
            return total >= 6

        sub.wait_for(counted)
        samples = [
            s
            for x in sub.messages
            if is_metrics(x)
            for s in decode(x)["models"]
            if s["model"] == "m" and s["version"] == 1
        ]
        assert sum(s["inferences"] for s in samples) == 6
        assert sum(s["errors"] for s in samples) == 1
        assert any(s["latency_p95_ms"] and s["latency_p95_ms"] > 0 for s in samples)

    # the coordinator's health figures for m@1 match what the edge sent
    coordinator = env.coordinator
    assert coordinator is not None

    def health() -> dict[str, Any] | None:
        rows = fleet_status(env.tmp / "coord.db", env.fleet)["health"]
        return next((h for h in rows if (h["model"], h["version"]) == ("m", 1)), None)

    def matches() -> bool:
        h = health()
        return h is not None and h["inferences"] == 6 and h["errors"] == 1

    assert coordinator.wait_until(matches, 30), health()
    h = health()
    assert h is not None
    assert h["error_rate"] == 1 / 6 and h["devices"] == 1
    sent_p95 = [s["latency_p95_ms"] for s in samples if s["latency_p95_ms"]]
    assert min(sent_p95) <= h["latency_p95_ms"] <= max(sent_p95)


def make_model_outputs(size_bytes: int, inputs: int) -> int:
    import math

    return max(1, math.ceil(size_bytes / (4 * inputs)))


def test_an_outage_loses_no_sample_and_leaves_no_gap(env: Env) -> None:
    host, port = parse_broker_url(env.broker.url)
    with integrator(env, "d1") as sub, FaultProxy(host, port) as proxy:
        env.edge(
            "d1", broker_url=proxy.url, extra=("--reconnect-min", "0.2", "--reconnect-max", "1")
        )
        first = decode(sub.wait_for(is_metrics))
        proxy.refuse_for(6.0, cut_existing=True)  # the broker is unreachable for 6 s
        hist = decode(sub.wait_for(lambda m: is_metrics(m) and decode(m)["hist"], timeout=60))
        later = decode(
            sub.wait_for(
                lambda m: (
                    is_metrics(m) and not decode(m)["hist"] and decode(m)["seq"] > hist["seq"] + 2
                ),
                timeout=60,
            )
        )
        seqs = sorted(
            {
                decode(m)["seq"]
                for m in sub.messages
                if m.topic.endswith(("/metrics", "/events")) and decode(m)["boot"] == first["boot"]
            }
        )
        assert seqs == list(range(seqs[0], later["seq"] + 1)), "a gap in seq"
        n_hist = sum(1 for m in sub.messages if is_metrics(m) and decode(m)["hist"])
        assert n_hist >= 4, f"only {n_hist} samples were stored during a 6 s outage"
        assert all(decode(m)["dropped"] == 0 for m in sub.messages if is_metrics(m))


def test_a_killed_edge_goes_offline_through_its_will(env: Env) -> None:
    with integrator(env, "d1") as sub:
        edge = env.edge("d1")
        sub.wait_for(lambda m: m.topic.endswith("/status") and decode(m)["online"])
        edge.kill()
        offline = sub.wait_for(
            lambda m: m.topic.endswith("/status") and decode(m)["online"] is False
        )
        assert decode(offline)["device"] == "d1"
