"""The phases of the ``fleet`` figure (``bench.fleet``), each on its own fleet of the figure's
broker (``broker_config/large.conf``), with simulated devices (``modelcast.simulate``).

- ``delivery_phase``: N devices online, a deploy, until every one verified it (the time, and
  the bytes the in-process coordinator published); then a staged rollout of a second release,
  whose 5 % stage is counted; ``modelcast status`` timed; RSS of everything at N devices.
- ``telemetry_phase``: N devices sampling every second; what the coordinator stored against
  what they made.
- ``idle_phase`` (full run): 10,000 devices connected and idle (a sample a minute) against a
  ``modelcast coordinator`` process: RSS and CPU of the coordinator, the simulator and the
  broker, and ``modelcast status`` at that size.

Processes are measured from the outside (``testkit.procfs``): the broker and the simulator's
workers by pid; the in-process coordinator is this process (the harness's own RSS, taken
before it started, is in the details).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coordinator.registry import Registry, ReleaseRecord
from coordinator.rollout_plan import Gates
from coordinator.rollouts import RolloutStore, start_rollout
from coordinator.service import DEFAULT_POLL_INTERVAL, Coordinator
from modelcast.cli import main as modelcast_main
from modelcast.simulate.config import SimConfig
from modelcast.simulate.report import FleetSnapshot
from modelcast.simulate.runner import SimulatedFleet
from protocol import DEFAULT_CHUNK_SIZE, Selector, membership_point, stage_ppm
from testkit.cli_process import CliProcess
from testkit.procfs import proc_cpu_s, proc_status_kb

from .baseline import read_chunks
from .common import Bench, BenchError
from .fleet_baseline import fanout_baseline
from .fleet_dashboard import dashboard_fleet_ms
from .rss import reset_hwm

#: connects a second, all worker processes together (the simulator's default is 300)
CONNECT_RATE = 500.0
STAGE_PERCENT = 5.0
#: seconds to go on watching once a stage's devices run the release (none beyond them should)
SETTLE_S = 3.0


@dataclass(frozen=True)
class Rig:
    """What every phase shares: the run, the broker, how many devices over how many processes."""

    b: Bench
    url: str
    broker_pid: int
    devices: int
    processes: int
    #: every simulated device hashes its bytes (``--verify-each``), not once per process
    verify_each: bool = False

    def config(self, fleet: str, *, telemetry_interval: float, devices: int = 0) -> SimConfig:
        return SimConfig(
            self.url,
            devices or self.devices,
            self.b.keydir / "root.pub",
            fleet=fleet,
            processes=self.processes,
            telemetry_interval=telemetry_interval,
            connect_rate=CONNECT_RATE,
            verify_each=self.verify_each,
        )


def rss_mb(pids: Sequence[int]) -> float:
    return round(sum(proc_status_kb(p, "VmRSS") for p in pids) / 1024, 1)


def cpu_s(pids: Sequence[int]) -> float:
    return sum(proc_cpu_s(p) for p in pids)


class BrokerWatch:
    """The broker's CPU seconds and peak RSS over a stretch of the run (``VmHWM``, reset at the
    start where Linux allows it; otherwise the peak since the broker started)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.reset = reset_hwm(pid)
        self.cpu0 = proc_cpu_s(pid)

    def read(self) -> dict[str, Any]:
        return {
            "broker_cpu_s": round(proc_cpu_s(self.pid) - self.cpu0, 2),
            "broker_peak_mb": round(proc_status_kb(self.pid, "VmHWM") / 1024, 1),
            "broker_peak_since": "round" if self.reset else "start",
        }


def wait(
    sim: SimulatedFleet, what: str, until: Callable[[FleetSnapshot], bool], timeout: float
) -> FleetSnapshot:
    snap = sim.wait_for(until, timeout)
    if snap is None:
        raise BenchError(f"{what}: not within {timeout:.0f} s: {sim.snapshot().progress_line()}")
    return snap


def wait_online(rig: Rig, sim: SimulatedFleet, n: int) -> float:
    t0 = time.monotonic()
    wait(sim, f"{n} devices online", lambda s: s.online >= n, 60 + 3 * n / CONNECT_RATE)
    seconds = time.monotonic() - t0
    rig.b.progress(f"fleet: {n} devices online in {seconds:.1f} s")
    return seconds


