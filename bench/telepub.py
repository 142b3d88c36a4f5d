"""``python -m bench.telepub URL FLEET FIRST COUNT SAMPLES``: simulated devices for the telemetry
figure. Devices ``dev-FIRST`` .. ``dev-(FIRST+COUNT-1)``, one MQTT connection each (paho, QoS 1),
publish ``protocol.MetricsSample`` messages on their own ``telemetry/metrics`` topic.

Protocol with the parent, one line each: this prints ``ready`` once every device is connected;
then for every ``go`` line on stdin each device publishes ``SAMPLES`` more samples (numbered on
from the previous round, payloads encoded beforehand), interleaved, as fast as paho takes them,
and this prints ``done`` once the broker has acknowledged them all. EOF ends it.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import uuid
from typing import Any

from protocol import MetricsSample, ModelStats, Topics
from runtime.urls import parse_broker_url
from testkit.plain_mqtt import plain_client


def sample(device: str, boot: str, seq: int) -> bytes:
    """A realistic sample: one active model with inference statistics."""
    return MetricsSample(
        device=device,
        boot=boot,
        seq=seq,
        ts=time.time(),
        interval_s=60.0,
        uptime_s=3600.0 + seq,
        cpu_pct=3.5,
        rss_mb=61.2,
        disk_free_mb=20480.0,
        reconnects=1,
        bytes_received=123_456_789,
        inferences=1200,
        errors=2,
        latency_p50_ms=0.42,
        latency_p95_ms=1.7,
        active={"m": 3},
        models=_models(),
    ).encode()


def _models() -> Any:
    """One model's statistics, in the shape ``MetricsSample.models`` has: a tuple of per-version
    stats naming their model, or (the earlier form) a map from model name to stats."""
    stats: dict[str, Any] = {
        "version": 3,
        "inferences": 1200,
        "errors": 2,
        "latency_p50_ms": 0.42,
        "latency_p95_ms": 1.7,
    }
    if "model" in ModelStats.__dataclass_fields__:
        return (ModelStats(**{"model": "m", **stats}),)
    return {"m": ModelStats(**stats)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.telepub")
    parser.add_argument("url")
    parser.add_argument("fleet")
    parser.add_argument("first", type=int)
    parser.add_argument("count", type=int)
    parser.add_argument("samples", type=int)
    args = parser.parse_args(argv)
    host, port = parse_broker_url(args.url)
    topics = Topics(args.fleet)
    devices = [f"dev-{args.first + i}" for i in range(args.count)]
    boots = {d: uuid.uuid4().hex[:12] for d in devices}
    lock = threading.Condition()
    acked = [0]
    connected = [0]

    def on_publish(*_: Any) -> None:
        with lock:
            acked[0] += 1
            lock.notify_all()

    def on_connect(*_: Any) -> None:
        with lock:
            connected[0] += 1
            lock.notify_all()

    clients = []
    for device in devices:
        client = plain_client(f"bench-{args.fleet}-{device}")
        client.on_publish = on_publish
        client.on_connect = on_connect
        client.connect(host, port, keepalive=60)
        client.loop_start()
        clients.append(client)
    with lock:
        if not lock.wait_for(lambda: connected[0] == len(devices), 60):
            print(f"only {connected[0]} of {len(devices)} connected", file=sys.stderr)
            return 1
    print("ready", flush=True)

    def prepare(after: int) -> list[list[tuple[str, bytes]]]:
        return [
            [(topics.telemetry(d, "metrics"), sample(d, boots[d], after + k + 1)) for d in devices]
            for k in range(args.samples)
        ]

    seq = 0
    expected = 0
    rounds = prepare(seq)
    for line in sys.stdin:
        if line.strip() != "go":
            break
        expected += args.samples * len(devices)
        for messages in rounds:
            for client, (topic, payload) in zip(clients, messages, strict=True):
                client.publish(topic, payload, qos=1)
        with lock:
            lock.wait_for(lambda n=expected: acked[0] >= n, 300)  # type: ignore[misc]
        print("done", flush=True)
        seq += args.samples
        rounds = prepare(seq)
    for client in clients:
        client.disconnect()
        client.loop_stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
