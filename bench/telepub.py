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

import paho.mqtt.client as paho

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


class Devices:
    """The simulated devices: one paho connection each, counting what the broker acknowledged."""

    def __init__(self, url: str, fleet: str, devices: list[str]) -> None:
        host, port = parse_broker_url(url)
        self.topics = Topics(fleet)
        self.devices = devices
        self.boots = {d: uuid.uuid4().hex[:12] for d in devices}
        self._cond = threading.Condition()
        self.acked = 0
        self.connected = 0
        self.clients: list[paho.Client] = []
        for device in devices:
            client = plain_client(f"bench-{fleet}-{device}")
            client.on_publish = self._on_publish
            client.on_connect = self._on_connect
            client.connect(host, port, keepalive=60)
            client.loop_start()
            self.clients.append(client)

    def _on_publish(self, *_: Any) -> None:
        with self._cond:
            self.acked += 1
            self._cond.notify_all()

    def _on_connect(self, *_: Any) -> None:
        with self._cond:
            self.connected += 1
            self._cond.notify_all()

    def wait_connected(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.connected == len(self.devices), timeout)

    def prepare(self, after: int, samples: int) -> list[list[tuple[str, bytes]]]:
        """``samples`` rounds of one message per device, numbered on from ``after``."""
        return [
            [
                (self.topics.telemetry(d, "metrics"), sample(d, self.boots[d], after + k + 1))
                for d in self.devices
            ]
            for k in range(samples)
        ]

    def publish(self, rounds: list[list[tuple[str, bytes]]]) -> None:
        """Every round, each device one message, interleaved, as fast as paho takes them."""
        for messages in rounds:
            for client, (topic, payload) in zip(self.clients, messages, strict=True):
                client.publish(topic, payload, qos=1)

    def wait_acked(self, expected: int, timeout: float) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self.acked >= expected, timeout)

    def close(self) -> None:
        for client in self.clients:
            client.disconnect()
            client.loop_stop()


def serve(devices: Devices, samples: int) -> None:
    """A round of ``samples`` per device for each ``go`` line on stdin; ``done`` after each."""
    seq = 0
    expected = 0
    rounds = devices.prepare(seq, samples)
    for line in sys.stdin:
        if line.strip() != "go":
            break
        expected += samples * len(devices.devices)
        devices.publish(rounds)
        devices.wait_acked(expected, 300)
        print("done", flush=True)
        seq += samples
        rounds = devices.prepare(seq, samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.telepub")
    parser.add_argument("url")
    parser.add_argument("fleet")
    parser.add_argument("first", type=int)
    parser.add_argument("count", type=int)
    parser.add_argument("samples", type=int)
    args = parser.parse_args(argv)
    devices = Devices(args.url, args.fleet, [f"dev-{args.first + i}" for i in range(args.count)])
    if not devices.wait_connected(60):
        print(f"only {devices.connected} of {args.count} connected", file=sys.stderr)
        return 1
    print("ready", flush=True)
    serve(devices, args.samples)
    devices.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
