"""``python -m bench.rawsub URL TOPIC COUNT``: the baselines' receiver, a plain paho subscriber.

It subscribes (QoS 1, clean session), prints ``ready`` once the broker acknowledged the
subscription, counts messages without looking at them (no decoding, no writing) and, after
``COUNT`` messages (or ``--timeout`` seconds), prints one JSON line: the ``time.monotonic()`` of
the first and last message (CLOCK_MONOTONIC is system-wide on Linux, so the parent can compare it
with its own), the count, the payload bytes and the CPU seconds it used meanwhile. It runs in its
own process, like the edge it stands in for.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any

import paho.mqtt.client as paho

from runtime.urls import parse_broker_url
from testkit.plain_mqtt import plain_client


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rawsub")
    parser.add_argument("url")
    parser.add_argument("topic")
    parser.add_argument("count", type=int)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    host, port = parse_broker_url(args.url)
    done = threading.Event()
    seen = {"n": 0, "bytes": 0, "first": 0.0, "last": 0.0, "cpu_s": 0.0}
    cpu_at_ready = [0.0]

    def on_message(client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        now = time.monotonic()
        if not seen["n"]:
            seen["first"] = now
        seen["n"] += 1
        seen["bytes"] += len(msg.payload)
        seen["last"] = now
        if seen["n"] >= args.count:
            seen["cpu_s"] = time.process_time() - cpu_at_ready[0]
            done.set()

    def on_subscribe(*_: Any) -> None:
        cpu_at_ready[0] = time.process_time()
        print("ready", flush=True)

    client = plain_client(f"bench-rawsub-{time.monotonic_ns()}")
    client.on_message = on_message
    client.on_subscribe = on_subscribe
    client.on_connect = lambda c, *a: c.subscribe(args.topic, qos=1)
    client.connect(host, port, keepalive=60)
    client.loop_start()
    done.wait(args.timeout)
    client.disconnect()
    client.loop_stop()
    print(json.dumps({**seen, "complete": done.is_set()}), flush=True)
    return 0 if done.is_set() else 1


if __name__ == "__main__":
    sys.exit(main())
