"""``BrokerLink``: what the coordinator's sender and poller need of the MQTT session.

``runtime.mqtt.MqttSession`` is one; unit tests use an in-memory fake that records what would
be published, so chunk serving and publishing are tested without a broker.
"""

from __future__ import annotations

import threading
from typing import Protocol


class BrokerLink(Protocol):
    @property
    def connected(self) -> threading.Event:
        """Set while the session is connected."""
        ...

    def publish(
        self, topic: str, payload: bytes | bytearray, *, qos: int = 1, retain: bool = False
    ) -> object:
        """Queue a message; falsy (None) when the client's bounded queue is full."""
        ...

    def wait_below(self, limit: int, timeout: float) -> bool:
        """Block until fewer than ``limit`` publishes are unacknowledged (False: timed out)."""
        ...
