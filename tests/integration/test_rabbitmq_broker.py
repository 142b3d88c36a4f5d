"""The RabbitMQ launcher (testkit.rabbitmq_broker): a private node with the MQTT plugin, and the
broker difference the product works around (retained messages and wildcards)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from testkit.errors import WaitTimeout
from testkit.mqtt_recorder import TopicRecorder
from testkit.plain_mqtt import plain_client
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


def test_an_offline_session_keeps_at_most_1000_messages_as_on_mosquitto(
    rabbit: RabbitMQBroker,
) -> None:
    """The session-queue policy (broker_admin.rabbitmq_profile): without it RabbitMQ keeps every
    message for an offline session."""
    got: list[bytes] = []
    first, done = threading.Event(), threading.Event()

    def on_message(client: object, userdata: object, message: mqtt.MQTTMessage) -> None:
        got.append(message.payload)
        {b"first": first, b"end": done}.get(message.payload, threading.Event()).set()

    def session() -> mqtt.Client:
        client = plain_client("offline-session", clean=False)
        client.on_message = on_message
        client.connect(rabbit.host, rabbit.port)
        client.loop_start()
        return client

    away = session()
    away.subscribe("r3/queue", qos=1)
    with TopicRecorder(rabbit.host, rabbit.port) as publisher:
        while not first.is_set():  # until the subscription is in place
            publisher.publish("r3/queue", b"first")
            first.wait(1.0)
        away.disconnect()
        away.loop_stop()
        publisher.publish_many([("r3/queue", b"m")] * 1500, qos=1)
        publisher.publish("r3/queue", b"end")
    back = session()
    try:
        assert done.wait(30), f"the end marker never came ({len(got)} messages)"
    finally:
        back.disconnect()
        back.loop_stop()
    queued = got.count(b"m")
    assert 900 <= queued <= 1000, queued
