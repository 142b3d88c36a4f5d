"""The usual integration set-up: keys, a registry, a fleet watcher, edges as processes and an
in-process coordinator, all torn down (and the edges' logs printed) at the end."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from coordinator.registry import Registry
from coordinator.service import Coordinator, CoordinatorConfig
from testkit.edge_process import EdgeProcess
from testkit.fleet_watch import FleetWatch
from tests.support.brokers import Broker, kind_of
from tests.support.fleet import Keys, make_keys


@dataclass
class Env:
    tmp: Path
    broker: Broker
    fleet: str
    keys: Keys
    registry: Registry
    watch: FleetWatch
    edges: list[EdgeProcess] = field(default_factory=list)
    coordinator: Coordinator | None = None

    def edge(
        self,
        device: str,
        *,
        broker_url: str | None = None,
        extra: tuple[str, ...] = (),
        process_env: dict[str, str] | None = None,
    ) -> EdgeProcess:
        e = EdgeProcess(
            device,
            broker_url=broker_url or self.broker.url,
            data=self.tmp / device,
            trust=self.keys.root_pub,
            fleet=self.fleet,
            log_dir=self.tmp,
            extra=extra,
            env=process_env,
        )
        self.edges.append(e)
        return e.start()

    def start_coordinator(self, broker_url: str | None = None, **settings: Any) -> Coordinator:
        """A coordinator of the fleet on ``tmp/coord.db`` (on ``broker_url``, default the
        env's broker); ``settings``: more of its config (its ``broker_kind`` is the test
        broker's unless given)."""
        settings.setdefault("broker_kind", kind_of(self.broker))
        self.coordinator = Coordinator(
            CoordinatorConfig(
                broker_url=broker_url or self.broker.url,
                db_path=self.tmp / "coord.db",
                keydir=self.keys.dir,
                fleet=self.fleet,
                **settings,
            )
        )
        self.coordinator.start()
        return self.coordinator

    def wait_online(self, device: str) -> None:
        self.watch.wait_online([device], 30)


@contextlib.contextmanager
def running_env(tmp_path: Path, broker: Broker, fleet: str) -> Iterator[Env]:
    """An ``Env`` on ``broker``; everything it started is stopped on the way out."""
    keys = make_keys(tmp_path / "keys")
    with FleetWatch(broker.url, fleet) as watch:
        e = Env(tmp_path, broker, fleet, keys, Registry(tmp_path / "coord.db"), watch)
        try:
            yield e
        finally:
            for edge in e.edges:
                edge.stop()
            if e.coordinator is not None:
                e.coordinator.stop()
            for edge in e.edges:  # on failure, show what the edges said
                print(f"----- {edge.device} log (tail) -----\n{edge.log()[-3000:]}")


@pytest.fixture
def env(tmp_path: Path, any_broker: Broker, mqtt_fleet: str) -> Iterator[Env]:
    """On Mosquitto; on each broker kind in a test marked ``portable``."""
    with running_env(tmp_path, any_broker, mqtt_fleet) as e:
        yield e
