"""The broker fixtures and the MQTT probe used by every integration test."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from testkit.faultproxy import FaultProxy
from testkit.local_broker import LocalBroker
from testkit.mqtt_recorder import TopicRecorder
from tests.support.brokers import Broker

TIMEOUT = 10.0


def test_broker_accepts_a_paho_client(broker: Broker) -> None:
    connack = threading.Event()
    codes: list[ReasonCode] = []

    def on_connect(
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        codes.append(reason_code)
        connack.set()

    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"fixture-{uuid.uuid4().hex[:8]}",
        protocol=MQTTProtocolVersion.MQTTv311,
        clean_session=True,
    )
    client.on_connect = on_connect
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        assert connack.wait(TIMEOUT), "no CONNACK"
        assert not codes[0].is_failure
        assert broker.url == f"mqtt://{broker.host}:{broker.port}"
    finally:
        client.disconnect()
        client.loop_stop()


def test_retained_message_reaches_a_late_subscriber(broker: Broker, mqtt_fleet: str) -> None:
    topic = f"{mqtt_fleet}/status"
    with TopicRecorder(broker.host, broker.port) as publisher:
        publisher.publish(topic, b"online", retain=True)
        with TopicRecorder(broker.host, broker.port, [f"{mqtt_fleet}/#"]) as late:
            item = late.wait_for_topic(topic)
            assert item.payload == b"online"
            assert item.retain
            # A live (non-retained) delivery to an existing subscriber has retain False.
            publisher.publish(topic, b"busy")
            live = late.wait_for(lambda m: m.payload == b"busy")
            assert not live.retain
        publisher.publish(topic, b"", retain=True)  # clear: the broker may be shared


def test_wait_for_timeout_lists_what_was_seen(broker: Broker, mqtt_fleet: str) -> None:
    with TopicRecorder(broker.host, broker.port, [f"{mqtt_fleet}/#"]) as rec:
        rec.publish(f"{mqtt_fleet}/a", b"1")
        rec.wait_for_topic(f"{mqtt_fleet}/a")
        try:
            rec.wait_for_topic(f"{mqtt_fleet}/never", timeout=0.2)
        except AssertionError as exc:
            assert f"{mqtt_fleet}/a" in str(exc)
        else:
            raise AssertionError("wait_for should have timed out")


def test_killed_broker_restarts_on_the_same_port(fresh_broker: LocalBroker) -> None:
    port = fresh_broker.port
    with TopicRecorder(fresh_broker.host, port, ["restart/#"]) as rec:
        fresh_broker.kill()
        assert not fresh_broker.running
        fresh_broker.restart()
        assert fresh_broker.port == port
        assert fresh_broker.running
        # The recorder reconnects on its own and re-subscribes; a retained message
        # reaches it whenever that happens (persistence is off: the broker is empty).
        with TopicRecorder(fresh_broker.host, port) as publisher:
            publisher.publish("restart/ping", b"back", retain=True)
        assert rec.wait_for_topic("restart/ping").payload == b"back"
        assert rec.connects >= 2
    assert "mosquitto version" in fresh_broker.log_text()


def test_recorder_survives_a_proxy_cut(broker: Broker, mqtt_fleet: str) -> None:
    with (
        FaultProxy(broker.host, broker.port) as proxy,
        TopicRecorder(proxy.host, proxy.port, [f"{mqtt_fleet}/#"]) as rec,
        TopicRecorder(broker.host, broker.port) as publisher,
    ):
        assert proxy.cut_all() == 1
        assert proxy.wait_until(lambda p: p.connections >= 2 and p.active_connections == 1, TIMEOUT)
        publisher.publish(f"{mqtt_fleet}/after-cut", b"x", retain=True)
        assert rec.wait_for_topic(f"{mqtt_fleet}/after-cut").payload == b"x"
        publisher.publish(f"{mqtt_fleet}/after-cut", b"", retain=True)
