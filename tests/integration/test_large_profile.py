"""``broker_config/large.conf``, the limits for large fleets: Mosquitto starts with them on top
of the development profile (as ``modelcast broker --extra-conf`` and the fleet bench apply
them), and a client's queue holds far more than the 1000 QoS 1 messages after which the
default profile drops new ones silently (what a coordinator behind a burst of telemetry from
10,000 devices would lose)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from broker_admin.mosquitto import BROKER_CONFIG_DIR, find_mosquitto
from testkit.local_broker import LocalBroker
from testkit.plain_mqtt import plain_client

LARGE = BROKER_CONFIG_DIR / "large.conf"
QUEUED = 1500  # beyond Mosquitto's default max_queued_messages (1000)
TIMEOUT = 30.0


def queued_then_received(broker: LocalBroker) -> int:
    """A persistent session subscribes and goes away; QUEUED messages are published for it
    (QoS 1); how many it receives when it comes back."""
    subscribed = threading.Event()
    sub = plain_client("slow-subscriber", clean=False)
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.on_connect = lambda c, *a: c.subscribe("large/t", qos=1)
    sub.connect(broker.host, broker.port)
    sub.loop_start()
    assert subscribed.wait(TIMEOUT)
    sub.disconnect()
    sub.loop_stop()
    pub = plain_client("publisher")
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    infos = [pub.publish("large/t", b"x" * 100, qos=1) for _ in range(QUEUED)]
    for info in infos:
        info.wait_for_publish(TIMEOUT)
    pub.loop_stop()
    got: list[bytes] = []
    done = threading.Event()

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        if msg.payload == b"end":  # published once this session is back: after its queue
            done.set()
        else:
            got.append(msg.payload)

    back = plain_client("slow-subscriber", clean=False)  # the same session, resumed
    back.on_message = on_message
    back.on_connect = lambda *a: pub.publish("large/t", b"end", qos=1)
    pub.loop_start()
    back.connect(broker.host, broker.port)
    back.loop_start()
    assert done.wait(TIMEOUT)
    back.disconnect()
    back.loop_stop()
    pub.disconnect()
    pub.loop_stop()
    return len(got)


@pytest.mark.timeout(120)
def test_the_large_profile_queues_what_the_default_drops(tmp_path: Path) -> None:
    if find_mosquitto() is None:
        pytest.skip("needs a local mosquitto binary")
    with LocalBroker(extra_conf=LARGE.read_text(), workdir=tmp_path / "large") as large:
        assert queued_then_received(large) == QUEUED
    with LocalBroker(workdir=tmp_path / "dev") as dev:
        assert queued_then_received(dev) < QUEUED
