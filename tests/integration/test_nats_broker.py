"""The NATS launcher (testkit.nats_broker): one node with JetStream and its MQTT listener, and the
config of clustered nodes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from testkit.mqtt_recorder import TopicRecorder
from testkit.nats_broker import (
    NatsBroker,
    NatsCluster,
    NatsNodeConf,
    find_nats_server,
    nats_cluster,
)

pytestmark = pytest.mark.skipif(
    find_nats_server() is None and os.environ.get("MODELCAST_REQUIRE_NATS") != "1",
    reason="needs nats-server (apt-get install nats-server)",
)


def test_a_node_serves_mqtt_and_keeps_retained_messages_across_a_restart(tmp_path: Path) -> None:
    with NatsBroker(workdir=tmp_path / "nats") as node:
        assert node.url == f"mqtt://127.0.0.1:{node.port}"
        with TopicRecorder(node.host, node.port) as publisher:
            publisher.publish("t/a/status", b"online", retain=True)
        with TopicRecorder(node.host, node.port, ["t/a/status"]) as late:
            assert late.wait_for_topic("t/a/status").payload == b"online"
        node.kill()
        assert not node.running
        node.restart()  # same port, same JetStream store
        with TopicRecorder(node.host, node.port, ["t/a/status"]) as after:
            item = after.wait_for_topic("t/a/status")
            assert (item.payload, item.retain) == (b"online", True)


def test_a_node_conf_has_jetstream_mqtt_and_no_cluster_unless_routed(tmp_path: Path) -> None:
    text = NatsNodeConf(server_name="solo").with_ports().render(tmp_path / "js")
    assert 'server_name: "solo"' in text
    assert f'jetstream {{ store_dir: "{tmp_path / "js"}" }}' in text
    assert "mqtt { listen: " in text
    assert "cluster" not in text


def test_cluster_confs_route_each_node_to_all_the_others() -> None:
    confs = nats_cluster(3, name="c")
    ports = {conf.cluster_port for conf in confs}
    assert len(ports) == 3 and None not in ports
    assert [conf.server_name for conf in confs] == ["n1", "n2", "n3"]
    for conf in confs:
        assert set(conf.routes) == ports - {conf.cluster_port}
        text = conf.render(Path("/tmp/x"))
        assert 'cluster { name: "c", ' in text
        for port in conf.routes:
            assert f"nats-route://127.0.0.1:{port}" in text


def test_a_three_node_cluster_carries_a_message_from_one_node_to_another(tmp_path: Path) -> None:
    with NatsCluster(3, workdir=tmp_path) as cluster:
        first, second, _ = cluster.nodes
        with TopicRecorder(second.host, second.port, ["c/+/state"]) as subscriber:
            with TopicRecorder(first.host, first.port) as publisher:
                publisher.publish("c/d1/state", b"active")
            assert subscriber.wait_for_topic("c/d1/state", timeout=20).payload == b"active"
