"""A throwaway broker of any kind modelcast runs on (``runtime.broker_kinds``), not started yet:
Mosquitto (``local_broker``), NATS (``nats_broker``) or RabbitMQ (``rabbitmq_broker``)."""

from __future__ import annotations

from pathlib import Path

from broker_admin.mosquitto import find_mosquitto
from runtime.broker_kinds import BROKER_KINDS, check_broker_kind

from .local_broker import LocalBroker
from .nats_broker import NatsBroker, find_nats_server
from .rabbitmq_broker import RabbitMQBroker, find_rabbitmq_server

AnyBroker = LocalBroker | NatsBroker | RabbitMQBroker

#: the Debian package that brings each kind
PACKAGES = {"mosquitto": "mosquitto", "nats": "nats-server", "rabbitmq": "rabbitmq-server"}

__all__ = ["BROKER_KINDS", "PACKAGES", "AnyBroker", "installed", "kind_of", "make_broker"]


def installed(kind: str) -> bool:
    """Whether this machine has the broker of ``kind``."""
    finder = {
        "mosquitto": find_mosquitto,
        "nats": find_nats_server,
        "rabbitmq": find_rabbitmq_server,
    }
    return finder[check_broker_kind(kind)]() is not None


def make_broker(kind: str, workdir: Path) -> AnyBroker:
    """A broker of ``kind`` on free loopback ports, its files in ``workdir`` (not started)."""
    if check_broker_kind(kind) == "nats":
        return NatsBroker(workdir=workdir)
    if kind == "rabbitmq":
        return RabbitMQBroker(workdir=workdir)
    return LocalBroker(workdir=workdir)


def kind_of(broker: object) -> str:
    """The kind of a broker made here (anything else: mosquitto, the default)."""
    if isinstance(broker, NatsBroker):
        return "nats"
    if isinstance(broker, RabbitMQBroker):
        return "rabbitmq"
    return "mosquitto"
