"""How the test suite gets an MQTT broker: env URL, local mosquitto, or Docker."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pytest

from broker_admin.mosquitto import find_mosquitto
from runtime.urls import format_broker_url, parse_broker_url
from testkit.local_broker import LocalBroker

__all__ = ["Broker", "RemoteBroker", "kind_of", "other_broker", "session_broker"]
from testkit.brokers import PACKAGES, installed, kind_of, make_broker

ENV_VAR = "MODELCAST_BROKER"
DOCKER_IMAGE = "eclipse-mosquitto:2.0.20"


class Broker(Protocol):
    """What tests may rely on; kill()/restart() skip the test where unsupported."""

    @property
    def url(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    def kill(self) -> None: ...
    def restart(self) -> object: ...


@dataclass
class RemoteBroker:
    """A broker this process does not control (MODELCAST_BROKER or a container)."""

    host: str
    port: int
    kind: str
    stop: Callable[[], None] = field(default=lambda: None)

    @property
    def url(self) -> str:
        return format_broker_url(self.host, self.port)

    def kill(self) -> None:
        pytest.skip(f"cannot kill a {self.kind} broker; needs a local mosquitto binary")

    def restart(self) -> object:
        pytest.skip(f"cannot restart a {self.kind} broker; needs a local mosquitto binary")


def docker_usable() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        probe = subprocess.run(["docker", "info"], capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def _docker_broker() -> RemoteBroker:
    try:
        from testcontainers.community.mqtt import MosquittoContainer
    except ImportError:  # older testcontainers
        from testcontainers.mqtt import MosquittoContainer

    container: Any = MosquittoContainer(image=DOCKER_IMAGE).start()
    return RemoteBroker(
        host=container.get_container_host_ip(),
        port=int(container.get_exposed_port(MosquittoContainer.MQTT_PORT)),
        kind="docker",
        stop=container.stop,
    )


@contextmanager
def session_broker(workdir: Path) -> Iterator[Broker]:
    """MODELCAST_BROKER if set, else a local mosquitto, else Docker, else fail."""
    url = os.environ.get(ENV_VAR)
    if url:
        host, port = parse_broker_url(url)
        yield RemoteBroker(host, port, kind=f"external ({ENV_VAR})")
        return
    if find_mosquitto() is not None:
        with LocalBroker(workdir=workdir) as local:
            yield local
        return
    if docker_usable():
        remote = _docker_broker()
        try:
            yield remote
        finally:
            remote.stop()
        return
    pytest.fail(
        f"no MQTT broker for the tests: set {ENV_VAR}=mqtt://host:port, install mosquitto "
        "(`make setup` does it: apt-get install mosquitto), or make Docker available",
        pytrace=False,
    )


def _require(kind: str) -> None:
    """Skip without the broker's binary, or fail if MODELCAST_REQUIRE_<KIND>=1 (make test)."""
    if installed(kind):
        return
    package = PACKAGES[kind]
    message = f"needs {package} (apt-get install {package}, or `make setup` as root)"
    if os.environ.get(f"MODELCAST_REQUIRE_{kind.upper()}") == "1":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@contextmanager
def other_broker(kind: str, workdir: Path) -> Iterator[Broker]:
    """A private node of ``kind`` (nats or rabbitmq) on free loopback ports, for the session."""
    _require(kind)
    with make_broker(kind, workdir) as node:
        yield node
