"""The status of every device a fleet-wide ``telemetry tail`` hears from, on any broker.

A broker that does not deliver retained messages through wildcard subscriptions (RabbitMQ) gives
a new tail on ``devices/+/status`` none of the statuses retained before it started. So the first
time the tail hears from a device whose status it has not seen (its telemetry, every interval),
it subscribes to that device's exact status topic, where the broker does deliver the retained
one. Where the wildcard already delivered it (Mosquitto, NATS) nothing is subscribed; and a
status identical to the last one printed for its device (the same message reaching the tail
through two subscriptions) is not printed again.

Runs on the MQTT network thread only (no lock).
"""

from __future__ import annotations

from collections.abc import Callable

import protocol


class StatusFollower:
    """``active`` False: admits everything and subscribes to nothing (a tail of one device, whose
    exact topics get the retained status anyway, or of one kind)."""

    def __init__(
        self, topics: protocol.Topics, subscribe: Callable[[str], None], *, active: bool = True
    ) -> None:
        self._active = active
        self._topics = topics
        self._subscribe = subscribe
        self._last_status: dict[str, bytes] = {}
        self._asked: set[str] = set()

    @property
    def asked(self) -> frozenset[str]:
        """The devices whose exact status topic was subscribed to."""
        return frozenset(self._asked)

    def admit(self, topic: str, payload: bytes) -> bool:
        """Whether to print this message (False: a status already printed)."""
        device = self._topics.device_of(topic) if self._active else None
        if device is None:
            return True
        if topic == self._topics.status(device):
            if self._last_status.get(device) == payload:
                return False
            self._last_status[device] = payload
            return True
        if device not in self._last_status and device not in self._asked:
            self._asked.add(device)
            self._subscribe(self._topics.status(device))
        return True


def status_follower(
    topics: protocol.Topics, kind: str, device: str | None, subscribe: Callable[[str], None]
) -> StatusFollower:
    """The follower of a tail: active for a fleet-wide tail of every kind (it hears telemetry,
    and prints status)."""
    return StatusFollower(topics, subscribe, active=device is None and kind == "all")
