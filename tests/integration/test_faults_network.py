"""Flaky networks: real Mosquitto, the in-process coordinator, edges as real processes, each edge
behind its own fault proxy so the bytes that crossed its link are counted separately."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from coordinator.registry import Registry
from coordinator.service import Coordinator, CoordinatorConfig
from protocol import ChunkRequest, DeviceState, UpdateState
from runtime.files import sha256_file
from runtime.urls import parse_broker_url
from testkit.edge_process import EdgeProcess
from testkit.faultproxy import FaultProxy
from testkit.fleet_watch import FleetWatch
from testkit.mqtt_recorder import Received
from testkit.synthetic_models import make_model
from tests.support.brokers import Broker
from tests.support.fleet import REPO, Keys, make_keys, release_and_deploy

MB = 1 << 20
KB = 1 << 10
#: Edges reconnect quickly so a cut costs a fraction of a second, not the 30 s default cap.
FAST_RECONNECT = ("--reconnect-min", "0.2", "--reconnect-max", "1.0")


@dataclass
class Site:
    """One fleet: its registry, its in-process coordinator, and a decoded view of its devices."""

    fleet: str
    db: Path
    broker_url: str
    keys: Keys
    watch: FleetWatch
    registry: Registry = field(init=False)
    coordinator: Coordinator | None = None

    def __post_init__(self) -> None:
        self.registry = Registry(self.db)

    def start_coordinator(self) -> Coordinator:
        self.coordinator = Coordinator(
            CoordinatorConfig(
                broker_url=self.broker_url, db_path=self.db, keydir=self.keys.dir, fleet=self.fleet
            )
        )
        self.coordinator.start()
        return self.coordinator

    def wait_online(self, device: str, timeout: float = 30.0) -> None:
        self.watch.wait_online([device], timeout)

    def n_chunks(self, name: str, version: int) -> int:
        record = self.registry.release(self.fleet, name, version)
        assert record is not None
        return record.n_chunks


@dataclass
class Net:
    tmp: Path
    broker: Broker
    fleet: str  # unique to the test; sites are named after it
    keys: Keys
    stack: ExitStack
    sites: list[Site] = field(default_factory=list)
    edges: list[EdgeProcess] = field(default_factory=list)

    def site(self, suffix: str = "") -> Site:
        fleet = f"{self.fleet}{suffix}"
        watch = self.stack.enter_context(FleetWatch(self.broker.url, fleet))
        site = Site(fleet, self.tmp / f"{fleet}.db", self.broker.url, self.keys, watch)
        self.sites.append(site)
        return site

    def proxy(
        self,
        *,
        seed: int,
        rate_bytes_per_s: float | None = None,
        cut_after: tuple[float, float] | None = None,
    ) -> FaultProxy:
        """A fault proxy in front of the broker (one per edge), stopped when the test ends."""
        host, port = parse_broker_url(self.broker.url)
        proxy = FaultProxy(
            host, port, seed=seed, rate_bytes_per_s=rate_bytes_per_s, cut_after=cut_after
        )
        return self.stack.enter_context(proxy)

    def edge(self, device: str, site: Site, proxy: FaultProxy, *extra: str) -> EdgeProcess:
        e = EdgeProcess(
            device,
            broker_url=proxy.url,
            data=self.tmp / device,
            trust=self.keys.root_pub,
            fleet=site.fleet,
            log_dir=self.tmp,
            extra=extra,
        )
        self.edges.append(e)
        return e.start()


@pytest.fixture
def net(tmp_path: Path, broker: Broker, mqtt_fleet: str) -> Iterator[Net]:
    with ExitStack() as stack:
        n = Net(tmp_path, broker, mqtt_fleet, make_keys(tmp_path / "keys"), stack)
        try:
            yield n
        finally:
            for edge in n.edges:
                edge.stop()
            for site in n.sites:
                if site.coordinator is not None:
                    site.coordinator.stop()
            for edge in n.edges:  # on failure, show what the edges said
                print(f"----- {edge.device} log (tail) -----\n{edge.log()[-3000:]}")


def _link_bytes(proxy: FaultProxy) -> int:
    return proxy.bytes_to_client + proxy.bytes_to_server


def test_links_cut_every_few_seconds_cost_little_beyond_the_model(net: Net) -> None:
    """Three edges of one fleet download 16 MB at once, each link cut every 0.5-3 s (and capped
    at 2 MB/s, so the transfer spans several cuts): all activate the exact bytes, and what
    crossed each link stays within 1.2x the model. A cut costs the packet it interrupted, never a
    restart; and what the coordinator sends again for one edge after its cut goes to that edge's
    resend topic, not to every edge on the chunk's block (which measured 1.3x: each link carried
    the others' repairs)."""
    model = make_model(net.tmp / "m1.onnx", 16 * MB, seed=11)
    size = model.stat().st_size
    digest = sha256_file(model)
    site = net.site()
    proxies = [
        net.proxy(seed=200 + i, cut_after=(0.5, 3.0), rate_bytes_per_s=2 * MB) for i in range(3)
    ]
    for i, proxy in enumerate(proxies):
        net.edge(f"cut-{i}", site, proxy, *FAST_RECONNECT)
    for i in range(3):
        site.wait_online(f"cut-{i}")
    coordinator = site.start_coordinator()
    release_and_deploy(site.registry, net.keys, model, "m", 1, site.fleet)

    crossed: list[int] = []
    for i, proxy in enumerate(proxies):
        site.watch.wait_active(f"cut-{i}", "m", 1, timeout=150)
        crossed.append(_link_bytes(proxy))  # read at once: the cuts go on after the transfer
    print(
        f"coordinator published {coordinator.chunks_published} chunks for "
        f"{site.n_chunks('m', 1)} ({coordinator.scheduler.chunks_direct} to one edge only)"
    )
    for i, (edge, proxy) in enumerate(zip(net.edges, proxies, strict=True)):
        print(
            f"{edge.device}: {crossed[i]} bytes crossed its link for a {size}-byte model: "
            f"ratio {crossed[i] / size:.3f} ({proxy.cuts} cuts)"
        )
    for i, (edge, proxy) in enumerate(zip(net.edges, proxies, strict=True)):
        assert sha256_file(edge.model_path("m", 1)) == digest, edge.device
        assert proxy.cuts >= 2, f"{edge.device}: the link was cut {proxy.cuts} times only"
        assert crossed[i] <= 1.2 * size, f"{edge.device}: {crossed[i] / size:.3f}x the model"
        # A request replayed after a reconnect would have the coordinator resend what is already
        # on its way: each is sent once.
        topic = site.watch.topics.request(edge.device)
        sent = [m.payload for m in site.watch.recorder.messages if m.topic == topic]
        again = [ChunkRequest.decode(r) for r in sent if sent.count(r) > 1]
        assert not [r for r in again if not r.repair], f"{edge.device} replayed {again[:3]}"


