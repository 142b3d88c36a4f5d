"""The operator changes what edges trust through the CLI, with a coordinator and an edge running:
``modelcast keys rotate-root``, ``keys certify --new`` and ``keys revoke`` write the key directory,
the running coordinator publishes the root chain and the revocation list (retained) and re-signs
what is deployed with the new release key, and the edge follows. Then an attacker who stole the
old release key (with the certificate the new root gave it) publishes through the broker: the
edge refuses its index and its manifest as signed by a revoked key."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from coordinator.keystore import ReleaseKeys, load_release_keys
from protocol import ChunkRequest, UpdateState
from runtime.files import sha256_file
from testkit.mqtt_recorder import TopicRecorder
from testkit.synthetic_models import make_model
from tests.integration.test_rejections import ScriptedCoordinator
from tests.support.env import Env
from tests.support.fleet import REPO, Keys, release_and_deploy


def modelcast(*args: str) -> str:
    """The CLI in its own process, as the operator runs it; fails the test on a non-zero exit."""
    done = subprocess.run(
        [sys.executable, "-m", "modelcast.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"modelcast {' '.join(args)}: {done.stdout}\n{done.stderr}"
    return done.stdout


def test_rotate_root_certify_and_revoke_through_a_running_coordinator(env: Env) -> None:
    keydir = env.keys.dir
    db = env.tmp / "coord.db"
    release_and_deploy(
        env.registry, env.keys, make_model(env.tmp / "v1.onnx", 150_000), "m", 1, env.fleet
    )
    env.start_coordinator()
    edge = env.edge("e1")
    env.watch.wait_active("e1", "m", 1)
    topics = env.watch.topics

    # 1. a new root, signed by the old one: the coordinator publishes the chain, the edge follows
    modelcast("keys", "rotate-root", "--keys", str(keydir))
    env.watch.wait_event("e1", lambda e: e.event == "root-rotated")
    # what a thief of the release key gets from now on: the key and its new-root certificate
    stolen = load_release_keys(keydir)

    # 2. a new release key, 3. the old one revoked
    out = modelcast("keys", "certify", "--new", "--keys", str(keydir))
    old_id = stolen.key.verify_key.key_id
    assert f"modelcast keys revoke {old_id}" in out
    modelcast("keys", "revoke", old_id, "--keys", str(keydir))
    revoked = env.watch.wait_event("e1", lambda e: e.event == "keys-revoked")
    assert old_id in (revoked.detail or "")

    with TopicRecorder(
        env.broker.host, env.broker.port, [topics.root_chain(), topics.revocations()]
    ) as retained:
        retained.wait_for(lambda m: m.topic == topics.root_chain() and m.retain)
        retained.wait_for(lambda m: m.topic == topics.revocations() and m.retain)
        published = {m.topic: m.payload for m in retained.messages}
    assert published[topics.root_chain()] == (keydir / "root-chain").read_bytes()
    assert published[topics.revocations()] == (keydir / "revocations").read_bytes()

    # the coordinator signs with the new key: a release made now reaches the edge
    model2 = make_model(env.tmp / "v2.onnx", 150_000, seed=2)
    modelcast(
        "release",
        str(model2),
        "--name",
        "m",
        "--version",
        "2",
        "--db",
        str(db),
        "--keys",
        str(keydir),
        "--fleet",
        env.fleet,
    )
    modelcast("deploy", "m@2", "--db", str(db), "--fleet", env.fleet)
    env.watch.wait_active("e1", "m", 2)
    # an edge installed now, with the new root.pub, starts at its place in the chain
    env.edge("e2")
    assert env.watch.wait_active("e2", "m", 2).rejections == 0

    # 4. the thief, publishing through the broker (as a compromised broker could)
    with TopicRecorder(env.broker.host, env.broker.port, [topics.request("e1")]) as probe:
        thief = ScriptedCoordinator(probe, Keys(keydir, stolen), env.fleet)
        thief.seq = 1_000_000
        v3 = thief.release(make_model(env.tmp / "v3.onnx", 150_000, seed=3), "m", 3)
        thief.publish_manifest(v3)
        thief.publish_index(thief.index({"m": v3}))
        env.watch.wait_event(
            "e1",
            lambda e: (
                e.event == "rejected"
                and e.reason == "revoked-key"
                and (e.topic or "").endswith("releases/index")
            ),
        )
        # with an index the current key signed, the manifest it names, signed by the revoked
        # key, is refused too (a broker swapping a retained manifest)
        current = Keys(keydir, load_release_keys(keydir))
        thief.publish_index(thief.index({"m": v3}, keys=current))
        env.watch.wait_event(
            "e1",
            lambda e: (
                e.event == "rejected"
                and e.reason == "revoked-key"
                and (e.topic or "").endswith("releases/m/3")
            ),
        )
        assert not any(
            m.topic == topics.request("e1") and ChunkRequest.decode(m.payload).version == 3
            for m in probe.messages
        )
        for topic in (topics.manifest("m", 3), topics.index()):
            probe.publish(topic, b"", retain=True)
    assert edge.alive
    last = list(env.watch.states("e1"))[-1]
    assert last.active == {"m": 2} and last.state is UpdateState.REJECTED
    assert sha256_file(edge.model_path("m", 2)) == hashlib.sha256(model2.read_bytes()).digest()
    # the retired keys are where the CLI said
    assert (keydir / "retired" / "root-v1.key").exists()
    assert (keydir / "retired" / f"release-{old_id}.key").exists()
    assert isinstance(stolen, ReleaseKeys) and Path(keydir / "revocations").exists()
