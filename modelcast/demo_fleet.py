"""The moving parts of ``modelcast demo``: its child processes (coordinator and edges, each a
real ``python -m modelcast.cli``), the edges' links (with ``--flaky`` each through its own
``FaultProxy``), and the watch on the fleet's state and status messages.

Threads: the demo's own thread starts everything and waits in ``DemoWatch.wait_until``; the
watch's MQTT network thread feeds it (``DemoWatch.on_message``); each fault proxy runs its own
threads.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from protocol import DeviceState, DeviceStatus, ProtocolError, Topics, UpdateState
from runtime.mqtt import MqttSession
from testkit.faultproxy import FaultProxy
from testkit.local_broker import LocalBroker

from .progress import ProgressBoard

#: ``--flaky``: every edge's own link is cut every 1-4 s, carries 256 KB/s, and adds 50 ms.
FLAKY_CUT_AFTER_S = (1.0, 4.0)
FLAKY_RATE_BYTES_PER_S = 256 * 1024
FLAKY_LATENCY_S = 0.05
#: ...and the edges retry quickly, so a cut costs a moment, not the default backoff.
FLAKY_EDGE_ARGS = ("--reconnect-min", "0.2", "--reconnect-max", "2")
#: ...and the releases are cut in 64 KiB chunks, as an operator would for such links: a chunk cut
#: off is sent again whole, and the default 512 KiB takes 2 s at 256 KB/s.
FLAKY_CHUNK_SIZE = 64 * 1024


class DemoProcesses:
    """The demo's child processes, by label, each logging to ``WORKDIR/LABEL.log``."""

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


class EdgeLinks:
    """With ``--flaky``, one fault proxy per edge (so each has its own bad link); else none."""

    def __init__(self, broker: LocalBroker, fleet: str, flaky: bool) -> None:
        self.broker = broker
        self.fleet = fleet
        self.flaky = flaky
        self.proxies: dict[str, FaultProxy] = {}

    @property
    def chunk_size(self) -> int | None:
        """The chunk size releases are cut in for these links (None: the default)."""
        return FLAKY_CHUNK_SIZE if self.flaky else None

    def describe(self) -> str:
        low, high = FLAKY_CUT_AFTER_S
        return (
            f"flaky links: each edge's connection is cut every {low:g}-{high:g} s, carries "
            f"{FLAKY_RATE_BYTES_PER_S // 1024} KB/s and adds {FLAKY_LATENCY_S * 1000:.0f} ms; "
            f"releases in {FLAKY_CHUNK_SIZE // 1024} KiB chunks"
        )

    def edge_args(self, device: str) -> list[str]:
        """The edge's ``--broker`` (its own proxy when flaky) and ``--fleet``."""
        if not self.flaky:
            return ["--broker", self.broker.url, "--fleet", self.fleet]
        proxy = FaultProxy(
            self.broker.host,
            self.broker.port,
            seed=len(self.proxies) + 1,
            rate_bytes_per_s=FLAKY_RATE_BYTES_PER_S,
            latency_s=FLAKY_LATENCY_S,
            cut_after=FLAKY_CUT_AFTER_S,
        ).start()
        self.proxies[device] = proxy
        return ["--broker", proxy.url, "--fleet", self.fleet, *FLAKY_EDGE_ARGS]

    def annotate(self, board: ProgressBoard) -> None:
        for device, proxy in self.proxies.items():
            board.annotate(device, f"link cut {proxy.cuts}x")

    def summary(self) -> list[str]:
        return [
            f"{device}: its link was cut {p.cuts} times and carried "
            f"{(p.bytes_to_client + p.bytes_to_server) / (1 << 20):.1f} MB"
            for device, p in sorted(self.proxies.items())
        ]

    def stop(self) -> None:
        for proxy in self.proxies.values():
            proxy.stop()


class DemoWatch:
    """What the demo knows of its edges, from their messages: each one's update state (drawn
    on the board), and from its retained status its local endpoint's port and the variant of
    ``model`` it runs. Fed on the MQTT network thread; the demo's thread waits on it."""

    def __init__(self, broker_url: str, fleet: str, board: ProgressBoard, model: str) -> None:
        self.topics = Topics(fleet)
        self.board = board
        self.model = model
        self.ports: dict[str, int] = {}
        self.variants: dict[str, str] = {}
        self._cond = threading.Condition()
        self._session = MqttSession(
            broker_url,
            f"modelcast-demo-watch-{int(time.time())}",
            on_message=self.on_message,
            clean_session=True,
            on_connect=lambda _present: self._session.subscribe(
                [self.topics.all_state(), self.topics.all_status()]
            ),
        )

    def start(self) -> None:
        self._session.start()

    def stop(self) -> None:
        self._session.stop()

    def on_message(self, topic: str, payload: bytes, _retain: bool) -> None:
        """An MQTT message (on the network thread): a status or a state, else ignored."""
        try:
            if self.topics.device_of(topic) is not None and topic.endswith("/status"):
                status = DeviceStatus.decode(payload)
                if "http_port" in status.profile:
                    self.ports[status.device] = int(status.profile["http_port"])
                runs = status.profile.get("variants")
                if isinstance(runs, dict):
                    self.variants[status.device] = str(runs.get(self.model, ""))
            else:
                self.board.update(DeviceState.decode(payload))
        except (ProtocolError, TypeError, ValueError):
            return
        with self._cond:
            self._cond.notify_all()

    def all_active(self, devices: list[str], version: int) -> bool:
        """Every one of ``devices`` runs ``model@version`` and has said where its endpoint is."""
        states = self.board.states()
        return all(
            d in states
            and states[d].state is UpdateState.ACTIVE
            and states[d].active.get(self.model) == version
            and d in self.ports
            for d in devices
        )

    def wait_until(
        self, pred: Callable[[], bool], deadline: float, every_wake: Callable[[], None]
    ) -> None:
        """Wait for ``pred``, checking it on every message and at least once a second, and
        calling ``every_wake`` (which may raise) after each wake; TimeoutError at ``deadline``
        (``time.monotonic``)."""
        with self._cond:
            while not pred():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("the demo did not finish in time")
                self._cond.wait(min(remaining, 1.0))
                every_wake()
