"""Updates by delta, end to end: a real Mosquitto, the real coordinator, edges as processes.

m@1 then m@2 with only its last layer (the bias) changed: an edge holding m@1 gets m@2 as a
delta (the bytes published are the delta's, not the model's), a fresh edge gets the release
whole, and each bad input (a base that no longer verifies, a delta that makes the wrong file, a
delta from a base the edge does not hold) falls back to the full release with its reason.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from coordinator import delta_build
from protocol import DeviceEvent, DeviceState, UpdateState
from runtime.files import sha256_file
from runtime.urls import parse_broker_url
from testkit.edge_process import EdgeProcess
from testkit.faultproxy import FaultProxy
from testkit.synthetic_models import make_model, perturb_model
from tests.support.env import Env
from tests.support.fleet import release_and_deploy

MB = 1 << 20
CHUNK = 64 * 1024


def two_versions(env: Env, *, seed: int = 1) -> tuple[Path, Path]:
    v1 = make_model(env.tmp / "m1.onnx", 4 * MB, seed=seed)
    v2 = perturb_model(v1, env.tmp / "m2.onnx", tensors={"b"}, noise=1e-2, seed=seed + 1)
    return v1, v2


def first_install(env: Env, v1: Path, devices: list[str]) -> list[EdgeProcess]:
    edges = [env.edge(d) for d in devices]
    env.start_coordinator()
    release_and_deploy(env.registry, env.keys, v1, "m", 1, env.fleet, chunk_size=CHUNK)
    for e in edges:
        env.watch.wait_active(e.device, "m", 1)
    return edges


def downloading(version: int) -> Callable[[DeviceState], bool]:
    return lambda s: s.state is UpdateState.DOWNLOADING and s.version == version


def active(version: int) -> Callable[[DeviceState], bool]:
    return lambda s: s.state is UpdateState.ACTIVE and s.active.get("m") == version


def events(env: Env, device: str, name: str) -> list[DeviceEvent]:
    return [e for e in env.watch.events(device) if e.event == name and e.version == 2]


def test_an_edge_holding_the_base_gets_the_delta_and_a_fresh_edge_the_release(
    env: Env,
) -> None:
    v1, v2 = two_versions(env)
    (old,) = first_install(env, v1, ["old"])
    coordinator = env.coordinator
    assert coordinator is not None
    before, chunks_before = coordinator.bytes_published, coordinator.chunks_published

    release_and_deploy(env.registry, env.keys, v2, "m", 2, env.fleet, chunk_size=CHUNK)
    record = env.registry.release(env.fleet, "m", 2)
    assert record is not None
    (ref,) = [d for d in record.signed.deltas if d.base_version == 1]
    env.watch.wait_active(old.device, "m", 2)
    fresh = env.edge("fresh")  # joins once m@2 is the target: nothing to apply a delta to
    env.watch.wait_active(fresh.device, "m", 2)

    for e in (old, fresh):
        assert sha256_file(e.model_path("m", 2)) == sha256_file(v2)
    applied = env.watch.wait_event(old.device, lambda e: e.event == "delta-applied")
    assert applied.detail is not None and "(delta from m@1)" in applied.detail
    assert not events(env, fresh.device, "delta-applied")
    assert not events(env, old.device, "delta-fallback")
    # the delta once and the release once: neither twice (by chunks: the release's travel
    # compressed, so fewer bytes than its size), and the delta far smaller
    published = coordinator.chunks_published - chunks_before
    assert record.n_chunks + ref.n_chunks <= published <= record.n_chunks + ref.n_chunks + 2
    sent = coordinator.bytes_published - before
    assert ref.size < 0.05 * record.size
    assert ref.size < sent < record.size + 3 * ref.size + 64 * 1024, (sent, ref.size)


def corrupt_middle(path: Path) -> None:
    with path.open("r+b") as f:
        f.seek(path.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))


def fell_back(env: Env, edge: EdgeProcess, v2: Path, reason: str, version: int = 2) -> None:
    env.watch.wait_active(edge.device, "m", version)
    assert sha256_file(edge.model_path("m", version)) == sha256_file(v2)
    fallback = env.watch.wait_event(edge.device, lambda e: e.event == "delta-fallback")
    assert (fallback.reason, fallback.version) == (reason, version), fallback
    assert not [e for e in env.watch.events(edge.device) if e.event == "delta-applied"]


def test_a_base_that_no_longer_verifies_falls_back_to_the_release(env: Env) -> None:
    v1, v2 = two_versions(env, seed=3)
    (edge,) = first_install(env, v1, ["rotting"])
    corrupt_middle(edge.model_path("m", 1))  # bit rot on the device's disk, not noticed yet
    release_and_deploy(env.registry, env.keys, v2, "m", 2, env.fleet, chunk_size=CHUNK)
    fell_back(env, edge, v2, "delta-base-corrupt")


def test_a_delta_that_makes_the_wrong_file_falls_back_to_the_release(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    v1, v2 = two_versions(env, seed=5)
    v3 = perturb_model(v2, env.tmp / "m3.onnx", tensors={"b"}, noise=1e-2, seed=9)
    (edge,) = first_install(env, v1, ["tricked"])
    # A coordinator whose delta for m@2 makes v3's bytes (and that does not check it): the
    # chunks verify, the delta applies, and the file is not the release.
    encode = delta_build.encode_delta
    monkeypatch.setattr(delta_build, "encode_delta", lambda base, _t: encode(base, v3.read_bytes()))
    monkeypatch.setattr(delta_build, "_check_applies", lambda *a: None)
    release_and_deploy(env.registry, env.keys, v2, "m", 2, env.fleet, chunk_size=CHUNK)
    fell_back(env, edge, v2, "delta-result-mismatch")


def test_a_delta_from_a_base_the_edge_does_not_hold_falls_back(env: Env) -> None:
    v1, v2 = two_versions(env, seed=7)
    v3 = perturb_model(v2, env.tmp / "m3.onnx", tensors={"b"}, noise=1e-2, seed=11)
    (edge,) = first_install(env, v1, ["stranger"])
    # m@2 is released but never deployed; m@3 offers a delta from m@2 only
    env.registry.add_release(v2, name="m", version=2, keys=env.keys.release, fleet=env.fleet)
    env.registry.add_release(
        v3, name="m", version=3, keys=env.keys.release, fleet=env.fleet, delta_bases=1
    )
    env.registry.deploy("m", 3, fleet=env.fleet)
    fell_back(env, edge, v3, "delta-base-unknown", version=3)


def test_a_delta_the_coordinator_cannot_serve_is_given_up_for_the_release(env: Env) -> None:
    v1, v2 = two_versions(env, seed=13)
    edge = env.edge("patient", extra=("--stall-timeout", "0.5"))
    env.start_coordinator()
    release_and_deploy(env.registry, env.keys, v1, "m", 1, env.fleet, chunk_size=CHUNK)
    env.watch.wait_active(edge.device, "m", 1)
    env.registry.add_release(
        v2, name="m", version=2, keys=env.keys.release, fleet=env.fleet, chunk_size=CHUNK
    )
    record = env.registry.release(env.fleet, "m", 2)
    assert record is not None
    for stream in record.delta_streams():  # its blob lost: no chunk of the delta ever comes
        Path(stream.blob_path).unlink()
    env.registry.deploy("m", 2, fleet=env.fleet)
    fell_back(env, edge, v2, "delta-stalled")


def test_a_mixed_fleet_gets_the_delta_and_the_release_at_once_each_sent_once(env: Env) -> None:
    v1 = make_model(env.tmp / "m1.onnx", 4 * MB, seed=17)
    v2 = perturb_model(v1, env.tmp / "m2.onnx", noise=1e-3, seed=18)  # every weight moved
    host, port = parse_broker_url(env.broker.url)
    with FaultProxy(host, port, rate_bytes_per_s=512 * 1024) as slow:
        old = env.edge("old", broker_url=slow.url)  # its delta takes seconds
        env.start_coordinator()
        release_and_deploy(env.registry, env.keys, v1, "m", 1, env.fleet, chunk_size=CHUNK)
        env.watch.wait_active(old.device, "m", 1)
        coordinator = env.coordinator
        assert coordinator is not None
        before, chunks_before = coordinator.bytes_published, coordinator.chunks_published
        release_and_deploy(env.registry, env.keys, v2, "m", 2, env.fleet, chunk_size=CHUNK)
        env.watch.wait_state(old.device, lambda s: downloading(2)(s) and s.chunks_held > 0)
        fresh = env.edge("fresh")  # joins while the old edge is on its delta
        started = {
            e.device: env.watch.wait_state_received(e.device, downloading(2)).at
            for e in (old, fresh)
        }
        done = {
            e.device: env.watch.wait_state_received(e.device, active(2), 120).at
            for e in (old, fresh)
        }
        assert started["fresh"] < done["old"]  # both at once
        for e in (old, fresh):
            assert sha256_file(e.model_path("m", 2)) == sha256_file(v2)
        # events travel after the state (by the outbox): awaited while the link is up
        env.watch.wait_event(old.device, lambda e: e.event == "delta-applied" and e.version == 2)
    record = env.registry.release(env.fleet, "m", 2)
    assert record is not None
    (ref,) = record.signed.deltas
    assert 0.3 * record.size < ref.size < 0.9 * record.size
    sent = coordinator.bytes_published - before
    published = coordinator.chunks_published - chunks_before
    # the release once for the fresh edge, the delta once for the old one, nothing twice (by
    # chunks: the release's travel compressed, so in fewer bytes than its size)
    once = record.n_chunks + ref.n_chunks
    assert once <= published < 1.1 * once, (published, once)
    assert ref.size < sent < 1.1 * (record.size + ref.size), (sent, ref.size)
    assert not events(env, fresh.device, "delta-applied")


def test_a_delta_killed_mid_download_resumes_from_its_chunks_on_disk(env: Env) -> None:
    v1 = make_model(env.tmp / "m1.onnx", 4 * MB, seed=19)
    v2 = perturb_model(v1, env.tmp / "m2.onnx", noise=1e-3, seed=20)
    host, port = parse_broker_url(env.broker.url)
    with FaultProxy(host, port, rate_bytes_per_s=256 * 1024) as slow:
        edge = env.edge("killed", broker_url=slow.url)
        env.start_coordinator()
        release_and_deploy(env.registry, env.keys, v1, "m", 1, env.fleet, chunk_size=CHUNK)
        env.watch.wait_active(edge.device, "m", 1, timeout=120)
        release_and_deploy(env.registry, env.keys, v2, "m", 2, env.fleet, chunk_size=CHUNK)
        env.watch.wait_state(edge.device, lambda s: downloading(2)(s) and s.chunks_held >= 4)
        edge.kill()
        edge.start()
        env.watch.wait_active(edge.device, "m", 2, timeout=120)
        # events travel after the state (by the outbox): awaited while the link is up
        resumed = env.watch.wait_event(edge.device, lambda e: e.event == "resumed")
        env.watch.wait_event(edge.device, lambda e: e.event == "delta-applied" and e.version == 2)
    assert sha256_file(edge.model_path("m", 2)) == sha256_file(v2)
    assert resumed.detail is not None and int(resumed.detail.split("/")[0]) >= 4
    assert not events(env, edge.device, "delta-fallback")
