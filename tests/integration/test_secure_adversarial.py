"""The edge's defences through the production broker profile (``modelcast broker --secure``):
TLS, passwords and the ACL all in place, and an attacker who holds a leaked *coordinator*
credential, so the broker lets it publish everything a coordinator may (the "compromised broker
or coordinator channel" case). Everything it forges, swaps, tampers with or replays is refused by
the edge, which keeps its active model and still takes the genuine release.

The genuine coordinator is played by the test (it holds the keys), on its own credential."""

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
    Command,
    DeviceEvent,
    Revocations,
    SigningKey,
    Topics,
    encode_chain,
    rotate_root,
)
from runtime.files import sha256_file
from testkit.edge_process import EdgeProcess
from testkit.fleet_watch import FleetWatch
from testkit.synthetic_models import make_model
from tests.integration.test_rejections import CHUNK, Release, ScriptedCoordinator
from tests.support.fleet import Keys, make_keys
from tests.support.secure_broker import SecureBroker, SecureRecorder, needs_mosquitto, secure_broker

FLEET = "adv"
T = Topics(FLEET)
DEVICE = "dev"
IDENTITIES = [
    ("coordinator", "coord", FLEET),  # the genuine coordinator (the test)
    ("coordinator", "leaked", FLEET),  # the attacker: a leaked coordinator credential
    ("coordinator", "watch", FLEET),  # the referee
    ("device", DEVICE, FLEET),
]

pytestmark = needs_mosquitto()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    with secure_broker(tmp_path_factory.mktemp("secure-adversarial"), IDENTITIES) as running:
        try:
            yield running
        finally:
            print("----- broker log (tail) -----\n" + running.log_text()[-3000:])


@dataclass
class World:
    coord: ScriptedCoordinator
    attacker: SecureRecorder
    watch: FleetWatch
    edge: EdgeProcess
    keys: Keys
    v1: Release
    v1_index: bytes
    tmp: Path

    def rejected(self, reason: str, topic: str) -> DeviceEvent:
        return self.watch.wait_event(
            DEVICE,
            lambda e: e.event == "rejected" and e.reason == reason and e.topic == topic,
        )

    def assert_active(self, r: Release) -> None:
        assert self.edge.alive, "the edge died"
        version = r.manifest.version
        path = self.edge.model_path("m", version)
        assert sha256_file(path) == hashlib.sha256(r.data).digest()
        assert list(self.watch.states(DEVICE))[-1].active == {"m": version}


@pytest.fixture
def world(broker: SecureBroker, tmp_path: Path) -> Iterator[World]:
    keys = make_keys(tmp_path / "keys")
    watch = FleetWatch(broker.recorder("watch", [f"{T.base}/devices/#"], timeout=60), FLEET)
    edge = EdgeProcess(
        DEVICE,
        broker_url=broker.url,
        data=tmp_path / DEVICE,
        trust=keys.root_pub,
        fleet=FLEET,
        log_dir=tmp_path,
        extra=("--creds", str(broker.creds_path(DEVICE))),
    )
    with (
        broker.recorder("coord", [T.request(DEVICE)]) as genuine,
        broker.recorder("leaked") as attacker,
        watch,
    ):
        coord = ScriptedCoordinator(genuine, keys, FLEET)
        v1 = coord.release(make_model(tmp_path / "v1.onnx", 200_000, seed=1), "m", 1)
        coord.publish_manifest(v1)
        v1_index = coord.index({"m": v1})
        coord.publish_index(v1_index)
        edge.start()
        try:
            watch.wait_online([DEVICE], 30, [edge])
            genuine.wait_for(lambda m: m.topic == T.request(DEVICE), timeout=60)
            coord.serve_all(v1)
            watch.wait_active(DEVICE, "m", 1)
            genuine.clear()
            yield World(coord, attacker, watch, edge, keys, v1, v1_index, tmp_path)
        finally:
            edge.stop()
            print(f"----- edge log (tail) -----\n{edge.log()[-4000:]}")
            for topic in (T.index(), T.manifest("m", 1), T.manifest("m", 2), T.root_chain()):
                genuine.publish(topic, b"", retain=True)
            genuine.publish(T.revocations(), b"", retain=True)
    assert "over TLS" in edge.log()


