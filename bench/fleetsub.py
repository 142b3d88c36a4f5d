"""``python -m bench.fleetsub URL TOPIC COUNT N``: the baseline side of ``fleet_delivery_ratio``,
N plain paho subscribers in one process.

Each subscribes (QoS 1, clean session) to TOPIC and counts messages without looking at them.
They run on the simulator's own event loop (``modelcast.simulate.mux``: one epoll selector, no
thread per client), so that both sides of the ratio drive their clients the same way; plain
paho with ``loop_start`` does not go past about 300 clients in a process. Protocol with the
parent, one line each: ``ready`` once every client's subscription is acknowledged; then, once
every client has COUNT messages (or ``--timeout``), a JSON line: the wall-clock time of the
last message, the messages and payload bytes received, and the CPU seconds used since ready.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import paho.mqtt.client as paho

from modelcast.simulate.fdlimit import raise_soft_limit
from modelcast.simulate.mux import ClientMux
from runtime.urls import parse_broker_url
from testkit.plain_mqtt import plain_client


class Subscribers:
    def __init__(self, url: str, topic: str, count: int, n: int) -> None:
        self.host, self.port = parse_broker_url(url)
        self.topic = topic
        self.count = count
        self.mux = ClientMux()
        self.subscribed = 0
        self.received = [0] * n
        self.done = 0
        self.bytes = 0
        self.last = 0.0
        self.clients = [self._client(i) for i in range(n)]

    def _client(self, i: int) -> paho.Client:
        client = plain_client(f"bench-fleetsub-{os.getpid()}-{i}")
        self.mux.attach(client)
        client.on_connect = lambda c, *a: c.subscribe(self.topic, qos=1)
        client.on_subscribe = self._on_subscribe
        client.on_message = lambda c, u, msg: self._on_message(i, msg)
        client.connect(self.host, self.port, keepalive=60)
        self.mux.run_once(0.0)  # one at a time: the broker's accept queue is never flooded
        return client

    def _on_subscribe(self, *_: Any) -> None:
        self.subscribed += 1

    def _on_message(self, i: int, msg: paho.MQTTMessage) -> None:
        self.last = time.time()
        self.bytes += len(msg.payload)
        self.received[i] += 1
        if self.received[i] == self.count:
            self.done += 1

    def run_until(self, finished: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not finished():
            if time.monotonic() >= deadline:
                return False
            self.mux.run_once(0.05)
        return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleetsub")
    parser.add_argument("url")
    parser.add_argument("topic")
    parser.add_argument("count", type=int)
    parser.add_argument("n", type=int)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    raise_soft_limit()
    subs = Subscribers(args.url, args.topic, args.count, args.n)
    if not subs.run_until(lambda: subs.subscribed >= args.n, 120):
        print(f"only {subs.subscribed} of {args.n} subscribed", file=sys.stderr)
        return 1
    cpu0 = time.process_time()
    print("ready", flush=True)
    complete = subs.run_until(lambda: subs.done >= args.n, args.timeout)
    result = {
        "last": subs.last,
        "messages": sum(subs.received),
        "bytes": subs.bytes,
        "cpu_s": time.process_time() - cpu0,
        "complete": complete,
    }
    print(json.dumps(result), flush=True)
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
