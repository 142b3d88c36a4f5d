"""The RabbitMQ launcher (testkit.rabbitmq_broker): a private node with the MQTT plugin, and the
broker difference the product works around (retained messages and wildcards)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.errors import WaitTimeout
from testkit.mqtt_recorder import TopicRecorder
from testkit.rabbitmq_broker import RabbitMQBroker, find_rabbitmq_server

pytestmark = pytest.mark.skipif(
    find_rabbitmq_server() is None and os.environ.get("MODELCAST_REQUIRE_RABBITMQ") != "1",
    reason="needs rabbitmq-server (apt-get install rabbitmq-server)",
)


@pytest.fixture(scope="module")
def rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQBroker]:
    with RabbitMQBroker(workdir=tmp_path_factory.mktemp("rabbitmq")) as node:
        yield node


def test_a_node_serves_mqtt_on_loopback_with_its_own_files(rabbit: RabbitMQBroker) -> None:
    assert rabbit.url == f"mqtt://127.0.0.1:{rabbit.port}"
    assert (rabbit.workdir / "mnesia").is_dir()
    with (
        TopicRecorder(rabbit.host, rabbit.port, ["r1/+/state"]) as subscriber,
        TopicRecorder(rabbit.host, rabbit.port) as publisher,
    ):
        publisher.publish("r1/d1/state", b"active")
        assert subscriber.wait_for_topic("r1/d1/state").payload == b"active"


def test_retained_messages_reach_exact_subscriptions_but_not_wildcards(
    rabbit: RabbitMQBroker,
) -> None:
    """The difference item 2 of issue 16 works around: if RabbitMQ ever delivers retained
    messages through wildcards, this fails and docs/BROKERS.md should say so."""
    with TopicRecorder(rabbit.host, rabbit.port) as publisher:
        publisher.publish("r2/d1/status", b"online", retain=True)
    with TopicRecorder(rabbit.host, rabbit.port, ["r2/d1/status"]) as exact:
        assert exact.wait_for_topic("r2/d1/status").payload == b"online"
    with (
        TopicRecorder(rabbit.host, rabbit.port, ["r2/+/status"]) as wildcard,
        pytest.raises(WaitTimeout),
    ):
        wildcard.wait_for_topic("r2/d1/status", timeout=2.0)


def test_a_killed_node_restarts_on_its_port(tmp_path: Path) -> None:
    with RabbitMQBroker(workdir=tmp_path / "rmq") as node:
        port = node.port
        node.kill()
        assert not node.running
        node.restart()
        assert node.port == port
        with TopicRecorder(node.host, node.port) as probe:
            probe.wait_connected()
