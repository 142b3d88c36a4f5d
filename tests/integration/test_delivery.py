"""Delivery end to end: a real Mosquitto, the real coordinator, edges as real processes."""

from __future__ import annotations

import threading

import pytest

from edge_node.storage import PartialDownload, release_dir
from protocol import ChunkRequest, Manifest, UpdateState
from runtime.files import sha256_file
from runtime.urls import parse_broker_url
from testkit.faultproxy import FaultProxy
from testkit.mqtt_recorder import TopicRecorder
from testkit.synthetic_models import make_model
from tests.support.env import Env
from tests.support.fleet import release_and_deploy

MB = 1 << 20


@pytest.mark.portable
def test_three_edges_and_a_late_joiner_activate_the_exact_bytes(env: Env) -> None:
    model = make_model(env.tmp / "m1.onnx", 12 * MB, seed=1)
    edges = [env.edge(f"edge-{i}") for i in range(3)]
    for e in edges:
        env.wait_online(e.device)
    env.start_coordinator()
    release_and_deploy(env.registry, env.keys, model, "m", 1, env.fleet)

    for e in edges:
        env.watch.wait_active(e.device, "m", 1)
    for e in edges:
        assert sha256_file(e.model_path("m", 1)) == sha256_file(model)
    record = env.registry.release(env.fleet, "m", 1)
    assert record is not None
    coordinator = env.coordinator
    assert coordinator is not None
    first_wave = coordinator.chunks_published
    # one broker fan-out, not one copy per device (3 devices would be 3x)
    assert record.n_chunks <= first_wave <= 1.5 * record.n_chunks, first_wave

    late = env.edge("late-joiner")
    env.watch.wait_active(late.device, "m", 1)
    assert sha256_file(late.model_path("m", 1)) == sha256_file(model)
    assert all(e.alive for e in env.edges)


@pytest.mark.portable
def test_edge_killed_mid_transfer_resumes_without_refetching(env: Env) -> None:
    model = make_model(env.tmp / "m1.onnx", 12 * MB, seed=2)
    release_and_deploy(env.registry, env.keys, model, "m", 1, env.fleet)
    record = env.registry.release(env.fleet, "m", 1)
    assert record is not None
    manifest = Manifest.decode(_manifest_body(record.manifest))
    host, port = parse_broker_url(env.broker.url)
    requests: list[ChunkRequest] = []
    with (
        FaultProxy(host, port, rate_bytes_per_s=2 * MB) as proxy,
        TopicRecorder(host, port, [env.watch.topics.request("victim")]) as req_probe,
    ):
        env.start_coordinator()
        victim = env.edge("victim", broker_url=proxy.url)
        n = manifest.n_chunks
        env.watch.wait_state("victim", lambda s: s.chunks_held >= n // 4, timeout=60)
        victim.kill()

        # What the edge had verified on disk when it died: exactly what it must not fetch again.
        part = PartialDownload(release_dir(victim.data, "m", 1), manifest, record.manifest)
        held = set(part.recover())
        part.close()
        assert 0 < len(held) < n
        req_probe.clear()

        victim.start()
        final = env.watch.wait_active("victim", "m", 1, timeout=120)
        requests = [ChunkRequest.decode(m.payload) for m in req_probe.messages]

    assert sha256_file(victim.model_path("m", 1)) == sha256_file(model)
    asked = {i for r in requests for i in r.indices()}
    assert asked, "the restarted edge asked for nothing"
    assert not asked & held, f"refetched verified chunks {sorted(asked & held)[:10]}"
    resumed = [e for e in env.watch.events("victim") if e.event == "resumed"]
    assert resumed and resumed[-1].detail == f"{len(held)}/{n} chunks on disk"
    # every new chunk it kept after the restart is one it lacked
    assert final.received - final.duplicates == n - len(held)


def _manifest_body(envelope: bytes) -> bytes:
    from protocol.envelope import Envelope

    return Envelope.decode(envelope, 1 << 20).body


def test_status_reports_devices_as_the_cli_shows_them(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    from modelcast.cli import main

    model = make_model(env.tmp / "m1.onnx", 300_000, seed=3)
    env.start_coordinator()
    release_and_deploy(env.registry, env.keys, model, "m", 1, env.fleet)
    env.edge("solo")
    env.watch.wait_active("solo", "m", 1)
    done = threading.Event()

    def cli_sees_active() -> bool:
        capsys.readouterr()
        assert (
            main(["status", "--db", str(env.tmp / "coord.db"), "--fleet", env.fleet, "--json"]) == 0
        )
        import json

        status = json.loads(capsys.readouterr().out)
        devices = {d["device_id"]: d for d in status["devices"]}
        return (
            "solo" in devices
            and devices["solo"]["active"] == {"m": 1}
            and devices["solo"]["state"] == UpdateState.ACTIVE.value
            and devices["solo"]["online"]
        )

    for _ in range(100):  # the coordinator writes device states in batches; poll the CLI
        if cli_sees_active():
            done.set()
            break
        done.wait(0.1)
    assert done.is_set(), "modelcast status --json never showed solo active with m@1"