def test_a_leaked_coordinator_credential_cannot_make_the_edge_run_anything(world: World) -> None:
    w = world
    a, c = w.attacker, w.coord
    now = time.time()
    stranger = make_keys(w.tmp / "stranger")
    thief = ScriptedCoordinator(a, stranger, FLEET)
    thief.seq = 1_000_000

    # forged trust: a root rotation, a revocation list (of the genuine key), a command
    forged_root = SigningKey.generate()
    chain = encode_chain([rotate_root(forged_root, SigningKey.generate(), version=2, issued=now)])
    a.publish(T.root_chain(), chain, retain=True)
    w.rejected("bad-signature", T.root_chain())
    genuine_id = w.keys.release.key.verify_key.key_id
    revocations = Revocations(1, frozenset({genuine_id}), now, now + 600)
    a.publish(T.revocations(), revocations.sign(forged_root), retain=True)
    w.rejected("untrusted-key", T.revocations())
    command = Command(FLEET, DEVICE, 1, now, now + 600, "rollback", {"model": "m", "version": 0})
    a.publish(T.commands(DEVICE), command.sign(stranger.release.key, stranger.release.cert))
    w.rejected("untrusted-key", T.commands(DEVICE))

    # a forged release: index and manifest signed by a key the root never certified
    evil = thief.release(make_model(w.tmp / "evil.onnx", 200_000, seed=66), "m", 2)
    thief.publish_manifest(evil)
    thief.publish_index(thief.index({"m": evil}))
    w.rejected("untrusted-key", T.index())

    # the genuine index for m@2, and a swapped manifest in the retained slot it names
    v2 = c.release(make_model(w.tmp / "v2.onnx", 200_000, seed=2), "m", 2)
    c.publish_index(c.index({"m": v2}))
    other = c.release(make_model(w.tmp / "v2b.onnx", 200_000, seed=9), "m", 2)
    a.publish(T.manifest("m", 2), other.envelope, retain=True)  # validly signed, another release
    w.rejected("mismatch", T.manifest("m", 2))
    a.publish(T.manifest("m", 2), evil.envelope, retain=True)
    w.rejected("untrusted-key", T.manifest("m", 2))
    w.assert_active(w.v1)

    # the genuine manifest: the edge downloads; the attacker injects bad chunks
    c.publish_manifest(v2)
    c.probe.wait_for(
        lambda m: m.topic == T.request(DEVICE) and ChunkRequest.decode(m.payload).version == 2,
        timeout=60,
    )
    block0 = T.chunk_block("m", 2, 0)
    tampered = bytearray(ChunkFrame.encode(0, v2.id, v2.data[:CHUNK]))
    tampered[-1] ^= 0xFF
    a.publish(block0, bytes(tampered))
    w.rejected("hash-mismatch", block0)
    a.publish(block0, ChunkFrame.encode(0, other.id, other.data[:CHUNK]))
    w.rejected("wrong-release", block0)
    a.publish(block0, ChunkFrame.encode(70_000, v2.id, v2.data[:CHUNK]))
    w.rejected("index-out-of-range", block0)
    resend = T.resend(DEVICE)  # the device's own topic for chunks sent again
    a.publish(resend, bytes(tampered))
    w.rejected("hash-mismatch", resend)
    w.assert_active(w.v1)

    c.serve_all(v2)
    w.watch.wait_active(DEVICE, "m", 2, timeout=90)
    w.assert_active(v2)

    # replay: the genuine, validly signed index of m@1 (an older seq), and the old manifest
    a.publish(T.manifest("m", 1), w.v1.envelope, retain=True)
    a.publish(T.index(), w.v1_index, retain=True)
    w.rejected("stale", T.index())
    w.assert_active(v2)