def test_half_open_link_is_noticed_by_keepalive_and_the_transfer_resumes(net: Net) -> None:
    """The link goes silent with both sockets open (a dead NAT): the edge notices within about
    two keepalive intervals, reconnects, and finishes once the link carries bytes again."""
    keepalive = 2
    model = make_model(net.tmp / "m1.onnx", 4 * MB, seed=12)
    site = net.site()
    site.start_coordinator()
    release_and_deploy(site.registry, net.keys, model, "m", 1, site.fleet)
    n = site.n_chunks("m", 1)
    proxy = net.proxy(seed=2, rate_bytes_per_s=512 * KB)
    net.edge("halfopen", site, proxy, "--keepalive", str(keepalive), *FAST_RECONNECT)

    site.watch.wait_state("halfopen", lambda s: 0 < s.chunks_held < n // 2, timeout=60)
    before = proxy.connections
    proxy.stall()
    stalled_at = time.monotonic()
    # Detection takes up to 2 keepalives (a ping, then its missing answer), then the backoff
    # (at most 1 s with FAST_RECONNECT), plus a keepalive of slack for a loaded machine.
    bound = 3 * keepalive + 1.0
    reconnected = proxy.wait_until(lambda p: p.connections > before, timeout=bound)
    assert reconnected, f"no new connection within {bound}s of the link going silent"
    print(f"half-open link: new connection {time.monotonic() - stalled_at:.1f}s after the stall")
    proxy.unstall()

    site.watch.wait_active("halfopen", "m", 1, timeout=90)
    assert sha256_file(net.edges[0].model_path("m", 1)) == sha256_file(model)


def test_very_slow_link_completes_steadily_without_repairs_or_a_request_storm(net: Net) -> None:
    """32 KB/s, 4 MB in 32 KiB chunks, default keepalive and stall timeout: one MQTT connection
    throughout, no repair request (chunks queued behind a slow link are not a stall), no chunk
    asked for twice, and requests in half-window batches."""
    window = 16
    model = make_model(net.tmp / "m1.onnx", 4 * MB, seed=13)
    site = net.site()
    site.start_coordinator()
    release_and_deploy(site.registry, net.keys, model, "m", 1, site.fleet, chunk_size=32 * KB)
    n = site.n_chunks("m", 1)
    proxy = net.proxy(seed=3, rate_bytes_per_s=32 * KB)
    net.edge("slow", site, proxy, "--window", str(window))
    request_topic = site.watch.topics.request("slow")
    state_topic = site.watch.topics.state("slow")

    def active_or_repair(m: Received) -> bool:
        if m.topic == request_topic:
            return ChunkRequest.decode(m.payload).repair
        return m.topic == state_topic and DeviceState.decode(m.payload).state is UpdateState.ACTIVE

    # A repair ends the wait at once: from then on the link carries resends, not progress.
    first = site.watch.recorder.wait_for(active_or_repair, timeout=240)
    if first.topic == request_topic:
        pytest.fail(f"a repair on a slow but steady link: {ChunkRequest.decode(first.payload)}")
    requests = [
        ChunkRequest.decode(m.payload)
        for m in site.watch.recorder.messages
        if m.topic == request_topic
    ]

    assert sha256_file(net.edges[0].model_path("m", 1)) == sha256_file(model)
    assert proxy.connections == 1, f"{proxy.connections} MQTT connections: the edge reconnected"
    assert not [r for r in requests if r.repair]
    asked = [i for r in requests for i in r.indices()]
    twice = sorted({i for i in asked if asked.count(i) > 1})
    assert not twice, f"chunks asked for more than once: {twice[:20]}"
    assert sorted(asked) == list(range(n))
    bound = n // (window // 2) + 3
    assert len(requests) <= bound, f"{len(requests)} requests for {n} chunks (at most {bound})"
    held = [s.chunks_held for s in site.watch.states("slow") if s.model == "m"]
    assert held == sorted(held), "progress went backwards"
    print(f"slow link: {n} chunks in {len(requests)} requests, {proxy.connections} connection")


def test_demo_flaky_finishes(tmp_path: Path) -> None:
    """``modelcast demo --flaky``: every demo edge behind its own cutting, capped proxy; the demo
    still ends with every edge on the second release, and says how often each link was cut."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelcast.cli",
            "demo",
            "--flaky",
            "--edges",
            "2",
            "--size-mb",
            "2",
            "--workdir",
            str(tmp_path / "demo"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr}"
    assert "its link was cut" in result.stdout, result.stdout[-4000:]