def status_ms(db: os.PathLike[str], fleet: str) -> dict[str, float]:
    """``modelcast status`` and ``status --json`` (in this process, output discarded): the
    median of three runs of each, in ms."""
    out: dict[str, float] = {}
    for extra in ([], ["--json"]):
        runs = []
        for _ in range(3):
            with contextlib.redirect_stdout(io.StringIO()):
                t0 = time.perf_counter()
                code = modelcast_main(["status", "--db", os.fspath(db), "--fleet", fleet, *extra])
                runs.append((time.perf_counter() - t0) * 1000)
            if code != 0:
                raise BenchError(f"modelcast status {' '.join(extra)} exited with {code}")
        out["json" if extra else "text"] = round(statistics.median(runs), 1)
    return out


# --- delivery, rollout stage, status, RSS ---------------------------------------------------
#: deliveries of each side, alternating; the best of each makes the ratio
ROUNDS = 3


def delivery_phase(rig: Rig, size: int) -> dict[str, Any]:
    """ROUNDS deliveries to the same N devices (m@1, then m@2: every device takes each), each
    after a plain paho fan-out of the same bytes; then a 5 % stage of m@3, ``modelcast status``
    and the RSS of everything."""
    b, n = rig.b, rig.devices
    fleet = b.fleet("fleet")
    registry = b.registry(fleet)
    models = [b.model(size, onnx=False, seed=7 + v) for v in range(ROUNDS + 1)]
    records = [b.release(registry, fleet, m, version=v + 1) for v, m in enumerate(models)]
    harness_kb = proc_status_kb(os.getpid(), "VmRSS")
    service = b.coordinator(fleet, broker_url=rig.url)
    try:
        with SimulatedFleet(rig.config(fleet, telemetry_interval=60.0)) as sim:
            online_s = wait_online(rig, sim, n)
            sim.poll(2.0)  # the connects' aftermath: statuses and states in
            connected = {"broker_mb": rss_mb([rig.broker_pid]), "simulator_mb": rss_mb(sim.pids)}
            rounds = []
            for record, model in zip(records[:ROUNDS], models, strict=False):
                baseline = baseline_round(rig, model)
                rounds.append(
                    {"baseline": baseline, **deliver(rig, registry, service, sim, record)}
                )
            stage = rollout_stage(rig, registry, sim, fleet, version=ROUNDS + 1)
            status = status_ms(b.workdir / f"{fleet}.db", fleet)
            dashboard = dashboard_fleet_ms(b.workdir / f"{fleet}.db", fleet, rig.url)
            rss = rss_at_n(rig, sim, harness_kb)
    finally:
        service.stop()
        registry.close()
    return {
        "online_s": round(online_s, 1),
        "size_bytes": records[0].size,
        "n_chunks": records[0].n_chunks,
        "chunk_size": records[0].chunk_size,
        "rounds": rounds,
        "connected_rss": connected,
        "broker_peak_mb": max(r["broker_peak_mb"] for r in rounds),
        "baseline_s": min(r["baseline"]["seconds"] for r in rounds),
        "modelcast_s": min(r["seconds"] for r in rounds),
        "publish_ratio": max(r["publish_ratio"] for r in rounds),
        "cpu_ratio": round(
            min(cpu_used(r["baseline"]) for r in rounds) / min(map(cpu_used, rounds)), 3
        ),
        "stage": stage,
        "status_ms": status,
        "dashboard": dashboard,
        "rss": rss,
    }


def rss_at_n(rig: Rig, sim: SimulatedFleet, harness_kb: int) -> dict[str, float]:
    """The RSS of every process at N devices (the coordinator runs in this process)."""
    return {
        "coordinator_process_mb": rss_mb([os.getpid()]),
        "harness_before_coordinator_mb": round(harness_kb / 1024, 1),
        "broker_mb": rss_mb([rig.broker_pid]),
        "simulator_mb": rss_mb(sim.pids),
    }


