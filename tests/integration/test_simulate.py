"""``modelcast simulate`` against a real Mosquitto and a real coordinator: 200 virtual devices on
two worker processes all verify a release and report it active, the coordinator publishes each
chunk about once (the broker fans it out), and their telemetry arrives. And a broker that
refuses connections stops the simulation with a message naming its limit."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from coordinator.telemetry_store import TelemetryStore
from testkit.cli_process import CliProcess
from testkit.local_broker import LocalBroker
from testkit.synthetic_models import make_model
from tests.support.env import Env

DEVICES = 200
CHUNK = 32 * 1024


def simulate(env: Env, *extra: str, devices: int = DEVICES, url: str | None = None) -> CliProcess:
    args = [
        "simulate",
        "--broker",
        url or env.broker.url,
        "--devices",
        str(devices),
        "--trust",
        str(env.keys.root_pub),
        "--fleet",
        env.fleet,
        "--processes",
        "2",
        "--quiet",
        *extra,
    ]
    log = env.tmp / "simulate.log"
    return CliProcess(args, log_path=log, log_level="WARNING", name="simulate").start()


def finish(sim: CliProcess, timeout: float) -> int:
    assert sim.proc is not None
    try:
        return sim.proc.wait(timeout)
    finally:
        sim.stop()


@pytest.mark.timeout(240)
def test_200_devices_verify_a_release_published_about_once(env: Env) -> None:
    model = env.tmp / "m.onnx"
    make_model(model, 256 * 1024)
    record = env.registry.add_release(
        model, name="m", version=1, keys=env.keys.release, fleet=env.fleet, chunk_size=CHUNK
    )
    coordinator = env.start_coordinator(poll_interval=0.05)
    assert coordinator.wait_connected(10)
    out = env.tmp / "simulate.json"
    sim = simulate(
        env,
        "--telemetry-interval",
        "1",
        "--until-active",
        "m@1",
        "--duration",
        "150",
        "--json",
        str(out),
    )
    env.watch.wait_online([f"sim-{i}" for i in range(DEVICES)], 90, [sim])
    env.registry.deploy("m", 1, fleet=env.fleet)
    assert finish(sim, 180) == 0, sim.log()[-3000:]

    summary = json.loads(out.read_text())
    assert summary["until_active"] == {"release": "m@1", "reached": True}
    assert summary["active"] == {"m@1": DEVICES}
    assert summary["verified"] == {"m@1": DEVICES}
    assert summary["failures"] == {} and summary["processes"] == 2
    assert summary["chunks"] >= DEVICES * record.n_chunks
    # fan-out: every device got every chunk, the coordinator published each about once
    assert coordinator.chunks_published <= 1.25 * record.n_chunks, coordinator.scheduler
    # telemetry: every device's samples and events reached the coordinator's store
    telemetry = summary["telemetry"]
    assert telemetry["made"] == telemetry["acked"] > 3 * DEVICES
    assert coordinator.wait_until(
        lambda: (
            coordinator.telemetry.samples_stored + coordinator.telemetry.events_stored
            >= telemetry["made"]
        ),
        30,
    ), coordinator.telemetry
    reader = TelemetryStore(env.tmp / "coord.db")
    try:
        assert len(reader.latest_metrics(env.fleet)) == DEVICES
        activated = reader.event_devices(env.fleet, "activated", "m", 1, since=0.0)
        assert len(activated) == DEVICES
    finally:
        reader.close()


@pytest.mark.timeout(120)
def test_a_broker_at_its_connection_limit_is_named(env: Env, tmp_path: Path) -> None:
    out = tmp_path / "refused.json"
    with LocalBroker(extra_conf="max_connections 5", workdir=tmp_path / "small") as small:
        sim = simulate(env, "--duration", "60", "--json", str(out), devices=10, url=small.url)
        assert finish(sim, 90) == 1
    log = sim.log()
    assert "could not connect" in log and "max_connections" in log, log[-2000:]
    assert "max_connections exceeded" in small.log_text()
    doc = json.loads(out.read_text())  # a script still gets the summary, and why it stopped
    assert "max_connections" in doc["error"] and doc["devices"] == 10
    assert doc["ever_online"] < 10


@pytest.mark.timeout(120)
def test_a_broker_list_moves_devices_past_a_dead_first_broker(env: Env) -> None:
    """``--broker URL1,URL2``: every device's first broker refuses, so each moves to the second
    (as every other client does, runtime.urls.parse_broker_list) and verifies the release."""
    with socket.socket() as probe:  # a loopback port with nothing listening on it
        probe.bind(("127.0.0.1", 0))
        dead = f"mqtt://127.0.0.1:{probe.getsockname()[1]}"
    model = env.tmp / "m.onnx"
    make_model(model, 64 * 1024)
    env.registry.add_release(
        model, name="m", version=1, keys=env.keys.release, fleet=env.fleet, chunk_size=CHUNK
    )
    env.registry.deploy("m", 1, fleet=env.fleet)
    coordinator = env.start_coordinator(poll_interval=0.05)
    assert coordinator.wait_connected(10)
    out = env.tmp / "listed.json"
    sim = simulate(
        env,
        "--until-active",
        "m@1",
        "--duration",
        "90",
        "--json",
        str(out),
        devices=20,
        url=f"{dead},{env.broker.url}",
    )
    assert finish(sim, 100) == 0, sim.log()[-3000:]
    summary = json.loads(out.read_text())
    assert summary["active"] == {"m@1": 20} and summary["ever_online"] == 20
