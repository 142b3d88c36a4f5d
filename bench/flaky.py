"""``flaky_wire_ratio``: bytes that crossed one edge's link while it received a release over a
link cut every 0.5-3 s, divided by the model size.

The link is ``testkit.faultproxy.FaultProxy`` between the edge and the broker, with
``cut_after=(0.5, 3.0)`` (each connection is cut 0.5-3 s after it opens) and a rate cap of
``RATE`` bytes/s per direction, so the transfer spans several cuts (on an uncapped loopback the
release would be through before the first one). The edge reconnects after 0.2-1 s
(``--reconnect-min 0.2 --reconnect-max 1``). Bytes are counted by the proxy, both directions.
A perfect link gives slightly above 1 (MQTT framing, requests, state reports).
"""

from __future__ import annotations

import time
from typing import Any

from runtime.urls import parse_broker_url
from testkit.faultproxy import FaultProxy, SecondsSpec

from .common import FAST_RECONNECT, MB, Bench, reached

#: the edge link: 4 MiB/s each way (a good LTE or a modest Wi-Fi link)
RATE = 4 * MB
CUTS = (0.5, 3.0)


def flaky_delivery(
    b: Bench, size: int, cut_after: SecondsSpec, *, rate: float = RATE, seed: int = 7
) -> dict[str, Any]:
    model = b.model(size, seed=3)
    fleet = b.fleet("flk")
    registry = b.registry(fleet)
    record = b.release(registry, fleet, model)
    service = b.coordinator(fleet)
    host, port = parse_broker_url(b.url)
    try:
        with (
            FaultProxy(host, port, seed=seed, rate_bytes_per_s=rate, cut_after=cut_after) as proxy,
            b.watch(fleet) as watch,
        ):
            edge = b.edge(fleet, "edge-0", *FAST_RECONNECT, broker_url=proxy.url)
            try:
                watch.wait_online([edge.device], 30, [edge])
                before = proxy.bytes_to_client + proxy.bytes_to_server
                start = time.monotonic()
                registry.deploy(record.name, record.version, fleet=fleet)
                done, state = watch.wait_state_received(
                    edge.device, reached("verified", "activating", "active"), 600, edge
                )
                wire = proxy.bytes_to_client + proxy.bytes_to_server - before
                cuts = proxy.cuts
                connections = proxy.connections
            finally:
                edge.stop()
    finally:
        service.stop()
        registry.close()
    return {
        "size_bytes": record.size,
        "cut_after_s": list(cut_after) if isinstance(cut_after, tuple) else cut_after,
        "rate_bytes_per_s": rate,
        "wire_bytes": wire,
        "ratio": round(wire / record.size, 3),
        "seconds": round(done - start, 2),
        "cuts": cuts,
        "connections": connections,
        "chunks_published": service.chunks_published,
        "n_chunks": record.n_chunks,
        "duplicates_at_edge": state.duplicates,
    }


def run(b: Bench) -> dict[str, Any]:
    size = b.size(12, 40)
    b.progress(
        f"flaky: {size / MB:.0f} MB over a {RATE / MB:.0f} MiB/s link cut every "
        f"{CUTS[0]}-{CUTS[1]} s"
    )
    detail = flaky_delivery(b, size, CUTS)
    b.progress(f"flaky: {detail['cuts']} cuts in {detail['seconds']} s")
    return {"flaky_wire_ratio": detail["ratio"], "flaky": detail}