def cpu_used(side: dict[str, Any]) -> float:
    """CPU seconds one side of a round used: subscribers or simulator, the broker, and (for
    modelcast) the coordinator's process; plain paho's publisher is not counted."""
    own = side["subscriber_cpu_s"] if "subscriber_cpu_s" in side else sum(side["cpu_s"].values())
    return float(own + side["broker_cpu_s"])


def baseline_round(rig: Rig, model: os.PathLike[str]) -> dict[str, Any]:
    chunks = read_chunks(Path(model), DEFAULT_CHUNK_SIZE)
    topic = f"bench/fleet/{os.getpid()}/{time.monotonic_ns()}"
    broker = BrokerWatch(rig.broker_pid)
    out = {**fanout_baseline(rig.url, topic, chunks, rig.devices, rig.processes), **broker.read()}
    rig.b.progress(f"fleet: plain paho, the same bytes to {rig.devices}: {out['seconds']:.2f} s")
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}


def deliver(
    rig: Rig, registry: Registry, service: Coordinator, sim: SimulatedFleet, record: ReleaseRecord
) -> dict[str, Any]:
    """Deploy ``record`` to the devices (all online): seconds until the last one verified it,
    and what the coordinator published meanwhile."""
    label = f"{record.name}@{record.version}"
    published0, chunks0 = service.bytes_published, service.chunks_published
    cpu0 = (cpu_s(sim.pids), cpu_s([os.getpid()]))
    before = sim.snapshot().to_dict()
    broker = BrokerWatch(rig.broker_pid)
    t0 = time.time()
    registry.deploy(record.name, record.version, fleet=record.fleet)
    snap = wait(sim, f"deploy {label}", lambda s: s.verified.get(label, 0) >= rig.devices, 600)
    seconds = (snap.verified_at(label) or time.time()) - t0
    cpu1 = (cpu_s(sim.pids), cpu_s([os.getpid()]))
    published = service.bytes_published - published0
    after = snap.to_dict()
    rig.b.progress(f"fleet: modelcast, {label} to {rig.devices} devices: {seconds:.2f} s")
    return {
        "seconds": round(seconds, 3),
        "bytes_published": published,
        "chunks_published": service.chunks_published - chunks0,
        "publish_ratio": round(published / record.size, 4),
        "cpu_s": _delta(cpu0, cpu1),
        **broker.read(),
        "timeline_s": snap.timeline(label, t0),
        "devices_received_bytes": after["bytes_received"] - before["bytes_received"],
        **{k: after[k] - before[k] for k in ("duplicates", "unwanted_bytes", "stalls", "requests")},
        "failures": after["failures"],
    }


def _delta(before: Sequence[float], after: Sequence[float]) -> dict[str, float]:
    """CPU seconds used between two readings of (simulator, this process)."""
    names = ("simulator", "coordinator_process")
    return {k: round(b - a, 2) for k, a, b in zip(names, before, after, strict=True)}


def rollout_stage(
    rig: Rig, registry: Registry, sim: SimulatedFleet, fleet: str, *, version: int
) -> dict[str, Any]:
    """A rollout of ``m@version`` in stages 5 % then 100 % (soak an hour: it stays at 5 %): how
    many devices take it, against 5 % of the fleet (and against what the membership hash
    says)."""
    n = rig.devices
    store = RolloutStore(rig.b.workdir / f"{fleet}.db")
    try:
        rollout = start_rollout(
            registry,
            store,
            fleet=fleet,
            name="m",
            version=version,
            select=Selector(),
            stages=(STAGE_PERCENT, 100.0),
            soak=3600.0,
            gates=Gates(),
        )
    finally:
        store.close()
    config = rig.config(fleet, telemetry_interval=60.0)
    expected = stage_members(rollout.id, [config.device_id(i) for i in range(n)], STAGE_PERCENT)
    t0 = time.monotonic()
    label = f"m@{version}"
    sim.wait_for(lambda s: s.active.get(label, 0) >= expected, 300)
    selected = sim.poll(SETTLE_S).active.get(label, 0)  # and none beyond them
    rig.b.progress(f"fleet: a {STAGE_PERCENT:g} % stage took {selected} of {n} devices")
    return {
        "selected": selected,
        "hash_expected": expected,
        "nominal": STAGE_PERCENT / 100 * n,
        "error_fraction": round(abs(selected - STAGE_PERCENT / 100 * n) / n, 4),
        "seconds": round(time.monotonic() - t0, 2),
    }


