"""The brokers modelcast runs on, and the one behaviour of theirs a client must adapt to.

All three speak the portable subset (MQTT 3.1.1, QoS 0 and 1, explicit client ids, packets under
1 MB, no ``$share``; docs/BROKERS.md). One difference changes what a client does: RabbitMQ's MQTT
plugin does not deliver retained messages through wildcard subscriptions, so a client that needs
the retained status and state of devices it already knows subscribes to their exact topics there.
"""

from __future__ import annotations

from .errors import SetupError

BROKER_KINDS = ("mosquitto", "nats", "rabbitmq")
DEFAULT_BROKER_KIND = "mosquitto"


def check_broker_kind(kind: str) -> str:
    if kind not in BROKER_KINDS:
        raise SetupError(f"broker kind must be one of {', '.join(BROKER_KINDS)}, not {kind!r}")
    return kind


def retained_over_wildcards(kind: str) -> bool:
    """Whether a wildcard subscription gets the retained messages of the topics it matches."""
    return check_broker_kind(kind) != "rabbitmq"
