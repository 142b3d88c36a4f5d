"""Hostile or broken input reaching an edge: each message is refused with its reason, the edge
keeps running, and its active model is untouched.

Here the test itself plays the coordinator (it holds the release key), so it can publish exactly
the bad index, manifest or chunk it wants on the topics the edge subscribes to.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from protocol import (
    ChunkFrame,
    ChunkRequest,
    DeploymentIndex,
    DeviceEvent,
    Manifest,
    Target,
    Topics,
    UpdateState,
    hash_chunks,
)
from runtime.files import sha256_file
from runtime.urls import parse_broker_url
from testkit.edge_process import EdgeProcess
from testkit.fleet_watch import FleetWatch
from testkit.mqtt_recorder import TopicRecorder
from testkit.synthetic_models import make_model
from tests.support.brokers import Broker
from tests.support.fleet import Keys, make_keys

CHUNK = 64 * 1024


@dataclass
class Release:
    manifest: Manifest
    envelope: bytes
    id: bytes
    data: bytes


class ScriptedCoordinator:
    """Publishes whatever the test asks, signed with whichever keys the test picks."""

    def __init__(self, probe: TopicRecorder, keys: Keys, fleet: str) -> None:
        self.probe = probe
        self.keys = keys
        self.topics = Topics(fleet)
        self.fleet = fleet
        self.seq = 0

    def release(self, path: Path, name: str, version: int, keys: Keys | None = None) -> Release:
        data = path.read_bytes()
        whole, hashes, size = hash_chunks(data[i : i + CHUNK] for i in range(0, len(data), CHUNK))
        now = time.time()
        m = Manifest(self.fleet, name, version, size, whole, CHUNK, hashes, now, now + 3600)
        k = (keys or self.keys).release
        env = m.sign(k.key, k.cert)
        return Release(m, env, m.release_id, data)

    def index(self, targets: dict[str, Release], keys: Keys | None = None) -> bytes:
        self.seq += 1
        now = time.time()
        idx = DeploymentIndex(
            self.fleet,
            self.seq,
            now,
            now + 3600,
            {n: Target(r.manifest.version, r.id) for n, r in targets.items()},
        )
        k = (keys or self.keys).release
        return idx.sign(k.key, k.cert)

    def publish_index(self, payload: bytes) -> None:
        self.probe.publish(self.topics.index(), payload, retain=True)

    def publish_manifest(self, r: Release, payload: bytes | None = None) -> None:
        m = r.manifest
        self.probe.publish(
            self.topics.manifest(m.name, m.version),
            payload if payload is not None else r.envelope,
            retain=True,
        )

    def publish_chunk(self, r: Release, index: int, frame: bytes | None = None) -> None:
        m = r.manifest
        if frame is None:
            frame = ChunkFrame.encode(index, r.id, r.data[index * CHUNK : (index + 1) * CHUNK])
        self.probe.publish(self.topics.chunk_block(m.name, m.version, m.block_of(index)), frame)

    def serve_all(self, r: Release) -> None:
        for i in range(r.manifest.n_chunks):
            self.publish_chunk(r, i)


@dataclass
class Setup:
    coord: ScriptedCoordinator
    watch: FleetWatch
    edge: EdgeProcess
    v1: Release
    v1_path: Path
    tmp: Path
    keys: Keys

    def rejected(self, reason: str, topic_part: str) -> DeviceEvent:
        return self.watch.wait_event(
            "target",
            lambda e: (
                e.event == "rejected" and e.reason == reason and topic_part in (e.topic or "")
            ),
        )

    def assert_untouched(self) -> None:
        assert self.edge.alive, "the edge died"
        assert sha256_file(self.edge.model_path("m", 1)) == hashlib.sha256(self.v1.data).digest()
        last = list(self.watch.states("target"))[-1]
        assert last.active == {"m": 1}


@pytest.fixture
def setup(tmp_path: Path, broker: Broker, mqtt_fleet: str) -> Iterator[Setup]:
    keys = make_keys(tmp_path / "keys")
    host, port = parse_broker_url(broker.url)
    topics = Topics(mqtt_fleet)
    with (
        TopicRecorder(host, port, [topics.request("target")]) as probe,
        FleetWatch(broker.url, mqtt_fleet) as watch,
    ):
        coord = ScriptedCoordinator(probe, keys, mqtt_fleet)
        v1_path = make_model(tmp_path / "v1.onnx", 200_000, seed=1)
        v1 = coord.release(v1_path, "m", 1)
        coord.publish_manifest(v1)
        coord.publish_index(coord.index({"m": v1}))
        edge = EdgeProcess(
            "target",
            broker_url=broker.url,
            data=tmp_path / "target",
            trust=keys.root_pub,
            fleet=mqtt_fleet,
            log_dir=tmp_path,
        ).start()
        try:
            probe.wait_for(lambda m: m.topic == topics.request("target"))
            coord.serve_all(v1)
            watch.wait_active("target", "m", 1)
            probe.clear()
            yield Setup(coord, watch, edge, v1, v1_path, tmp_path, keys)
        finally:
            edge.stop()
            print(edge.log()[-4000:])
            for topic in (
                topics.index(),
                topics.manifest("m", 1),
                topics.manifest("m", 2),
                topics.manifest("m", 0),
            ):
                probe.publish(topic, b"", retain=True)  # clear retained leftovers


def test_index_signed_by_an_unknown_key_is_refused(setup: Setup) -> None:
    stranger = make_keys(setup.tmp / "stranger")
    v2 = setup.coord.release(
        make_model(setup.tmp / "v2.onnx", 200_000, seed=2), "m", 2, keys=stranger
    )
    setup.coord.publish_manifest(v2)
    setup.coord.publish_index(setup.coord.index({"m": v2}, keys=stranger))
    event = setup.rejected("untrusted-key", "releases/index")
    assert "root" in (event.detail or "")
    setup.watch.wait_state(
        "target", lambda s: s.state is UpdateState.REJECTED and "untrusted-key" in (s.reason or "")
    )
    setup.assert_untouched()


def test_index_for_an_older_version_is_refused(setup: Setup) -> None:
    v0 = setup.coord.release(make_model(setup.tmp / "v0.onnx", 200_000, seed=0), "m", 0)
    setup.coord.publish_manifest(v0)
    setup.coord.publish_index(setup.coord.index({"m": v0}))
    setup.rejected("stale", "releases/index")
    setup.assert_untouched()


def test_garbage_on_every_subscribed_topic_is_refused(setup: Setup) -> None:
    c = setup.coord
    c.publish_index(b"\x00garbage")
    setup.rejected("malformed", "releases/index")
    c.publish_index(b"\x91" * 100_000 + b"\xc0")  # deeply nested msgpack
    # a real index for m@2 whose manifest has not arrived yet: the edge subscribes to it
    v2 = c.release(make_model(setup.tmp / "v2.onnx", 200_000, seed=2), "m", 2)
    c.publish_index(c.index({"m": v2}))
    c.publish_manifest(v2, payload=b"\xde\xad\xbe\xef")
    setup.rejected("malformed", "releases/m/2")
    other = c.release(make_model(setup.tmp / "v2b.onnx", 200_000, seed=9), "m", 2)
    c.publish_manifest(v2, payload=other.envelope)  # validly signed, but not what the index names
    setup.rejected("mismatch", "releases/m/2")
    setup.assert_untouched()

    # now the right manifest: the edge starts downloading and asks for chunks
    c.publish_manifest(v2)
    c.probe.wait_for(
        lambda m: (
            m.topic == c.topics.request("target") and ChunkRequest.decode(m.payload).version == 2
        )
    )
    tampered = bytearray(ChunkFrame.encode(0, v2.id, v2.data[:CHUNK]))
    tampered[-1] ^= 0xFF
    c.publish_chunk(v2, 0, bytes(tampered))
    setup.rejected("hash-mismatch", "chunks/m/2/0")
    c.publish_chunk(v2, 0, ChunkFrame.encode(0, other.id, other.data[:CHUNK]))
    setup.rejected("wrong-release", "chunks/m/2/0")
    c.publish_chunk(v2, 0, ChunkFrame.encode(999, v2.id, v2.data[:CHUNK]))
    setup.rejected("index-out-of-range", "chunks/m/2/0")
    c.publish_chunk(v2, 0, b"MCCH-not-a-frame")
    setup.rejected("malformed", "chunks/m/2/0")
    setup.assert_untouched()

    # and the agent still works: the genuine chunks make m@2 active, byte for byte
    c.serve_all(v2)
    setup.watch.wait_active("target", "m", 2)
    assert sha256_file(setup.edge.model_path("m", 2)) == hashlib.sha256(v2.data).digest()


def test_a_model_that_fails_to_load_is_not_activated(setup: Setup) -> None:
    bad = setup.tmp / "bad.onnx"
    bad.write_bytes(b"this is not an onnx model" * 5000)
    v2 = setup.coord.release(bad, "m", 2)
    setup.coord.publish_manifest(v2)
    setup.coord.publish_index(setup.coord.index({"m": v2}))
    setup.coord.probe.wait_for(lambda m: m.topic == setup.coord.topics.request("target"))
    setup.coord.serve_all(v2)
    state = setup.watch.wait_state("target", lambda s: s.state is UpdateState.FAILED)
    assert state.reason is not None and state.reason.startswith("load-failed")
    setup.assert_untouched()


def test_a_late_resend_of_a_finished_release_is_not_reported_as_an_attack(setup: Setup) -> None:
    """The resend topic serves every release: a chunk of the release the edge finished, still
    queued for it when it moved on to the next, is dropped quietly; a frame of a release it
    never had is still refused as from another release."""
    s = setup
    t = s.coord.topics
    v2 = s.coord.release(make_model(s.tmp / "v2.onnx", 200_000, seed=2), "m", 2)
    s.coord.publish_manifest(v2)
    s.coord.publish_index(s.coord.index({"m": v2}))
    s.watch.wait_state("target", lambda st: st.state is UpdateState.DOWNLOADING and st.version == 2)
    late = ChunkFrame.encode(0, s.v1.id, s.v1.data[:CHUNK])
    s.coord.probe.publish(t.resend("target"), late)
    foreign = s.coord.release(make_model(s.tmp / "x.onnx", 50_000, seed=3), "m", 7)
    stray = ChunkFrame.encode(0, foreign.id, foreign.data[:CHUNK])
    s.coord.probe.publish(t.resend("target"), stray)
    refused = s.rejected("wrong-release", "resends")
    assert foreign.id[:16].hex() in (refused.detail or "")
    # messages of one publisher arrive in order: the late v1 chunk came first, unreported
    reported = [e for e in s.watch.events("target") if e.event == "rejected"]
    assert all(s.v1.id[:16].hex() not in (e.detail or "") for e in reported), reported
    s.assert_untouched()
