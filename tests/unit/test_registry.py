"""The release registry and the key directory, on real files in tmp_path."""

from __future__ import annotations

import hashlib
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import protocol
from coordinator.errors import RegistryError
from coordinator.keystore import ReleaseKeys, init_keys, load_release_keys
from coordinator.registry import Registry
from protocol.textmodel import KIND_FILE as FILE

CHUNK = 4096
SIZE = 10 * CHUNK + 1234  # 11 chunks, the last one short


@pytest.fixture
def keydir(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    init_keys(path)
    return path


@pytest.fixture
def keys(keydir: Path) -> ReleaseKeys:
    return load_release_keys(keydir)


@pytest.fixture
def trust(keydir: Path) -> protocol.TrustedRoot:
    return protocol.TrustedRoot(protocol.VerifyKey.from_pem((keydir / "root.pub").read_bytes()))


@pytest.fixture
def model(tmp_path: Path) -> Path:
    """Random bytes: released as a file (``model_kind`` file), they are never loaded."""
    path = tmp_path / "model.onnx"
    path.write_bytes(os.urandom(SIZE))
    return path


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    (tmp_path / "db").mkdir()
    reg = Registry(tmp_path / "db" / "registry.db")
    yield reg
    reg.close()


# --- keys ----------------------------------------------------------------------------------
def test_init_keys_writes_a_private_key_directory(keydir: Path) -> None:
    assert stat.S_IMODE(keydir.stat().st_mode) == 0o700
    for name in ("root.key", "release.key"):
        assert stat.S_IMODE((keydir / name).stat().st_mode) == 0o600
    assert {p.name for p in keydir.iterdir()} == {
        "root.key",
        "root.pub",
        "release.key",
        "release.cert",
    }


def test_the_release_certificate_chains_to_root_pub(
    keys: ReleaseKeys, trust: protocol.TrustedRoot
) -> None:
    cert = trust.check_certificate(keys.cert, time.time())
    assert cert.key == keys.key.verify_key
    assert cert.expires == pytest.approx(time.time() + 365 * 86400, abs=60)


def test_init_keys_refuses_to_replace_a_root_key(keydir: Path) -> None:
    before = (keydir / "root.key").read_bytes()
    with pytest.raises(FileExistsError, match=r"root\.key"):
        init_keys(keydir)
    assert (keydir / "root.key").read_bytes() == before


def test_load_release_keys_names_the_missing_file(keydir: Path) -> None:
    (keydir / "release.cert").unlink()
    with pytest.raises(FileNotFoundError, match=r"release\.cert"):
        load_release_keys(keydir)


def test_load_release_keys_refuses_a_certificate_for_another_key(
    keydir: Path, tmp_path: Path
) -> None:
    init_keys(tmp_path / "other")
    (keydir / "release.cert").write_bytes((tmp_path / "other" / "release.cert").read_bytes())
    with pytest.raises(ValueError, match="different key directories"):
        load_release_keys(keydir)


# --- releases ------------------------------------------------------------------------------
def test_add_release_builds_a_manifest_that_verifies(
    registry: Registry, model: Path, keys: ReleaseKeys, trust: protocol.TrustedRoot
) -> None:
    now = time.time()
    record = registry.add_release(
        model, model_kind=FILE, name="m", version=3, keys=keys, chunk_size=CHUNK, now=now
    )
    verified = protocol.open_manifest(trust, record.manifest, now=now + 1, fleet="default")
    m = verified.manifest
    data = model.read_bytes()
    assert (m.name, m.version, m.size, m.chunk_size) == ("m", 3, SIZE, CHUNK)
    assert m.sha256 == hashlib.sha256(data).digest()
    assert m.n_chunks == record.n_chunks == 11
    for i in range(m.n_chunks):
        assert m.chunk_hash(i) == hashlib.sha256(data[i * CHUNK : (i + 1) * CHUNK]).digest()
    assert record.release_id == verified.id
    assert record.sha256 == hashlib.sha256(data).hexdigest()
    assert m.expires == pytest.approx(now + 90 * 86400)


def test_add_release_copies_the_model_into_the_blob_store(
    registry: Registry, model: Path, keys: ReleaseKeys
) -> None:
    record = registry.add_release(
        model, model_kind=FILE, name="m", version=1, keys=keys, chunk_size=CHUNK
    )
    blob = Path(record.blob_path)
    assert blob == (registry.db_path.parent / "registry.blobs" / f"{record.sha256}.onnx").resolve()
    assert blob.read_bytes() == model.read_bytes()
    model.unlink()  # the registry does not depend on the original
    assert registry.release("default", "m", 1) == record
    assert [p.name for p in blob.parent.iterdir()] == [blob.name]  # no staging leftovers


def test_versions_must_increase(registry: Registry, model: Path, keys: ReleaseKeys) -> None:
    registry.add_release(model, model_kind=FILE, name="m", version=5, keys=keys, chunk_size=CHUNK)
    for version in (5, 4):
        with pytest.raises(RegistryError, match="versions must increase"):
            registry.add_release(
                model, model_kind=FILE, name="m", version=version, keys=keys, chunk_size=CHUNK
            )
    registry.add_release(model, model_kind=FILE, name="m", version=6, keys=keys, chunk_size=CHUNK)
    # Versions are per name and per fleet.
    registry.add_release(
        model, model_kind=FILE, name="other", version=1, keys=keys, chunk_size=CHUNK
    )
    registry.add_release(
        model, model_kind=FILE, name="m", version=1, keys=keys, chunk_size=CHUNK, fleet="lab"
    )
    assert [r.version for r in registry.releases("default") if r.name == "m"] == [5, 6]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "bad.name"}, "model name"),
        ({"name": "m", "fleet": "a/b"}, "fleet"),
        ({"name": "m", "chunk_size": 1000}, "chunk size"),
        ({"name": "m", "chunk_size": protocol.DEFAULT_LIMITS.max_chunk_size + 1}, "chunk size"),
        ({"name": "m", "version": -1}, "version"),
    ],
)
def test_add_release_refuses_bad_arguments(
    registry: Registry, model: Path, keys: ReleaseKeys, kwargs: dict, message: str
) -> None:
    args = {"version": 1, "keys": keys, "chunk_size": CHUNK, **kwargs}
    with pytest.raises(RegistryError, match=message):
        registry.add_release(model, **args)
    assert registry.releases("default") == []


