"""One worker process of a simulation: its share of the devices, one thread, one event loop.

``run_worker`` is the process's entry point (``SimulatedFleet`` starts it): it raises the
descriptor limit, makes a ``Link`` and a ``VirtualDevice`` per device, and runs the loop
(``mux.ClientMux``) until the parent says stop (or goes away). Besides the sockets, the loop
runs three kinds of timers: connects (paced by the ``WavePacer``), each device's metrics
sample (every telemetry interval, the first at a random point of it so that samples do not all
come at once), and a tick every ``TICK_S`` for the devices with something to do (a download's
stall repair, a paced state message). Every ``report_interval`` it sends the parent a
``WorkerReport``; on stop, each device publishes ``online: false`` and disconnects, and a
final report follows.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from multiprocessing.connection import Connection

from protocol import DeviceStatus, Topics, TrustedRoot, VerifyKey
from runtime.mqtt import Backoff, Will
from runtime.urls import parse_broker_list

from .config import REFUSED_AFTER, WorkerPlan
from .device import VirtualDevice
from .fdlimit import raise_soft_limit
from .link import Link, WavePacer
from .mux import ClientMux
from .report import WorkerReport, merge_span
from .sinks import SinkFactory, disk_sinks, memory_sinks

log = logging.getLogger("modelcast.simulate")

TICK_S = 0.25
#: how long a stopping worker lets its devices say goodbye
STOP_S = 5.0
STOP = "stop"


class Worker:
    def __init__(self, plan: WorkerPlan, *, rng: random.Random | None = None) -> None:
        config = plan.config
        self.plan = plan
        self.mux = ClientMux()
        self._rng = rng or random.Random()
        self._stopping = False
        trust = TrustedRoot(VerifyKey.from_pem(config.trust_pem()))
        brokers = tuple((b.host, b.port) for b in parse_broker_list(config.broker_url))
        pacer = WavePacer(plan.connect_rate, self.mux.now, self._rng)
        options = config.options()
        self.verified = config.verified_chunks()
        self.devices: list[tuple[Link, VirtualDevice]] = []
        for spec in plan.specs():
            status = Topics(config.fleet).status(spec.device)
            link = Link(
                self.mux,
                pacer,
                brokers=brokers,
                client_id=f"modelcast-edge-{config.fleet}-{spec.device}",
                will=Will(status, DeviceStatus(spec.device, online=False).encode()),
                keepalive=config.keepalive,
                backoff=Backoff(0.5, 30.0, rng=self._rng),
                connack_timeout=config.connack_timeout,
            )
            device = VirtualDevice(
                spec,
                trust,
                wire=link,
                clock=time.time,
                sinks=self._sinks(spec.device),
                options=options,
                verified=self.verified,
            )
            self.devices.append((link, device))

    def _sinks(self, device: str) -> SinkFactory:
        disk = self.plan.config.disk
        return disk_sinks(disk, device) if disk is not None else memory_sinks()

    # --- running -------------------------------------------------------------------------
    def start(self) -> None:
        for link, device in self.devices:
            link.start(device)
            self._schedule_sample(device, self._rng.uniform(0, device.telemetry_interval))
        self.mux.call_later(TICK_S, self._tick)

    def _schedule_sample(self, device: VirtualDevice, delay: float) -> None:
        def sample() -> None:
            if not self._stopping:
                device.sample()
                self._schedule_sample(device, device.telemetry_interval)

        self.mux.call_later(delay, sample)

    def _tick(self) -> None:
        now = time.time()
        for _, device in self.devices:
            if device.busy:
                device.tick(now)
        self.mux.call_later(TICK_S, self._tick)

    def run(self, conn: Connection) -> None:
        """Serve the devices until the parent says stop (or its end of the pipe closes)."""
        interval = self.plan.config.report_interval
        report_at = 0.0
        while True:
            self.mux.run_once(0.05)
            now = time.monotonic()
            if now < report_at:
                continue
            report_at = now + interval
            conn.send(self.report())
            if _stop_asked(conn):
                break
        self.stop()
        conn.send(self.report(final=True))

    def stop(self) -> None:
        """No more samples; what was sent is acknowledged (so that a clean stop loses no
        telemetry); then each device says ``online: false`` and disconnects."""
        self._stopping = True
        self._run_while(lambda: any(link.unacked and link.connected for link, _ in self.devices))
        for link, device in self.devices:
            link.stop(device.stop_messages())
        self._run_while(lambda: any(link.connected for link, _ in self.devices))
        self.mux.close()

    def _run_while(self, busy: Callable[[], bool]) -> None:
        deadline = time.monotonic() + STOP_S / 2
        while time.monotonic() < deadline and busy():
            self.mux.run_once(0.05)

    # --- reporting -----------------------------------------------------------------------
    def report(self, *, final: bool = False) -> WorkerReport:
        """The sums over this worker's devices (every ``report_interval``: kept cheap, plain
        dicts and no work for what is empty, as it walks every device)."""
        active: dict[str, int] = {}
        states: dict[str, int] = {}
        verified: dict[str, int] = {}
        verified_at: dict[str, float] = {}
        timeline: dict[str, dict[str, tuple[float, float]]] = {}
        failures: dict[str, int] = {}
        connects: dict[str, int] = {}
        refused: dict[str, int] = {}
        totals: dict[str, int] = {"online": 0, "ever_online": 0, "telemetry_acked": 0}
        refused_devices = 0
        for link, device in self.devices:
            for name, version in device.memory.versions().items():
                label = f"{name}@{version}"
                active[label] = active.get(label, 0) + 1
            state = device.reporter.state.state.value
            states[state] = states.get(state, 0) + 1
            _add_milestones(device, verified, verified_at, timeline)
            _add(failures, device.reporter.rejections)
            if device.downloader.write_failures:
                _add(failures, {"write-failed": device.downloader.write_failures})
            if link.failures:
                _add(connects, link.failures)
                if not link.ever_connected and sum(link.failures.values()) >= REFUSED_AFTER:
                    refused_devices += 1
                    _add(refused, link.failures)
            _add(totals, device.counters())
            totals["online"] += link.connected
            totals["ever_online"] += link.ever_connected
            totals["telemetry_acked"] += link.acked
        return WorkerReport(
            worker=self.plan.worker,
            pid=os.getpid(),
            devices=len(self.devices),
            active=active,
            states=states,
            verified=verified,
            verified_at=verified_at,
            timeline=timeline,
            failures=failures,
            connect_failures=connects,
            refused=refused,
            refused_devices=refused_devices,
            verification=asdict(self.verified.counts) if self.verified is not None else {},
            final=final,
            **totals,
        )


def _add_milestones(
    device: VirtualDevice,
    verified: dict[str, int],
    verified_at: dict[str, float],
    timeline: dict[str, dict[str, tuple[float, float]]],
) -> None:
    """Add what ``device`` verified, and when it reached each milestone, to the sums."""
    for label, at in device.verified_at.items():
        verified[label] = verified.get(label, 0) + 1
        verified_at[label] = max(at, verified_at.get(label, 0.0))
    for label, reached in device.milestones().items():
        spans = timeline.setdefault(label, {})
        for name, at in reached.items():
            spans[name] = merge_span(spans.get(name), (at, at))


def _add(into: dict[str, int], counts: Mapping[str, int]) -> None:
    for key, n in counts.items():
        into[key] = into.get(key, 0) + n


def _stop_asked(conn: Connection) -> bool:
    try:
        return conn.poll() and conn.recv() == STOP
    except (EOFError, OSError):
        return True  # the parent is gone


def run_worker(plan: WorkerPlan, conn: Connection) -> None:
    """The worker process: Ctrl-C is the parent's to handle (it tells the workers to stop)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(
        level=logging.WARNING,
        format=f"%(asctime)s %(levelname)-7s simulate[{plan.worker}] %(name)s: %(message)s",
    )
    raise_soft_limit()
    worker = Worker(plan)
    worker.start()
    try:
        worker.run(conn)
    finally:
        conn.close()
