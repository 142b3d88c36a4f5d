"""``MqttSession.wait_subscribed``: once it returns, the broker has the subscriptions, so a message
another client publishes right then reaches the session. Over a proxy that delays every packet
by 0.3 s, a wait that ended at the CONNACK (or when the SUBSCRIBE was merely sent) would let the
message in before the subscription and lose it; a real Mosquitto decides."""

from __future__ import annotations

import threading

from runtime.mqtt import MqttSession
from testkit.faultproxy import FaultProxy
from testkit.mqtt_recorder import TopicRecorder
from tests.support.brokers import Broker

LATENCY_S = 0.3
TIMEOUT = 30.0


def test_subscribed_means_the_broker_has_the_subscription(broker: Broker, mqtt_fleet: str) -> None:
    topic = f"{mqtt_fleet}/subscribed"
    arrived = threading.Event()

    def on_message(got: str, payload: bytes, retained: bool) -> None:
        if got == topic:
            arrived.set()

    with FaultProxy(broker.host, broker.port, latency_s=LATENCY_S) as slow:
        session = MqttSession(
            slow.url,
            f"{mqtt_fleet}-subscriber",
            on_message=on_message,
            on_connect=lambda _present: session.subscribe([topic]),
            clean_session=True,
        )
        session.start()
        try:
            assert session.wait_connected(TIMEOUT)
            assert session.wait_subscribed(TIMEOUT)
            with TopicRecorder(broker.host, broker.port) as publisher:  # straight to the broker
                publisher.publish(topic, b"x")
                assert arrived.wait(TIMEOUT), "published after wait_subscribed, never arrived"
            # a later subscription makes it wait again, until that one is acknowledged too
            session.subscribe([f"{topic}/later"])
            assert not session.subscribed.is_set()
            assert session.wait_subscribed(TIMEOUT)
        finally:
            session.stop()
    assert not session.subscribed.is_set()  # disconnected
