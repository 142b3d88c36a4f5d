"""Per-device variants: rules, the index fields, manifests, and the coordinator's targets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from coordinator.deployer import version_target
from coordinator.errors import RegistryError
from coordinator.keystore import init_keys, load_release_keys
from coordinator.registry import Registry
from protocol import (
    DeploymentIndex,
    Manifest,
    RolloutBlock,
    Target,
    Topics,
    VariantRule,
    choose_variant,
)
from protocol.textmodel import KIND_FILE

A, B, C = bytes(32), bytes(range(32)), bytes(range(1, 33))
RULES = (VariantRule("int8", {"class": "camera"}), VariantRule("int8", ram_below_mb=2048))


def test_the_first_rule_that_holds_picks_the_variant() -> None:
    assert choose_variant(RULES, {"class": "camera"}, 8000) == "int8"
    assert choose_variant(RULES, {"class": "gateway"}, 1024) == "int8"
    assert choose_variant(RULES, {"class": "gateway"}, 8000) is None
    assert choose_variant(RULES, {}, None) is None  # unknown RAM never counts as small


def test_a_device_resolves_its_own_variant_also_as_a_rollout_base() -> None:
    entry = Target(5, A, variant="fp32", variants={"int8": B}, rules=RULES)
    assert entry.for_device("d", {"class": "camera"}) == Target(5, B, variant="int8")
    assert entry.for_device("d", {"class": "gateway"}, 8000) == Target(5, A, variant="fp32")
    rollout = Target(6, C, rollout=RolloutBlock("m@6", 0, base=entry))
    assert rollout.for_device("d", {}, 100) == Target(5, B, variant="int8")
    index = DeploymentIndex("f", 1, 0.0, 9.0, {"m": entry, "r": rollout})
    assert DeploymentIndex.decode(index.encode()) == index


def test_manifest_variant_is_signed_in_and_absent_by_default() -> None:
    m = Manifest("f", "m", 5, 10, A, 4096, A, 1.0, 2.0)
    assert b"variant" not in m.encode()
    v = Manifest("f", "m", 5, 10, A, 4096, A, 1.0, 2.0, variant="int8")
    assert Manifest.decode(v.encode()) == v and v.release_id != m.release_id
    assert v.release == "m@5 (int8)"
    t = Topics("f")
    assert t.manifest("m", 5, "int8") == "modelcast/f/releases/m/5/int8"
    assert t.chunk_block("m", 5, 3, "int8") == "modelcast/f/chunks/m/5/int8/3"
    assert t.chunk_block("m", 5, 3) == "modelcast/f/chunks/m/5/3"


def test_registry_keeps_variants_of_one_version_and_the_deployer_targets_them(
    tmp_path: Path,
) -> None:
    init_keys(tmp_path / "keys")
    keys = load_release_keys(tmp_path / "keys")
    registry = Registry(tmp_path / "c.db")
    model = tmp_path / "m.onnx"
    for variant in ("int8", "fp32"):
        model.write_bytes(os.urandom(5000))
        registry.add_release(
            model, model_kind=KIND_FILE, name="m", version=5, keys=keys, variant=variant
        )
    with pytest.raises(RegistryError):
        registry.add_release(
            model, model_kind=KIND_FILE, name="m", version=5, keys=keys, variant="int8"
        )
    with pytest.raises(RegistryError):
        registry.add_release(model, model_kind=KIND_FILE, name="m", version=5, keys=keys)
    builds = registry.release_variants("default", "m", 5)
    assert [b.variant for b in builds] == ["fp32", "int8"]
    registry.set_variant_rules("default", "m", list(RULES[:1]), "fp32")
    rules, default = registry.variant_rules("default", "m")
    target = version_target(builds, rules, default)
    assert (target.variant, target.manifest_id) == ("fp32", builds[0].release_id)
    assert target.variants == {"int8": builds[1].release_id} and target.rules == RULES[:1]
    registry.close()


def test_a_database_from_before_variants_is_migrated(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    conn.execute(
        "CREATE TABLE releases (fleet TEXT, name TEXT, version INTEGER, size INTEGER, "
        "sha256 TEXT, chunk_size INTEGER, n_chunks INTEGER, block_chunks INTEGER, "
        "manifest BLOB NOT NULL, release_id BLOB NOT NULL, blob_path TEXT NOT NULL, "
        "created FLOAT, PRIMARY KEY (fleet, name, version))"
    )
    conn.execute(
        "INSERT INTO releases VALUES ('default', 'm', 1, 10, 'aa', 4096, 1, 16, x'00', "
        "x'01', '/nowhere', 1.0)"
    )
    conn.execute(
        "CREATE TABLE deployments (fleet TEXT, name TEXT, version INTEGER, deployed_at FLOAT, "
        "PRIMARY KEY (fleet, name))"
    )
    conn.execute("INSERT INTO deployments VALUES ('default', 'm', 1, 1.0)")
    conn.commit()
    conn.close()
    registry = Registry(db)
    record = registry.release("default", "m", 1)
    assert record is not None and record.variant == "" and record.release == "m@1"
    assert registry.deployment_entries("default")["m"].spec is None
    init_keys(tmp_path / "keys")
    keys = load_release_keys(tmp_path / "keys")
    model = tmp_path / "m.onnx"
    model.write_bytes(os.urandom(5000))
    registry.add_release(
        model, model_kind=KIND_FILE, name="m", version=2, keys=keys, variant="int8"
    )
    assert [r.variant for r in registry.release_variants("default", "m", 2)] == ["int8"]
    registry.close()


def test_rules_on_the_profile_architecture_and_execution_providers() -> None:
    gpu = VariantRule("fp16", provider="CUDAExecutionProvider")
    arm = VariantRule("int8", {"class": "camera"}, arch="aarch64")
    assert arm == VariantRule("int8", {"class": "camera"}, arch="aarch64")
    assert VariantRule.from_dict(gpu.to_dict(), "rule") == gpu
    assert arm.describe() == "int8:class=camera,profile.arch=aarch64"
    rules = (gpu, arm)
    on_gpu = ("CUDAExecutionProvider", "CPUExecutionProvider")
    assert choose_variant(rules, {}, None, "x86_64", on_gpu) == "fp16"
    assert choose_variant(rules, {"class": "camera"}, None, "aarch64") == "int8"
    assert choose_variant(rules, {"class": "camera"}, None, "x86_64") is None
    entry = Target(5, A, variant="fp32", variants={"fp16": B}, rules=rules)
    assert entry.for_device("d", {}, providers=on_gpu) == Target(5, B, variant="fp16")
