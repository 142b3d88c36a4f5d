"""Trust that changes while the edge runs: signed rollback directives (and their replay), release
key revocation, root rotation. The test plays the coordinator and holds the keys."""

from __future__ import annotations

import hashlib
import time

from coordinator.keystore import ReleaseKeys
from protocol import (
    Command,
    Revocations,
    SigningKey,
    UpdateState,
    certify,
    encode_chain,
    rotate_root,
)
from runtime.files import sha256_file
from testkit.synthetic_models import make_model
from tests.integration.test_rejections import Setup, setup
from tests.support.fleet import Keys, make_keys

__all__ = ["setup"]  # the fixture, shared with test_rejections


def root_key(keys: Keys) -> SigningKey:
    return SigningKey.from_pem((keys.dir / "root.key").read_bytes())


def command(setup: Setup, seq: int, version: int, keys: Keys | None = None) -> bytes:
    k = (keys or setup.keys).release
    now = time.time()
    cmd = Command(
        setup.coord.fleet,
        "target",
        seq,
        now,
        now + 600,
        "rollback",
        {"model": "m", "version": version},
    )
    return cmd.sign(k.key, k.cert)


def activate_v2(setup: Setup) -> None:
    c = setup.coord
    v2 = c.release(make_model(setup.tmp / "v2.onnx", 200_000, seed=2), "m", 2)
    c.publish_manifest(v2)
    c.publish_index(c.index({"m": v2}))
    c.probe.wait_for(lambda m: m.topic == c.topics.request("target"))
    c.serve_all(v2)
    setup.watch.wait_active("target", "m", 2)


def test_a_signed_rollback_directive_goes_back_and_a_replay_is_refused(setup: Setup) -> None:
    activate_v2(setup)
    c = setup.coord
    directive = command(setup, seq=1, version=1)
    c.probe.publish(c.topics.commands("target"), directive)
    setup.watch.wait_event("target", lambda e: e.event == "rolled-back" and e.version == 1)
    setup.watch.wait_state(
        "target", lambda s: s.state is UpdateState.ACTIVE and s.active == {"m": 1}
    )
    assert sha256_file(setup.edge.model_path("m", 1)) == hashlib.sha256(setup.v1.data).digest()

    c.probe.publish(c.topics.commands("target"), directive)  # replayed
    setup.rejected("stale", "commands/target")
    # the index (re)names m@2: the edge must not upgrade again to what it was rolled back from
    c.publish_index(c.index({"m": c.release(setup.tmp / "v2.onnx", "m", 2)}))
    setup.watch.wait_event("target", lambda e: e.event == "held-back" and e.version == 2)
    other = make_keys(setup.tmp / "other")
    c.probe.publish(c.topics.fleet_commands(), command(setup, seq=9, version=2, keys=other))
    setup.rejected("untrusted-key", "commands")
    last = list(setup.watch.states("target"))[-1]
    assert last.active == {"m": 1}


def test_a_revoked_release_key_can_no_longer_ship_a_release(setup: Setup) -> None:
    c = setup.coord
    now = time.time()
    revoked_id = setup.keys.release.key.verify_key.key_id
    revocations = Revocations(1, frozenset({revoked_id}), now, now + 600).sign(root_key(setup.keys))
    c.probe.publish(c.topics.revocations(), revocations, retain=True)
    setup.watch.wait_event("target", lambda e: e.event == "keys-revoked")
    v2 = c.release(make_model(setup.tmp / "v2.onnx", 200_000, seed=2), "m", 2)
    c.publish_manifest(v2)
    c.publish_index(c.index({"m": v2}))
    setup.rejected("revoked-key", "releases/index")
    setup.assert_untouched()
    # a new release key, certified by the same root, works
    fresh = SigningKey.generate()
    cert = certify(root_key(setup.keys), fresh.verify_key, issued=now, expires=now + 600)
    setup.keys.release = ReleaseKeys(fresh, cert)
    v3 = c.release(make_model(setup.tmp / "v3.onnx", 200_000, seed=3), "m", 3)
    c.publish_manifest(v3)
    c.publish_index(c.index({"m": v3}))
    c.probe.wait_for(lambda m: m.topic == c.topics.request("target"))
    c.serve_all(v3)
    setup.watch.wait_active("target", "m", 3)
    c.probe.publish(c.topics.revocations(), b"", retain=True)


def test_the_edge_follows_a_root_rotation(setup: Setup) -> None:
    c = setup.coord
    now = time.time()
    new_root = SigningKey.generate()
    chain = encode_chain([rotate_root(root_key(setup.keys), new_root, version=2, issued=now)])
    c.probe.publish(c.topics.root_chain(), chain, retain=True)
    setup.watch.wait_event("target", lambda e: e.event == "root-rotated")
    # releases certified by the old root are refused now; by the new one, accepted
    v2 = c.release(make_model(setup.tmp / "v2.onnx", 200_000, seed=2), "m", 2)
    c.publish_manifest(v2)
    c.publish_index(c.index({"m": v2}))
    setup.rejected("untrusted-key", "releases/index")
    release = SigningKey.generate()
    setup.keys.release = ReleaseKeys(
        release, certify(new_root, release.verify_key, issued=now, expires=now + 600)
    )
    v3 = c.release(make_model(setup.tmp / "v3.onnx", 200_000, seed=3), "m", 3)
    c.publish_manifest(v3)
    c.publish_index(c.index({"m": v3}))
    c.probe.wait_for(lambda m: m.topic == c.topics.request("target"))
    c.serve_all(v3)
    setup.watch.wait_active("target", "m", 3)
    # the rotation survives a restart: trust.json remembers the new root
    assert '"root_version": 2' in (setup.edge.data / "trust.json").read_text()
    c.probe.publish(c.topics.root_chain(), b"", retain=True)
