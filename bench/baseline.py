"""Plain paho through the same broker: the baseline of ``delivery_ratio`` and the chunk-size sweep.

The publisher is a paho client in this process (QoS 1, paho's defaults), the subscriber a plain
paho client in its own process (``bench.rawsub``) that writes nothing, so each side has a core
like the coordinator and the edge have. Timed from the first publish to the last message in.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho

from runtime.urls import parse_broker_url
from testkit.cli_process import REPO
from testkit.plain_mqtt import plain_client

from .common import BenchError


@contextlib.contextmanager
def plain_publisher(url: str, name: str) -> Iterator[paho.Client]:
    """A plain paho client in this process (its own network thread), connected to ``url``;
    disconnected on the way out."""
    host, port = parse_broker_url(url)
    pub = plain_client(f"{name}-{time.monotonic_ns()}")
    connected = threading.Event()
    pub.on_connect = lambda *a: connected.set()
    pub.connect(host, port, keepalive=60)
    pub.loop_start()
    try:
        if not connected.wait(10):
            raise BenchError(f"{name}: the publisher did not connect")
        yield pub
    finally:
        pub.disconnect()
        pub.loop_stop()


def read_chunks(path: Path, chunk_size: int) -> list[bytes]:
    out = []
    with path.open("rb") as f:
        while piece := f.read(chunk_size):
            out.append(piece)
    return out


def raw_transfer(url: str, topic: str, chunks: list[bytes], timeout: float = 300.0) -> float:
    """Seconds to move ``chunks`` from a paho publisher to a paho subscriber, QoS 1."""
    sub = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.rawsub",
            url,
            topic,
            str(len(chunks)),
            "--timeout",
            str(timeout),
        ],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        cwd=REPO,
        text=True,
    )
    try:
        assert sub.stdout is not None
        if sub.stdout.readline().strip() != "ready":
            raise BenchError("raw subscriber did not start")
        with plain_publisher(url, "bench-rawpub") as pub:
            start = time.monotonic()
            for piece in chunks:
                pub.publish(topic, piece, qos=1)
            line = sub.stdout.readline()
        result = json.loads(line)
        if not result["complete"]:
            raise BenchError(f"raw subscriber got {result['n']} of {len(chunks)} messages")
        return float(result["last"]) - start
    finally:
        if sub.poll() is None:
            sub.kill()
        sub.wait()
