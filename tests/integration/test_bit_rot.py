"""Bit rot on a real edge's disk: the edge is stopped, 8 bytes of its active model file are
flipped (in two places), and it is started again. It finds the file corrupt before serving it,
reports it, serves the previous version meanwhile (or answers 503 when that one is corrupt
too), fetches again only the chunks whose hashes no longer match, and reactivates the release.

The coordinator is stopped while the edge restarts, so what the edge does before the repair
can be watched: its requests wait for the coordinator to come back (the index and manifest
stay retained at the broker)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol import ChunkRequest, DeviceEvent, Manifest
from protocol.envelope import Envelope
from runtime.files import sha256_file
from testkit.edge_process import EdgeProcess
from testkit.synthetic_models import make_model
from tests.support.disk import flip
from tests.support.env import Env
from tests.support.fleet import release_and_deploy
from tests.support.local_http import http_port, post

MB = 1 << 20
CHUNK = 64 * 1024
INPUTS = 16
DEVICE = "rotting"


@dataclass
class Fleet:
    edge: EdgeProcess
    models: dict[int, Path]
    manifest: Manifest  # of m@2, the active release

    def active_file(self, version: int) -> Path:
        return self.edge.model_path("m", version)


def two_versions_active(env: Env) -> Fleet:
    """m@2 active on the edge, m@1 kept as its previous version."""
    models = {v: make_model(env.tmp / f"v{v}.onnx", 2 * MB, seed=v, inputs=INPUTS) for v in (1, 2)}
    env.start_coordinator()
    release_and_deploy(env.registry, env.keys, models[1], "m", 1, env.fleet, chunk_size=CHUNK)
    edge = env.edge(DEVICE, extra=("--stall-timeout", "2"))  # asks the coordinator back soon
    env.watch.wait_active(DEVICE, "m", 1)
    release_and_deploy(env.registry, env.keys, models[2], "m", 2, env.fleet, chunk_size=CHUNK)
    env.watch.wait_active(DEVICE, "m", 2)
    record = env.registry.release(env.fleet, "m", 2)
    assert record is not None
    manifest = Manifest.decode(Envelope.decode(record.manifest, 1 << 20).body)
    return Fleet(edge, models, manifest)


def damaged_chunks(path: Path, m: Manifest) -> set[int]:
    data = path.read_bytes()
    return {
        i
        for i in range(m.n_chunks)
        if hashlib.sha256(data[i * m.chunk_size : i * m.chunk_size + m.chunk_length(i)]).digest()
        != m.chunk_hash(i)
    }


@dataclass(frozen=True)
class Rotten:
    boots: set[str]  # the agent starts before it
    damaged: set[int]  # the chunks of m@2 that no longer match their hashes
    seen: int  # messages recorded before it


def stop_and_rot(env: Env, fleet: Fleet, *, previous_too: bool) -> Rotten:
    """Stop the edge and the coordinator, flip 8 bytes in two chunks of m@2's file (and of
    m@1's with ``previous_too``)."""
    fleet.edge.stop()
    assert env.coordinator is not None
    env.coordinator.stop()
    boots = {s.boot for s in env.watch.states(DEVICE)}
    seen = len(env.watch.recorder.messages)
    n = fleet.manifest.n_chunks
    for offset in (5 * CHUNK + 1000, (n - 7) * CHUNK + 5):
        flip(fleet.active_file(2), offset)
    if previous_too:
        flip(fleet.active_file(1), 3 * CHUNK)
    damaged = damaged_chunks(fleet.active_file(2), fleet.manifest)
    assert damaged == {5, n - 7}, damaged
    return Rotten(boots, damaged, seen)


def corrupt_event(env: Env, rot: Rotten) -> DeviceEvent:
    return env.watch.wait_event(
        DEVICE, lambda e: e.event == "model-corrupt" and e.boot not in rot.boots, timeout=60
    )


def requests_since(env: Env, rot: Rotten) -> list[ChunkRequest]:
    """The chunk requests the edge sent since it was stopped (the recorder keeps them)."""
    topic = env.watch.topics.request(DEVICE)
    later = env.watch.recorder.messages[rot.seen :]
    return [ChunkRequest.decode(m.payload) for m in later if m.topic == topic]


def infer(port: int) -> tuple[int, dict[str, Any]]:
    return post(port, "m", {"inputs": {"x": [[0.5] * INPUTS]}})


def repaired(env: Env, fleet: Fleet, rot: Rotten, port: int) -> None:
    """The coordinator comes back: only the damaged chunks are fetched, m@2 is reactivated
    through its checks, and inference answers on it again."""
    env.start_coordinator()
    env.watch.wait_event(
        DEVICE, lambda e: e.event == "model-repaired" and e.boot not in rot.boots, timeout=60
    )
    env.watch.wait_active(DEVICE, "m", 2)
    requests = requests_since(env, rot)
    assert requests and all(r.version == 2 for r in requests), requests
    asked = {i for r in requests for i in r.indices()}
    assert asked == rot.damaged, f"asked for {sorted(asked)}, damaged {sorted(rot.damaged)}"
    assert sha256_file(fleet.active_file(2)) == sha256_file(fleet.models[2])
    code, answer = infer(port)
    assert (code, answer.get("version")) == (200, 2), answer


def test_a_corrupt_active_file_is_reported_served_from_the_previous_version_and_repaired(
    env: Env,
) -> None:
    fleet = two_versions_active(env)
    signed = sha256_file(fleet.models[2]).hex()
    rot = stop_and_rot(env, fleet, previous_too=False)
    rotten = sha256_file(fleet.active_file(2)).hex()

    fleet.edge.start()
    event = corrupt_event(env, rot)
    assert (event.model, event.version, event.reason) == ("m", 2, "digest-mismatch")
    assert event.detail == (
        f"{fleet.active_file(2)}: sha256 {rotten}, signed sha256 {signed}; "
        "serving m@1 until it is repaired"
    )
    assert f"m@2 is corrupt: {fleet.active_file(2)}" in fleet.edge.log()
    port = http_port(env.watch, DEVICE, not_boots=rot.boots)
    code, answer = infer(port)
    assert (code, answer.get("version")) == (200, 1), answer  # the previous version, verified
    # the repair is under way (waiting for the coordinator), asking for the damaged chunks
    env.watch.recorder.wait_for(lambda m: bool(requests_since(env, rot)), timeout=30)
    assert set(requests_since(env, rot)[0].indices()) == rot.damaged
    repaired(env, fleet, rot, port)


def test_with_the_previous_version_corrupt_too_inference_answers_503_until_the_repair(
    env: Env,
) -> None:
    fleet = two_versions_active(env)
    rot = stop_and_rot(env, fleet, previous_too=True)

    fleet.edge.start()
    event = corrupt_event(env, rot)
    assert (event.detail or "").endswith(
        "its previous version m@1 is corrupt too: no inference until it is repaired"
    )
    port = http_port(env.watch, DEVICE, not_boots=rot.boots)
    code, answer = infer(port)
    assert code == 503, answer
    assert answer["error"].startswith(
        "m@2: its file on this device is corrupt (sha256 mismatch) and is being repaired"
    )
    repaired(env, fleet, rot, port)
    assert sha256_file(fleet.active_file(1)) != sha256_file(fleet.models[1])  # left as found
