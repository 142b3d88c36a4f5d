"""A real cluster (issue 16, item 4): three NATS nodes clustered on loopback, JetStream clustered,
each with its MQTT listener. The coordinator is on node 1, the edges on node 2 with node 3 next
in their list; node 2 is SIGKILLed mid-transfer, the edges move to node 3 by themselves, and
every edge finishes with the exact bytes, in the same process, asking only for what it lacked.

Unlike two independent Mosquittos (test_failover.py), the nodes share the MQTT state: sessions,
subscriptions and retained messages live in replicated JetStream streams, and the coordinator
never moves. Nothing here sleeps to wait for a condition.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from protocol import ChunkRequest, DeviceState, UpdateState
from runtime.files import sha256_file
from testkit.faultproxy import FaultProxy
from testkit.nats_broker import NatsCluster, find_nats_server
from testkit.synthetic_models import make_model
from tests.support.env import Env, running_env
from tests.support.fleet import release_and_deploy

pytestmark = pytest.mark.skipif(
    find_nats_server() is None and os.environ.get("MODELCAST_REQUIRE_NATS") != "1",
    reason="needs nats-server (apt-get install nats-server)",
)

MB = 1 << 20
FAST_RECONNECT = ("--reconnect-min", "0.2", "--reconnect-max", "1.0")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    with NatsCluster(3, workdir=tmp_path / "nats") as nodes:
        yield nodes


@pytest.fixture
def env_n1(tmp_path: Path, cluster: NatsCluster, mqtt_fleet: str) -> Iterator[Env]:
    """The usual set-up, its watcher (and by default the coordinator) on node 1."""
    with running_env(tmp_path, cluster.nodes[0], mqtt_fleet) as e:
        yield e


def _downloading(version: int, held: int) -> Callable[[DeviceState], bool]:
    def pred(s: DeviceState) -> bool:
        return s.version == version and s.state is UpdateState.DOWNLOADING and s.chunks_held >= held

    return pred


def test_edges_node_killed_mid_transfer_they_move_to_a_third_and_finish(
    env_n1: Env, cluster: NatsCluster
) -> None:
    env = env_n1
    n1, n2, n3 = cluster.nodes
    model = make_model(env.tmp / "m1.onnx", 8 * MB, seed=43)
    devices = ["nc-0", "nc-1", "nc-2"]
    # the edges reach node 2 through a 6 MB/s link, so the transfer lasts past the kill
    with FaultProxy(n2.host, n2.port, rate_bytes_per_s=6 * MB) as slow_n2:
        edges = [
            env.edge(d, broker_url=f"{slow_n2.url},{n3.url}", extra=FAST_RECONNECT) for d in devices
        ]
        for d in devices:
            env.wait_online(d)
        coordinator = env.start_coordinator(broker_url=n1.url)
        release_and_deploy(env.registry, env.keys, model, "m", 1, env.fleet)
        record = env.registry.release(env.fleet, "m", 1)
        assert record is not None
        n = record.n_chunks

        held = {d: env.watch.wait_state(d, _downloading(1, n // 4), 90) for d in devices}
        mark = len(env.watch.recorder.messages)
        n2.kill()
        for d in devices:
            env.watch.wait_active(d, "m", 1, timeout=120)
        assert coordinator.connected and coordinator._session.failovers == 0

    topics = env.watch.topics
    after = env.watch.recorder.messages[mark:]
    for d in devices:
        asked: set[int] = set()
        for m in after:
            if m.topic == topics.request(d):
                asked |= set(ChunkRequest.decode(m.payload).indices())
        assert len(asked) <= n - held[d].chunks_held, (d, len(asked), held[d])
        boots = {s.boot for s in env.watch.states(d)}
        assert boots == {held[d].boot}, f"{d} restarted: {boots}"
        print(f"{d}: held {held[d].chunks_held}/{n} at the kill, then asked for {len(asked)}")
    for e in edges:
        assert sha256_file(e.model_path("m", 1)) == sha256_file(model), e.device
        assert f"to {n3.url}" in e.log(), e.device


@pytest.fixture
def env_n3(tmp_path: Path, cluster: NatsCluster, mqtt_fleet: str) -> Iterator[Env]:
    """The usual set-up, its watcher on node 3 (which lives)."""
    with running_env(tmp_path, cluster.nodes[2], mqtt_fleet) as e:
        yield e


def test_coordinators_node_killed_mid_transfer_it_moves_and_every_edge_finishes(
    env_n3: Env, cluster: NatsCluster
) -> None:
    """The other way round: the coordinator's node dies. The coordinator (listing n1, n3) moves
    to node 3, subscribes again and republishes; the edges stay on node 2 and finish."""
    env = env_n3
    n1, n2, n3 = cluster.nodes
    model = make_model(env.tmp / "m1.onnx", 8 * MB, seed=44)
    devices = ["nk-0", "nk-1"]
    with FaultProxy(n2.host, n2.port, rate_bytes_per_s=4 * MB) as slow_n2:
        edges = [env.edge(d, broker_url=slow_n2.url, extra=FAST_RECONNECT) for d in devices]
        for d in devices:
            env.wait_online(d)
        coordinator = env.start_coordinator(broker_url=f"{n1.url},{n3.url}")
        release_and_deploy(env.registry, env.keys, model, "m", 1, env.fleet)
        record = env.registry.release(env.fleet, "m", 1)
        assert record is not None
        n = record.n_chunks

        held = {d: env.watch.wait_state(d, _downloading(1, n // 4), 90) for d in devices}
        n1.kill()
        for d in devices:
            env.watch.wait_active(d, "m", 1, timeout=120)
        assert coordinator.connected and coordinator._session.url == n3.url

    for d in devices:
        assert {s.boot for s in env.watch.states(d)} == {held[d].boot}, d
    for e in edges:
        assert sha256_file(e.model_path("m", 1)) == sha256_file(model), e.device
