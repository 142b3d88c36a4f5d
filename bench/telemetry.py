"""``telemetry_samples_per_s`` and ``telemetry_raw_ratio``: metrics samples the coordinator
ingests and stores per second from 200 simulated devices, and that rate over plain paho's.

200 devices (``bench.telepub``: 4 processes of 50 MQTT connections) publish ``MetricsSample``
messages, QoS 1, as fast as they can, in rounds of the same size. Rounds alternate between a
plain paho subscriber in this process that only counts the messages, and the coordinator
(started for its round, in this process), which decodes, de-duplicates and stores them in SQLite
(``coordinator.telemetry_store``: batched transactions). Each rate is messages (received, or
stored) divided by the time from the start of the round to the last one (received, or stored);
the best round of each side makes the ratio.

This figure has its own Mosquitto (dev profile plus ``max_queued_messages 0``): the publishers
outrun either consumer, and with the default per-client queue of 1000 messages the broker would
drop the excess, so the count would measure the broker's queue, not the consumer. Unbounded, the
backlog is drained at the consumer's own pace, which is what the rate should say.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from typing import Any

from coordinator.service import DEFAULT_POLL_INTERVAL
from protocol import Topics
from runtime.urls import parse_broker_url
from testkit.cli_process import REPO
from testkit.local_broker import LocalBroker
from testkit.plain_mqtt import plain_client

from .common import Bench, BenchError

DEVICES = 200
PROCESSES = 4
#: stop waiting when nothing new arrived (or was stored) for this long
IDLE_S = 2.0
#: rounds of each consumer, alternating; the best rate of each makes the ratio
ROUNDS = 2


class Publishers:
    def __init__(self, url: str, fleet: str, samples: int) -> None:
        per = DEVICES // PROCESSES
        self.procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.telepub",
                    url,
                    fleet,
                    str(i * per),
                    str(per),
                    str(samples),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                cwd=REPO,
                text=True,
            )
            for i in range(PROCESSES)
        ]
        for p in self.procs:
            assert p.stdout is not None
            if p.stdout.readline().strip() != "ready":
                raise BenchError("a telemetry publisher did not start")

    def go(self) -> float:
        start = time.monotonic()
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        return start

    def wait_done(self) -> None:
        for p in self.procs:
            assert p.stdout is not None
            if p.stdout.readline().strip() != "done":
                raise BenchError("a telemetry publisher failed")

    def close(self) -> None:
        for p in self.procs:
            if p.stdin is not None:
                p.stdin.close()
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _wait_counter(read: Any, expected: int) -> tuple[int, float]:
    """Poll ``read()`` until it reaches ``expected`` or stops moving for IDLE_S; returns the
    final value and when it last changed."""
    value, changed = read(), time.monotonic()
    while value < expected:
        time.sleep(0.01)
        now_value = read()
        if now_value != value:
            value, changed = now_value, time.monotonic()
        elif time.monotonic() - changed > IDLE_S:
            break
    return value, changed


def raw_round(url: str, fleet: str, pubs: Publishers, expected: int) -> tuple[int, float]:
    host, port = parse_broker_url(url)
    seen = [0]
    subscribed = threading.Event()
    client = plain_client(f"bench-rawtele-{fleet}")

    def on_message(*_: Any) -> None:
        seen[0] += 1

    client.on_message = on_message
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_connect = lambda c, *a: c.subscribe(Topics(fleet).all_metrics(), qos=1)
    client.connect(host, port, keepalive=60)
    client.loop_start()
    try:
        if not subscribed.wait(10):
            raise BenchError("raw telemetry subscriber could not subscribe")
        start = pubs.go()
        count, last = _wait_counter(lambda: seen[0], expected)
        pubs.wait_done()
    finally:
        client.disconnect()
        client.loop_stop()
    return count, last - start


def coordinator_round(
    b: Bench, url: str, fleet: str, pubs: Publishers, expected: int, rnd: int
) -> tuple[int, float, dict[str, Any]]:
    # its own client id each round: the previous round's persistent session, still subscribed,
    # has the messages of the rounds since queued at the broker
    # the default poll interval (nothing is deployed: polling every 10 ms would only steal time)
    service = b.coordinator(
        fleet,
        broker_url=url,
        client_id=f"bench-coordinator-{fleet}-{rnd}",
        poll_interval=DEFAULT_POLL_INTERVAL,
    )
    try:
        if not service.wait_subscribed(10):
            raise BenchError("the coordinator could not subscribe")
        start = pubs.go()
        count, last = _wait_counter(lambda: service.telemetry.samples_stored, expected)
        pubs.wait_done()
        stats = service.telemetry
        extra = {
            "duplicates": stats.duplicates,
            "dropped_by_store": stats.dropped,
            "inbox_dropped": service.inbox_dropped,
        }
    finally:
        service.stop()
    return count, last - start, extra


def run(b: Bench) -> dict[str, Any]:
    samples = int(b.pick(60, 150))
    expected = DEVICES * samples
    fleet = b.fleet("tel")
    b.progress(
        f"telemetry: {DEVICES} devices x {samples} samples a round; {ROUNDS} rounds each of "
        "plain paho and the coordinator, alternating"
    )
    raw: list[tuple[int, float]] = []
    mc: list[tuple[int, float, dict[str, Any]]] = []
    with LocalBroker(
        extra_conf="max_queued_messages 0", workdir=b.dir("broker-telemetry")
    ) as broker:
        pubs = Publishers(broker.url, fleet, samples)
        try:
            for rnd in range(ROUNDS):
                raw.append(raw_round(broker.url, fleet, pubs, expected))
                b.progress(f"telemetry: paho received {raw[-1][0]} in {raw[-1][1]:.2f} s")
                mc.append(coordinator_round(b, broker.url, fleet, pubs, expected, rnd))
                b.progress(f"telemetry: coordinator stored {mc[-1][0]} in {mc[-1][1]:.2f} s")
        finally:
            pubs.close()
    raw_rate = max(n / s for n, s in raw)
    mc_rate = max(n / s for n, s, _ in mc)
    return {
        "telemetry_samples_per_s": round(mc_rate),
        "telemetry_raw_ratio": round(mc_rate / raw_rate, 3),
        "telemetry": {
            "devices": DEVICES,
            "samples_per_round": expected,
            "rounds": ROUNDS,
            "coordinator_stored": [n for n, _, _ in mc],
            "coordinator_s": [round(s, 3) for _, s, _ in mc],
            "raw_received": [n for n, _ in raw],
            "raw_s": [round(s, 3) for _, s in raw],
            "raw_per_s": round(raw_rate),
            "coordinator_extra": [extra for _, _, extra in mc],
        },
    }
