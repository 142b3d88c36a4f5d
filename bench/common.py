"""What every figure shares: one Mosquitto per run, keys, fleets, model files, edge processes,
a watcher of the devices' retained state, and /proc readers.

Nothing here measures anything; the figure modules do, each against a baseline taken in the same
run on the same broker, so a noisy machine moves both sides of every ratio.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

from coordinator.keystore import init_keys
from coordinator.registry import Registry, ReleaseRecord
from coordinator.service import Coordinator, CoordinatorConfig
from protocol import (
    DEFAULT_CHUNK_SIZE,
    DeviceState,
    DeviceStatus,
    ModelcastError,
    ProtocolError,
    Topics,
)
from runtime.urls import parse_broker_url
from testkit.local_broker import LocalBroker
from testkit.synthetic_models import make_model

from .plain import plain_client

MB = 1 << 20
KIB = 1 << 10
REPO = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: Fast reconnects, as the fault tests use: a cut costs a fraction of a second, not 30 s.
FAST_RECONNECT = ("--reconnect-min", "0.2", "--reconnect-max", "1")


class BenchError(ModelcastError, RuntimeError):
    """A figure could not be measured (a process died, a wait timed out)."""


# --- /proc --------------------------------------------------------------------------------
def proc_status_kb(pid: int, key: str) -> int:
    """A ``kB`` field of /proc/PID/status (``VmRSS``, ``VmHWM``), in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise BenchError(f"/proc/{pid}/status has no {key}")


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    # the command name (field 2) may hold spaces: split after its closing parenthesis
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


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


# --- edges --------------------------------------------------------------------------------
class EdgeProc:
    """``python -m modelcast.cli edge`` as a child process logging to a file."""

    def __init__(self, args: list[str], log_path: Path, device: str) -> None:
        self.device = device
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=REPO,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-1500:]
            raise BenchError(f"edge {self.device} exited with {self.proc.returncode}:\n{tail}")

    def rss_kb(self) -> int:
        return proc_status_kb(self.pid, "VmRSS")

    def hwm_kb(self) -> int:
        return proc_status_kb(self.pid, "VmHWM")

    def cpu_s(self) -> float:
        return proc_cpu_s(self.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


# --- the devices' retained state, decoded -------------------------------------------------
@dataclass
class _Seen:
    at: float  # time.monotonic() when the bench received it
    state: DeviceState


class FleetWatch:
    """Every ``devices/+/state`` and ``devices/+/status`` message of one fleet, as it arrives."""

    def __init__(self, broker_url: str, fleet: str) -> None:
        self.topics = Topics(fleet)
        self._cond = threading.Condition()
        self._states: dict[str, list[_Seen]] = {}
        self._online: dict[str, bool] = {}
        self._client = paho_client(f"bench-watch-{fleet}")
        self._client.on_message = self._on_message
        host, port = parse_broker_url(broker_url)
        subscribed = threading.Event()
        self._client.on_subscribe = lambda *a: subscribed.set()
        wanted = [(self.topics.all_state(), 1), (self.topics.all_status(), 1)]
        self._client.on_connect = lambda c, *a: c.subscribe(wanted)
        self._client.connect(host, port, keepalive=60)
        self._client.loop_start()
        if not subscribed.wait(10):
            raise BenchError("state watcher could not subscribe")

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> FleetWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        now = time.monotonic()
        device = self.topics.device_of(msg.topic)
        if device is None or not msg.payload:
            return
        try:
            if msg.topic.endswith("/state"):
                state = DeviceState.decode(bytes(msg.payload))
                with self._cond:
                    self._states.setdefault(device, []).append(_Seen(now, state))
                    self._cond.notify_all()
            else:
                status = DeviceStatus.decode(bytes(msg.payload))
                with self._cond:
                    self._online[device] = status.online
                    self._cond.notify_all()
        except ProtocolError:
            return

    def wait_online(
        self, devices: list[str], timeout: float, edges: Sequence[EdgeProc] = ()
    ) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not all(self._online.get(d) for d in devices):
                for e in edges:
                    e.check_alive()
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = [d for d in devices if not self._online.get(d)]
                    raise BenchError(f"devices not online after {timeout}s: {missing[:5]}")
                self._cond.wait(min(left, 0.5))

    def wait_state(
        self,
        device: str,
        pred: Callable[[DeviceState], bool],
        timeout: float,
        edge: EdgeProc | None = None,
    ) -> tuple[float, DeviceState]:
        """The first state of ``device`` (ever received) that matches: (arrival time, state)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for seen in self._states.get(device, []):
                    if pred(seen.state):
                        return seen.at, seen.state
                if edge is not None:
                    edge.check_alive()
                left = deadline - time.monotonic()
                if left <= 0:
                    last = self._states.get(device, [])
                    raise BenchError(
                        f"{device}: no matching state after {timeout}s; last "
                        f"{last[-1].state if last else None}"
                    )
                self._cond.wait(min(left, 0.5))

    def states(self, device: str) -> list[DeviceState]:
        with self._cond:
            return [s.state for s in self._states.get(device, [])]


def paho_client(client_id: str, *, clean: bool = True) -> paho.Client:
    return plain_client(client_id, clean=clean)


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
    broker: LocalBroker = field(init=False)
    keydir: Path = field(init=False)
    _fleets: Iterator[int] = field(default_factory=itertools.count)
    _models: dict[tuple[int, int, str], Path] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.broker = LocalBroker(workdir=self.workdir / "broker")
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
        release of any bytes is delivered alike; it only fails activation, after ``verified``)."""
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
    ) -> EdgeProc:
        data = self.dir(f"edges/{fleet}/{device}")
        args = [
            sys.executable,
            "-m",
            "modelcast.cli",
            "--log-level",
            log_level,
            "edge",
            "--broker",
            broker_url or self.url,
            "--id",
            device,
            "--data",
            str(data),
            "--trust",
            str(self.keydir / "root.pub"),
            "--fleet",
            fleet,
            "--http",
            http,
            *extra,
        ]
        return EdgeProc(args, self.dir("logs") / f"{fleet}-{device}.log", device)


def _release_keys(keydir: Path) -> Any:
    from coordinator.keystore import load_release_keys

    return load_release_keys(keydir)


@contextlib.contextmanager
def edges_running(edges: list[EdgeProc]) -> Iterator[list[EdgeProc]]:
    try:
        yield edges
    finally:
        for e in edges:
            e.proc.terminate()
        for e in edges:
            e.stop()