def test_add_release_refuses_an_empty_file(
    registry: Registry, tmp_path: Path, keys: ReleaseKeys
) -> None:
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(RegistryError, match="empty"):
        registry.add_release(empty, name="m", version=1, keys=keys)


# --- deployments ---------------------------------------------------------------------------
def test_deploy(registry: Registry, model: Path, keys: ReleaseKeys) -> None:
    registry.add_release(model, model_kind=FILE, name="m", version=1, keys=keys, chunk_size=CHUNK)
    registry.add_release(model, model_kind=FILE, name="m", version=2, keys=keys, chunk_size=CHUNK)
    assert registry.deployments("default") == {}
    registry.deploy("m", 1)
    registry.deploy("m", 2)
    assert registry.deployments("default") == {"m": 2}
    assert registry.deployments("lab") == {}


def test_deploying_a_missing_release_is_refused(
    registry: Registry, model: Path, keys: ReleaseKeys
) -> None:
    registry.add_release(model, model_kind=FILE, name="m", version=1, keys=keys, chunk_size=CHUNK)
    registry.deploy("m", 1)
    for name, version, fleet in (("m", 2, "default"), ("nope", 1, "default"), ("m", 1, "lab")):
        with pytest.raises(RegistryError, match="no such release"):
            registry.deploy(name, version, fleet=fleet)
    assert registry.deployments("default") == {"m": 1}


def test_index_sequence_is_persisted_and_per_fleet(registry: Registry) -> None:
    assert [registry.next_index_seq("default") for _ in range(3)] == [1, 2, 3]
    assert registry.next_index_seq("lab") == 1
    again = Registry(registry.db_path)
    assert again.next_index_seq("default") == 4


# --- devices -------------------------------------------------------------------------------
def test_state_and_status_reports_merge(registry: Registry) -> None:
    registry.record_status(
        "default",
        protocol.DeviceStatus(device="d1", online=True, agent="edge/1", active={"m": 1}),
        seen=100.0,
    )
    registry.record_state(
        "default",
        protocol.DeviceState(
            device="d1",
            state=protocol.UpdateState.DOWNLOADING,
            ts=101.0,
            model="m",
            version=2,
            chunks_held=3,
            chunks_total=11,
            active={"m": 1},
        ),
        seen=101.0,
    )
    registry.record_status("default", protocol.DeviceStatus(device="d1", online=False))
    [row] = registry.devices("default")
    assert row["online"] is False
    assert row["last_seen"] == 101.0  # the will does not count as hearing from the device
    assert row["agent"] == "edge/1"
    assert row["active"] == {"m": 1}
    assert (row["state"], row["model"], row["version"]) == ("downloading", "m", 2)
    assert (row["chunks_held"], row["chunks_total"]) == (3, 11)


# --- several processes share one database ----------------------------------------------------
def test_two_registry_instances_share_the_database(
    registry: Registry, model: Path, keys: ReleaseKeys
) -> None:
    other = Registry(registry.db_path)
    record = registry.add_release(
        model, model_kind=FILE, name="m", version=1, keys=keys, chunk_size=CHUNK
    )
    assert other.release("default", "m", 1) == record
    other.deploy("m", 1)
    assert registry.deployments("default") == {"m": 1}
    with pytest.raises(RegistryError, match="versions must increase"):
        other.add_release(model, model_kind=FILE, name="m", version=1, keys=keys, chunk_size=CHUNK)


def test_concurrent_writers_neither_fail_nor_lose_updates(registry: Registry) -> None:
    """Two instances (two connections, as two processes would have) write at the same time."""
    instances = [registry, Registry(registry.db_path)]
    seqs: list[list[int]] = [[], []]
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def work(k: int) -> None:
        try:
            start.wait()
            for i in range(50):
                seqs[k].append(instances[k].next_index_seq("default"))
                instances[k].record_state(
                    "default",
                    protocol.DeviceState(
                        device=f"d{k}-{i}", state=protocol.UpdateState.IDLE, ts=float(i)
                    ),
                )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sorted(seqs[0] + seqs[1]) == list(range(1, 101))
    assert len(registry.devices("default")) == 100
