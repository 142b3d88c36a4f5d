"""When the coordinator signs a new deployment index, and what it publishes (no MQTT)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import protocol
from coordinator.deployer import DeploymentPublisher
from coordinator.keystore import ReleaseKeys, init_keys, load_release_keys
from coordinator.registry import Registry
from coordinator.trustkeys import certify_release_key
from protocol.textmodel import KIND_FILE

DAY = 86400.0


@pytest.fixture
def keys(tmp_path: Path) -> ReleaseKeys:
    init_keys(tmp_path / "keys")
    return load_release_keys(tmp_path / "keys")


@pytest.fixture
def registry(tmp_path: Path, keys: ReleaseKeys) -> Iterator[Registry]:
    reg = Registry(tmp_path / "registry.db")
    model = tmp_path / "model.onnx"
    model.write_bytes(os.urandom(10_000))
    for version in (1, 2):
        reg.add_release(
            model, model_kind=KIND_FILE, name="m", version=version, keys=keys, chunk_size=4096
        )
    yield reg
    reg.close()


def trust(tmp_path: Path) -> protocol.TrustedRoot:
    return protocol.TrustedRoot(
        protocol.VerifyKey.from_pem((tmp_path / "keys" / "root.pub").read_bytes())
    )


def test_nothing_to_publish_before_a_deployment(registry: Registry, keys: ReleaseKeys) -> None:
    publisher = DeploymentPublisher(registry, keys, "default", index_expires_in=30 * DAY)
    assert publisher.plan(time.time(), republish=True) is None


def test_manifests_first_then_a_signed_index(
    registry: Registry, keys: ReleaseKeys, tmp_path: Path
) -> None:
    registry.deploy("m", 1)
    publisher = DeploymentPublisher(registry, keys, "default", index_expires_in=30 * DAY)
    now = time.time()
    plan = publisher.plan(now, republish=False)
    assert plan is not None
    topics = protocol.Topics("default")
    assert [p.topic for p in plan.publications] == [topics.manifest("m", 1), topics.index()]
    index = protocol.open_index(
        trust(tmp_path), plan.publications[-1].payload, now=now, fleet="default"
    )
    record = registry.release("default", "m", 1)
    assert record is not None
    assert index.seq == 1
    assert index.targets == {"m": protocol.Target(1, record.release_id)}
    assert plan.publications[0].payload == record.manifest
    publisher.commit(plan)
    assert publisher.plan(now + 1, republish=False) is None


def test_a_reconnect_republishes_the_same_bytes(registry: Registry, keys: ReleaseKeys) -> None:
    registry.deploy("m", 1)
    publisher = DeploymentPublisher(registry, keys, "default", index_expires_in=30 * DAY)
    first = publisher.plan(time.time(), republish=False)
    assert first is not None
    publisher.commit(first)
    again = publisher.plan(time.time(), republish=True)
    assert again is not None
    assert again.publications == first.publications


def test_a_changed_deployment_gets_a_new_seq(registry: Registry, keys: ReleaseKeys) -> None:
    registry.deploy("m", 1)
    publisher = DeploymentPublisher(registry, keys, "default", index_expires_in=30 * DAY)
    first = publisher.plan(time.time(), republish=False)
    assert first is not None
    publisher.commit(first)
    registry.deploy("m", 2)
    second = publisher.plan(time.time(), republish=False)
    assert second is not None
    assert second.index.seq == first.index.seq + 1
    assert second.index.targets == {"m": 2}


def test_the_index_is_renewed_past_half_its_lifetime(registry: Registry, keys: ReleaseKeys) -> None:
    registry.deploy("m", 1)
    publisher = DeploymentPublisher(registry, keys, "default", index_expires_in=10 * DAY)
    now = time.time()
    first = publisher.plan(now, republish=False)
    assert first is not None
    publisher.commit(first)
    assert publisher.plan(now + 4 * DAY, republish=False) is None
    renewed = publisher.plan(now + 5 * DAY, republish=False)
    assert renewed is not None
    assert renewed.index.seq == first.index.seq + 1
    assert renewed.index.expires == pytest.approx(now + 15 * DAY)
    assert [p.topic for p in renewed.publications] == [protocol.Topics("default").index()]


def test_a_new_release_key_re_signs_the_deployed_manifests_and_the_index(
    registry: Registry, keys: ReleaseKeys, tmp_path: Path
) -> None:
    registry.deploy("m", 1)
    publisher = DeploymentPublisher(registry, keys, "default", index_expires_in=30 * DAY)
    first = publisher.plan(time.time(), republish=False)
    assert first is not None
    publisher.commit(first)
    assert publisher.plan(time.time(), republish=False) is None

    certify_release_key(tmp_path / "keys", new=True)
    fresh = load_release_keys(tmp_path / "keys")
    old_id = keys.key.verify_key.key_id
    publisher.use_keys(fresh)
    now = time.time()
    plan = publisher.plan(now, republish=False)
    assert plan is not None and plan.index.seq > first.index.seq
    # the old key revoked: everything in the plan still verifies, with the same release id
    revoked = protocol.TrustedRoot(trust(tmp_path).root, revoked=frozenset({old_id}))
    manifest = protocol.open_manifest(revoked, plan.publications[0].payload, now=now)
    index = protocol.open_index(revoked, plan.publications[-1].payload, now=now, fleet="default")
    assert manifest.signer.key.key_id == fresh.key.verify_key.key_id
    assert index.targets["m"].manifest_id == manifest.id == first.records[0].release_id
    stored = registry.release("default", "m", 1)
    assert stored is not None and stored.manifest == plan.publications[0].payload
    publisher.commit(plan)
    assert publisher.plan(time.time(), republish=False) is None
