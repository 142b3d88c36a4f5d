"""A plain paho-mqtt 2 client (MQTT 3.1.1), with one change: ``TCP_NODELAY`` on its socket.

The benchmarks' baselines, their simulated devices and the tests' recorder
(``testkit.mqtt_recorder``) use it: a second, boring MQTT implementation next to
``runtime/mqtt.py``. Without ``TCP_NODELAY`` a QoS 1 subscriber's PUBACKs wait behind Nagle's
algorithm and the broker's delayed ACKs, and a baseline stalls 40 ms every ``max_inflight``
messages: a ratio against that would flatter modelcast (whose own client sets it too).
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion


def _nodelay(client: paho.Client, userdata: Any, sock: Any) -> None:
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def plain_client(client_id: str, *, clean: bool = True) -> paho.Client:
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv311,
        clean_session=clean,
    )
    client.on_socket_open = _nodelay
    return client
