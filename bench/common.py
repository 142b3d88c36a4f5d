"""What every figure shares: one Mosquitto per run, keys, fleets, model files, edge processes
(``testkit.edge_process``) and watchers of the devices' retained state (``testkit.fleet_watch``).

Nothing here measures anything; the figure modules do, each against a baseline taken in the same
run on the same broker, so a noisy machine moves both sides of every ratio.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coordinator.keystore import init_keys
from coordinator.registry import Registry, ReleaseRecord
from coordinator.service import Coordinator, CoordinatorConfig
from protocol import DEFAULT_CHUNK_SIZE, DeviceState, ModelcastError
from protocol.textmodel import KIND_FILE
from testkit.brokers import AnyBroker, make_broker
from testkit.edge_process import EdgeFlags, EdgeProcess
from testkit.fleet_watch import FleetWatch
from testkit.synthetic_models import make_model

MB = 1 << 20
KIB = 1 << 10
#: Fast reconnects, as the fault tests use: a cut costs a fraction of a second, not 30 s.
FAST_RECONNECT = ("--reconnect-min", "0.2", "--reconnect-max", "1")


class BenchError(ModelcastError, RuntimeError):
    """A figure could not be measured (a baseline process failed, a service did not start)."""


# --- console ------------------------------------------------------------------------------
class Progress:
    """Progress lines on stderr, stamped with the seconds since the run started."""

    def __init__(self, quiet: bool = False) -> None:
        self.start = time.monotonic()
        self.quiet = quiet

    def __call__(self, message: str) -> None:
        if not self.quiet:
            elapsed = time.monotonic() - self.start
            print(f"[{elapsed:6.1f}s] {message}", file=sys.stderr, flush=True)


def reached(*states: str) -> Callable[[DeviceState], bool]:
    return lambda s: s.state.value in states


# --- one run ------------------------------------------------------------------------------
@dataclass
class Bench:
    """One benchmark run: a broker, keys, a work dir; figures take fleets from it."""

    quick: bool
    size_mb: float | None
    progress: Progress
    keep: bool = False
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="modelcast-bench-")))
    #: mosquitto, nats or rabbitmq (``--broker``): the baselines run on the same one
    broker_kind: str = "mosquitto"
    broker: AnyBroker = field(init=False)
    keydir: Path = field(init=False)
    _fleets: Iterator[int] = field(default_factory=itertools.count)
    _models: dict[tuple[int, int, str], Path] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.broker = make_broker(self.broker_kind, self.workdir / "broker")
        self.keydir = self.workdir / "keys"

    def __enter__(self) -> Bench:
        self.broker.start()
        init_keys(self.keydir)
        return self

    def __exit__(self, *exc: object) -> None:
        self.broker.close()
        if not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def url(self) -> str:
        return self.broker.url

    def pick(self, quick: float, full: float) -> float:
        return quick if self.quick else full

    def size(self, quick_mb: float, full_mb: float) -> int:
        """A model size in bytes: ``--size-mb`` if given, else the quick or full default."""
        mb = self.size_mb if self.size_mb is not None else self.pick(quick_mb, full_mb)
        return int(mb * MB)

    def fleet(self, label: str) -> str:
        return f"{label}{next(self._fleets)}"

    def dir(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def model(self, size: int, *, onnx: bool = True, seed: int = 0) -> Path:
        """A model file of about ``size`` bytes: a real ONNX dense layer, or random bytes (a
        release of any bytes is delivered alike; ``release`` ships them as ``--kind file``,
        which the edge activates without loading it)."""
        key = (size, seed, "onnx" if onnx else "raw")
        path = self._models.get(key)
        if path is None:
            path = self.dir("models") / f"m-{size}-{seed}.{'onnx' if onnx else 'bin'}"
            if onnx:
                make_model(path, size, seed=seed)
            else:
                with path.open("wb") as f:
                    left = size
                    while left:
                        piece = min(left, 8 * MB)
                        f.write(os.urandom(piece))
                        left -= piece
            self._models[key] = path
        return path

    def registry(self, fleet: str) -> Registry:
        return Registry(self.workdir / f"{fleet}.db")

    def release(
        self,
        registry: Registry,
        fleet: str,
        model: Path,
        *,
        name: str = "m",
        version: int = 1,
        chunk_size: int | None = None,
    ) -> ReleaseRecord:
        return registry.add_release(
            model,
            name=name,
            version=version,
            keys=_release_keys(self.keydir),
            fleet=fleet,
            chunk_size=chunk_size or DEFAULT_CHUNK_SIZE,
            model_kind=None if model.suffix == ".onnx" else KIND_FILE,
        )

    def coordinator(
        self,
        fleet: str,
        *,
        broker_url: str | None = None,
        client_id: str | None = None,
        poll_interval: float = 0.01,
    ) -> Coordinator:
        """A coordinator in this process. It looks at its database every ``poll_interval``
        seconds (``modelcast coordinator``: 0.5): 10 ms by default here, so a deploy is
        published within 10 ms and not half a second, which the delivery figures would count;
        figures that deploy nothing use the real default."""
        service = Coordinator(
            CoordinatorConfig(
                broker_url=broker_url or self.url,
                client_id=client_id,
                db_path=self.workdir / f"{fleet}.db",
                keydir=self.keydir,
                fleet=fleet,
                poll_interval=poll_interval,
                broker_kind=self.broker_kind,
            )
        )
        service.start()
        if not service.wait_connected(10):
            raise BenchError("coordinator did not connect")
        return service

    def edge(
        self,
        fleet: str,
        device: str,
        *extra: str,
        broker_url: str | None = None,
        http: str = "off",
        log_level: str = "INFO",
    ) -> EdgeProcess:
        """A running ``modelcast edge``: INFO logs, no local inference endpoint (``http``) and
        the agent's own telemetry interval, unless a figure asks otherwise."""
        return EdgeProcess(
            device,
            broker_url=broker_url or self.url,
            data=self.dir(f"edges/{fleet}/{device}"),
            trust=self.keydir / "root.pub",
            fleet=fleet,
            log_dir=self.dir(f"logs/{fleet}"),
            extra=extra,
            flags=EdgeFlags(log_level=log_level, http=http, telemetry_interval=None),
        ).start()

    def watch(self, fleet: str, *, broker_url: str | None = None) -> FleetWatch:
        """A watcher of the fleet's device states and status (nothing else: chunk requests and
        telemetry would add to the traffic a figure measures); enter it to connect."""
        return FleetWatch(broker_url or self.url, fleet, states_only=True)


def _release_keys(keydir: Path) -> Any:
    from coordinator.keystore import load_release_keys

    return load_release_keys(keydir)


@contextlib.contextmanager
def edges_running(edges: list[EdgeProcess]) -> Iterator[list[EdgeProcess]]:
    """Stops the edges on the way out, side by side (SIGTERM to all, then wait for each)."""
    try:
        yield edges
    finally:
        for e in edges:
            e.terminate()
        for e in edges:
            e.stop()
