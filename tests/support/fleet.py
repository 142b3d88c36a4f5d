"""Test harness: real edge processes (``modelcast edge``), an in-process coordinator, keys,
releases, and a decoded view of the devices' retained state topics."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from coordinator.keystore import ReleaseKeys, init_keys, load_release_keys
from coordinator.registry import Registry
from protocol import DeviceEvent, DeviceState, ProtocolError, Topics, UpdateState
from runtime.urls import parse_broker_url
from testkit.mqtt_recorder import Received, TopicRecorder

REPO = Path(__file__).resolve().parents[2]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while piece := f.read(1 << 20):
            h.update(piece)
    return h.hexdigest()


@dataclass
class Keys:
    dir: Path
    release: ReleaseKeys

    @property
    def root_pub(self) -> Path:
        return self.dir / "root.pub"


def make_keys(path: Path) -> Keys:
    init_keys(path)
    return Keys(path, load_release_keys(path))


class EdgeProcess:
    """``python -m modelcast.cli edge`` as a child process, logging to a file."""

    def __init__(
        self,
        device: str,
        *,
        broker_url: str,
        data: Path,
        trust: Path,
        fleet: str,
        log_dir: Path,
        extra: tuple[str, ...] = (),
        preexec_fn: Callable[[], None] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """``preexec_fn`` runs in the child before ``exec`` (e.g. ``resource.setrlimit``);
        ``env`` adds to (or overrides) the inherited environment."""
        self.device = device
        self.preexec_fn = preexec_fn
        self.env = dict(env or {})
        self.args = [
            sys.executable,
            "-m",
            "modelcast.cli",
            "--log-level",
            "DEBUG",
            "edge",
            "--broker",
            broker_url,
            "--id",
            device,
            "--data",
            str(data),
            "--trust",
            str(trust),
            "--fleet",
            fleet,
            "--http",
            "127.0.0.1:0",  # several edges per machine: each takes a free port
            "--telemetry-interval",
            "1",
            *extra,
        ]
        self.data = data
        self.log_path = log_dir / f"{device}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> EdgeProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.args,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
            preexec_fn=self.preexec_fn,
        )
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=5)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def model_path(self, name: str, version: int) -> Path:
        return self.data / "models" / name / str(version) / "model.onnx"


class FleetWatch:
    """Everything devices publish under ``modelcast/{fleet}/devices/#``, decoded on demand."""

    def __init__(self, broker_url: str, fleet: str) -> None:
        host, port = parse_broker_url(broker_url)
        self.topics = Topics(fleet)
        self.recorder = TopicRecorder(host, port, [f"{self.topics.base}/devices/#"], timeout=60.0)

    def __enter__(self) -> FleetWatch:
        self.recorder.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.recorder.close()

    def states(self, device: str) -> Iterator[DeviceState]:
        topic = self.topics.state(device)
        for item in self.recorder.messages:
            if item.topic == topic:
                yield DeviceState.decode(item.payload)

    def events(self, device: str) -> list[DeviceEvent]:
        topic = self.topics.telemetry(device, "events")
        return [DeviceEvent.decode(i.payload) for i in self.recorder.messages if i.topic == topic]

    def wait_state(
        self, device: str, pred: Callable[[DeviceState], bool], timeout: float = 60.0
    ) -> DeviceState:
        topic = self.topics.state(device)

        def match(item: Received) -> bool:
            if item.topic != topic:
                return False
            try:
                return pred(DeviceState.decode(item.payload))
            except ProtocolError:
                return False

        return DeviceState.decode(self.recorder.wait_for(match, timeout).payload)

    def wait_active(
        self, device: str, name: str, version: int, timeout: float = 90.0
    ) -> DeviceState:
        return self.wait_state(
            device,
            lambda s: s.state is UpdateState.ACTIVE and s.active.get(name) == version,
            timeout,
        )

    def wait_event(
        self, device: str, pred: Callable[[DeviceEvent], bool], timeout: float = 30.0
    ) -> DeviceEvent:
        topic = self.topics.telemetry(device, "events")

        def match(item: Received) -> bool:
            return item.topic == topic and pred(DeviceEvent.decode(item.payload))

        return DeviceEvent.decode(self.recorder.wait_for(match, timeout).payload)


def release_and_deploy(
    registry: Registry,
    keys: Keys,
    model: Path,
    name: str,
    version: int,
    fleet: str,
    chunk_size: int | None = None,
) -> None:
    kwargs = {"chunk_size": chunk_size} if chunk_size else {}
    registry.add_release(
        model, name=name, version=version, keys=keys.release, fleet=fleet, **kwargs
    )
    registry.deploy(name, version, fleet=fleet)
