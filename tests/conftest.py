"""Shared fixtures: an MQTT broker for the session, a private one per test, fleets."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker_admin.mosquitto import find_mosquitto
from runtime.broker_kinds import BROKER_KINDS
from testkit.local_broker import LocalBroker
from tests.support.brokers import Broker, other_broker, session_broker
from tests.support.minilm import BuiltMiniLM, build_minilm, require_minilm

_INTEGRATION_DIR = Path(__file__).parent / "integration"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "portable: runs once per broker kind (mosquitto, nats, rabbitmq) through `any_broker` "
        "(and the `env` fixture built on it)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A ``portable`` test that uses ``any_broker`` (or ``env``) runs on each broker kind."""
    if "broker_kind" in metafunc.fixturenames and metafunc.definition.get_closest_marker(
        "portable"
    ):
        metafunc.parametrize("broker_kind", BROKER_KINDS)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/integration carries the `integration` marker."""
    for item in items:
        if _INTEGRATION_DIR in Path(item.path).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One broker for the whole run; tests isolate themselves with `mqtt_fleet`.

    Do not kill/restart it (other tests share it): use `fresh_broker` for that.
    """
    with session_broker(tmp_path_factory.mktemp("broker")) as shared:
        yield shared


@pytest.fixture
def broker_kind() -> str:
    """Which broker ``any_broker`` is: Mosquitto, unless the test is marked ``portable``."""
    return "mosquitto"


@pytest.fixture(scope="session")
def nats_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One NATS node (JetStream, MQTT listener) for the session's portable tests."""
    with other_broker("nats", tmp_path_factory.mktemp("nats")) as node:
        yield node


@pytest.fixture(scope="session")
def rabbitmq_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One RabbitMQ node (MQTT plugin) for the session's portable tests."""
    with other_broker("rabbitmq", tmp_path_factory.mktemp("rabbitmq")) as node:
        yield node


@pytest.fixture
def any_broker(broker_kind: str, request: pytest.FixtureRequest) -> Broker:
    """The session broker of ``broker_kind`` (shared: isolate with ``mqtt_fleet``)."""
    name = "broker" if broker_kind == "mosquitto" else f"{broker_kind}_broker"
    found: Broker = request.getfixturevalue(name)
    return found


@pytest.fixture
def fresh_broker(tmp_path: Path) -> Iterator[LocalBroker]:
    """A dedicated local mosquitto for this test only, safe to kill() and restart()."""
    if find_mosquitto() is None:
        pytest.skip("needs a local mosquitto binary (apt-get install mosquitto)")
    with LocalBroker(workdir=tmp_path / "broker") as local:
        yield local


@pytest.fixture
def mqtt_fleet() -> str:
    """A fleet name unique to this test, so tests sharing a broker never see each other."""
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def minilm(tmp_path_factory: pytest.TempPathFactory) -> BuiltMiniLM:
    """all-MiniLM-L6-v2 built from its published weights, fp32 and int8, once per session."""
    require_minilm()
    return build_minilm(tmp_path_factory.mktemp("minilm"))
