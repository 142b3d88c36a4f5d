"""Half-open link detection (reported, no target): how long an edge takes to notice that its link
went silent without closing (a dead NAT entry, a cable pulled upstream) and open a new connection.

The edge runs with ``--keepalive 2`` behind a ``FaultProxy``; ``stall()`` stops forwarding both
ways while keeping both sockets open. Timed from the stall to the proxy accepting the edge's next
connection; also given as a multiple of the keepalive (MQTT's own bound is 1.5 keepalives for
the broker side; a client notices after its unanswered PINGREQ, 1-2 keepalives, plus its
reconnect delay, 0.2-1 s here).
"""

from __future__ import annotations

import time
from typing import Any

from runtime.urls import parse_broker_url
from testkit.faultproxy import FaultProxy

from .common import FAST_RECONNECT, Bench, BenchError

KEEPALIVE = 2


def run(b: Bench) -> dict[str, Any]:
    fleet = b.fleet("half")
    host, port = parse_broker_url(b.url)
    with FaultProxy(host, port) as proxy, b.watch(fleet) as watch:
        edge = b.edge(
            fleet, "edge-0", "--keepalive", str(KEEPALIVE), *FAST_RECONNECT, broker_url=proxy.url
        )
        try:
            watch.wait_online([edge.device], 30, [edge])
            time.sleep(1.0)
            opened = proxy.connections
            b.progress(f"halfopen: stalling the link (keepalive {KEEPALIVE} s)")
            proxy.stall()
            start = time.monotonic()
            if not proxy.wait_until(lambda p: p.connections > opened, 30):
                raise BenchError("the edge never noticed the stalled link")
            detected = time.monotonic() - start
            proxy.unstall()
        finally:
            edge.stop()
    return {
        "half_open_detect_s": round(detected, 2),
        "half_open": {
            "keepalive_s": KEEPALIVE,
            "keepalives": round(detected / KEEPALIVE, 2),
            "reconnect_delay_s": [0.2, 1.0],
        },
    }