def stage_members(rollout: str, devices: list[str], percent: float) -> int:
    """The devices a stage of ``percent`` admits when all are known: those whose membership
    point is below the stage's threshold, raised (as ``coordinator.rollout_plan`` does) so that
    at least ``ceil(percent % of them)`` are in."""
    points = sorted(membership_point(rollout, d) for d in devices)
    threshold = stage_ppm(percent)
    want = math.ceil(percent / 100 * len(points) - 1e-9)
    if 0 < want <= len(points):
        threshold = max(threshold, points[want - 1] + 1)
    return sum(p < threshold for p in points)


# --- telemetry ------------------------------------------------------------------------------
def telemetry_phase(rig: Rig, seconds: float) -> dict[str, Any]:
    """N devices, a sample a second for ``seconds``: 1 - stored / made. Everything the devices
    made (samples, and events) from their start to their clean stop counts; the coordinator is
    given until its store stops growing to take it in."""
    b, n = rig.b, rig.devices
    fleet = b.fleet("tel")
    service = b.coordinator(fleet, broker_url=rig.url, poll_interval=DEFAULT_POLL_INTERVAL)
    try:
        with SimulatedFleet(rig.config(fleet, telemetry_interval=1.0)) as sim:
            wait_online(rig, sim, n)
            b.progress(f"fleet: {n} devices sampling every second for {seconds:.0f} s")
            sim.poll(seconds)
            final = sim.stop()
        made = final.to_dict()["telemetry"]

        def stored() -> int:
            stats = service.telemetry
            return stats.samples_stored + stats.events_stored

        service.wait_until(lambda: stored() >= made["made"], 60)
        got, stats = stored(), service.telemetry
    finally:
        service.stop()
    loss = 1 - got / made["made"] if made["made"] else 1.0
    b.progress(f"fleet: telemetry: {made['made']} made, {got} stored")
    return {
        "seconds": seconds,
        "made": made["made"],
        "acked": made["acked"],
        "refused_by_client_queue": made["refused"],
        "stored": got,
        "duplicates": stats.duplicates,
        "dropped_by_store": stats.dropped,
        "loss": round(max(0.0, loss), 6),
    }


# --- 10,000 idle devices --------------------------------------------------------------------
def idle_phase(rig: Rig, devices: int, seconds: float) -> dict[str, Any]:
    b = rig.b
    fleet = b.fleet("idle")
    db = b.workdir / f"{fleet}.db"
    args = ["--broker", rig.url, "--db", str(db), "--keys", str(b.keydir), "--fleet", fleet]
    coordinator = CliProcess(
        ["coordinator", *args],
        log_path=b.dir("logs") / f"{fleet}-coordinator.log",
        log_level="WARNING",
        name="coordinator",
    ).start()
    try:
        with SimulatedFleet(rig.config(fleet, telemetry_interval=60.0, devices=devices)) as sim:
            online_s = wait_online(rig, sim, devices)
            sim.poll(5.0)  # the connects' aftermath: statuses and states recorded
            pids = {"coordinator": [coordinator.pid], "simulator": sim.pids}
            pids["broker"] = [rig.broker_pid]
            cpu0 = {k: cpu_s(v) for k, v in pids.items()}
            t0 = time.monotonic()
            b.progress(f"fleet: {devices} devices idle for {seconds:.0f} s")
            sim.poll(seconds)
            elapsed = time.monotonic() - t0
            cpu = {k: round(100 * (cpu_s(v) - cpu0[k]) / elapsed, 2) for k, v in pids.items()}
            rss = {k: rss_mb(v) for k, v in pids.items()}
            coordinator.check_alive()
            status = status_ms(db, fleet)
    finally:
        coordinator.stop()
    return {
        "devices": devices,
        "online_s": round(online_s, 1),
        "cpu_pct": cpu,
        "rss_mb": rss,
        "status_ms": status,
        "seconds": round(elapsed, 1),
    }
