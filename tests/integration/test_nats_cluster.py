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
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.files import sha256_file
from testkit.faultproxy import FaultProxy
from testkit.nats_broker import NatsCluster, find_nats_server
from testkit.synthetic_models import make_model
from tests.support.env import Env, running_env
from tests.support.failover import assert_resumed, start_transfer, wait_quarter

pytestmark = pytest.mark.skipif(
    find_nats_server() is None and os.environ.get("MODELCAST_REQUIRE_NATS") != "1",
    reason="needs nats-server (apt-get install nats-server)",
)

MB = 1 << 20


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    with NatsCluster(3, workdir=tmp_path / "nats") as nodes:
        yield nodes


@pytest.fixture
def env_n1(tmp_path: Path, cluster: NatsCluster, mqtt_fleet: str) -> Iterator[Env]:
    """The usual set-up, its watcher (and by default the coordinator) on node 1."""
    with running_env(tmp_path, cluster.nodes[0], mqtt_fleet) as e:
        yield e


def test_edges_node_killed_mid_transfer_they_move_to_a_third_and_finish(
    env_n1: Env, cluster: NatsCluster
) -> None:
    env = env_n1
    n1, n2, n3 = cluster.nodes
    model = make_model(env.tmp / "m1.onnx", 8 * MB, seed=43)
    devices = ["nc-0", "nc-1", "nc-2"]
    # the edges reach node 2 through a 6 MB/s link, so the transfer lasts past the kill
    with FaultProxy(n2.host, n2.port, rate_bytes_per_s=6 * MB) as slow_n2:
        edges, n = start_transfer(
            env, model, devices, edge_url=f"{slow_n2.url},{n3.url}", coordinator_url=n1.url
        )
        held = wait_quarter(env.watch, devices, n)
        mark = len(env.watch.recorder.messages)
        n2.kill()
        for d in devices:
            env.watch.wait_active(d, "m", 1, timeout=120)
        coordinator = env.coordinator
        assert coordinator is not None and coordinator.connected
        assert coordinator._session.failovers == 0

    assert_resumed(env.watch, env.watch.recorder.messages[mark:], held, n)
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
        edges, n = start_transfer(
            env, model, devices, edge_url=slow_n2.url, coordinator_url=f"{n1.url},{n3.url}"
        )
        held = wait_quarter(env.watch, devices, n)
        n1.kill()
        for d in devices:
            env.watch.wait_active(d, "m", 1, timeout=120)
        coordinator = env.coordinator
        assert coordinator is not None and coordinator.connected
        assert coordinator._session.url == n3.url

    for d in devices:
        assert {s.boot for s in env.watch.states(d)} == {held[d].boot}, d
    for e in edges:
        assert sha256_file(e.model_path("m", 1)) == sha256_file(model), e.device
