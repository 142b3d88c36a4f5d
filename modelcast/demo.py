"""``modelcast demo``: a broker, a coordinator and several edges in one terminal.

The story: three edges receive a signed 12 MB model; a second release follows, and a device that
joins late goes straight to it. Every process is real (Mosquitto, ``modelcast coordinator``,
``modelcast edge``); their logs are in the work directory.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from protocol import DeviceState, ProtocolError, Topics, UpdateState

from .broker import LocalBroker
from .mqtt import MqttSession
from .progress import ProgressBoard

FLEET = "demo"


class _Processes:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, label: str, *args: str) -> None:
        log = (self.workdir / f"{label}.log").open("ab")
        self.procs[label] = subprocess.Popen(
            [sys.executable, "-m", "modelcast.cli", *args],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )

    def check_alive(self) -> str | None:
        for label, proc in self.procs.items():
            if proc.poll() is not None:
                return f"{label} exited with {proc.returncode}; see {self.workdir / label}.log"
        return None

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def _wait(
    cond: threading.Condition, pred: Callable[[], bool], deadline: float, procs: _Processes
) -> None:
    with cond:
        while not pred():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the demo did not finish in time")
            cond.wait(min(remaining, 1.0))
            problem = procs.check_alive()
            if problem:
                raise RuntimeError(problem)


def run_demo(*, edges: int, size_mb: float, workdir: Path | None, timeout: float) -> int:
    from coordinator.keystore import init_keys, load_release_keys
    from coordinator.registry import Registry
    from coordinator.status import fleet_status, format_status

    from .models import make_model

    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="modelcast-demo-")
        workdir = Path(tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    board = ProgressBoard()
    keys, db = workdir / "keys", workdir / "coord.db"
    deadline = time.monotonic() + timeout
    topics = Topics(FLEET)
    cond = threading.Condition()
    procs = _Processes(workdir)

    def on_message(topic: str, payload: bytes, retain: bool) -> None:
        try:
            state = DeviceState.decode(payload)
        except ProtocolError:
            return
        board.update(state)
        with cond:
            cond.notify_all()

    def all_active(devices: list[str], version: int) -> bool:
        states = board.states()
        return all(
            d in states
            and states[d].state is UpdateState.ACTIVE
            and states[d].active.get("demo-model") == version
            for d in devices
        )

    with LocalBroker(workdir=workdir / "broker") as broker:
        board.note(f"modelcast demo: Mosquitto on {broker.url}, work directory {workdir}")
        if not (keys / "root.key").exists():
            init_keys(keys)
        registry = Registry(db)
        size = int(size_mb * (1 << 20))
        v1 = make_model(workdir / "model-v1.onnx", size, seed=1)
        rel = registry.add_release(
            v1, name="demo-model", version=1, keys=load_release_keys(keys), fleet=FLEET
        )
        registry.deploy("demo-model", 1, fleet=FLEET)
        board.note(
            f"released and deployed demo-model@1: {rel.size} bytes in {rel.n_chunks} signed chunks"
        )
        watcher = MqttSession(
            broker.url,
            f"modelcast-demo-watch-{int(time.time())}",
            on_message=on_message,
            clean_session=True,
            on_connect=lambda _s: watcher.subscribe([topics.all_state()]),
        )
        watcher.start()
        try:
            common = ["--broker", broker.url, "--fleet", FLEET]
            procs.start("coordinator", "coordinator", *common, "--db", str(db), "--keys", str(keys))
            devices = [f"edge-{i + 1}" for i in range(edges)]
            for d in devices:
                procs.start(
                    d,
                    "edge",
                    *common,
                    "--id",
                    d,
                    "--data",
                    str(workdir / d),
                    "--trust",
                    str(keys / "root.pub"),
                    "--http",
                    "127.0.0.1:0",
                )
            _wait(cond, lambda: all_active(devices, 1), deadline, procs)
            board.note(
                "all edges run demo-model@1; releasing demo-model@2 and starting a late joiner"
            )
            v2 = make_model(workdir / "model-v2.onnx", size, seed=2)
            registry.add_release(
                v2, name="demo-model", version=2, keys=load_release_keys(keys), fleet=FLEET
            )
            registry.deploy("demo-model", 2, fleet=FLEET)
            late = "edge-late"
            procs.start(
                late,
                "edge",
                *common,
                "--id",
                late,
                "--data",
                str(workdir / late),
                "--trust",
                str(keys / "root.pub"),
                "--http",
                "127.0.0.1:0",
            )
            _wait(cond, lambda: all_active([*devices, late], 2), deadline, procs)
            board.note("every edge, the late joiner included, runs demo-model@2:")
            board.note(format_status(fleet_status(db, FLEET)))
            return 0
        except (TimeoutError, RuntimeError) as exc:
            board.note(f"demo failed: {exc}")
            return 1
        finally:
            procs.stop_all()
            watcher.stop()
            if tmp is not None:
                tmp.cleanup()
