"""Shared fixtures: an MQTT broker for the session, a private one per test, fleets."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker_admin.mosquitto import find_mosquitto
from testkit.local_broker import LocalBroker
from tests.support.brokers import Broker, session_broker
from tests.support.minilm import BuiltMiniLM, build_minilm, require_minilm

_INTEGRATION_DIR = Path(__file__).parent / "integration"


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
