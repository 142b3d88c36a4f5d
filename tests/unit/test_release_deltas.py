"""Deltas made at release (coordinator/delta_build.py): against which bases, stored where,
signed into the manifest, and served as chunk streams of their own."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from pathlib import Path

import pytest

import protocol
from coordinator.chunk_serving import ChunkServer
from coordinator.delta_build import delta_blob
from coordinator.keystore import ReleaseKeys, init_keys
from coordinator.progress import Progress
from coordinator.registry import Registry
from coordinator.release_cache import ReleaseCache
from protocol.textmodel import KIND_FILE
from testkit.synthetic_models import make_model, perturb_model
from tests.unit.coordinator_fakes import FakeLink

CHUNK = 16 * 1024


def versions(tmp_path: Path, n: int) -> list[Path]:
    """``n`` versions of one model, each with the bias (the last layer) changed."""
    paths = [make_model(tmp_path / "v1.onnx", 200_000)]
    for v in range(2, n + 1):
        paths.append(
            perturb_model(paths[-1], tmp_path / f"v{v}.onnx", tensors={"b"}, noise=1e-2, seed=v)
        )
    return paths


def release_all(registry: Registry, keys: ReleaseKeys, paths: list[Path], **kw: object) -> list:
    return [
        registry.add_release(p, name="m", version=v, keys=keys, chunk_size=CHUNK, **kw)  # type: ignore[arg-type]
        for v, p in enumerate(paths, start=1)
    ]


def test_a_release_offers_deltas_from_the_two_before_it(
    tmp_path: Path, registry: Registry, keys: ReleaseKeys
) -> None:
    paths = versions(tmp_path, 4)
    records = release_all(registry, keys, paths)
    assert records[0].signed.deltas == ()
    last = records[3].signed
    assert [d.base_version for d in last.deltas] == [3, 2]
    for ref, base in zip(last.deltas, (records[2], records[1]), strict=True):
        assert ref.base == base.release_id
        assert ref.base_sha256.hex() == base.sha256
        blob = delta_blob(registry.blob_dir, ref.sha256)
        data = blob.read_bytes()
        assert hashlib.sha256(data).digest() == ref.sha256
        assert len(data) < 0.05 * last.size  # only the bias moved
        base_bytes = Path(base.blob_path).read_bytes()
        made = b"".join(
            protocol.apply_delta(
                io.BytesIO(data).read,
                lambda o, n, b=base_bytes: b[o : o + n],  # type: ignore[misc]
                base_size=base.size,
            )
        )
        assert made == paths[3].read_bytes()


def test_no_deltas_when_asked_for_none_or_for_another_variant(
    tmp_path: Path, registry: Registry, keys: ReleaseKeys
) -> None:
    paths = versions(tmp_path, 2)
    records = release_all(registry, keys, paths, delta_bases=0)
    assert records[1].signed.deltas == ()
    other = registry.add_release(
        paths[1], name="m", version=3, variant="int8", keys=keys, chunk_size=CHUNK
    )
    assert other.signed.deltas == ()


def test_a_delta_no_smaller_than_the_release_is_not_offered(
    tmp_path: Path, registry: Registry, keys: ReleaseKeys
) -> None:
    first, unrelated = tmp_path / "a.bin", tmp_path / "b.bin"
    first.write_bytes(os.urandom(100_000))
    unrelated.write_bytes(os.urandom(100_000))
    records = release_all(registry, keys, [first, unrelated], model_kind=KIND_FILE)
    assert records[1].signed.deltas == ()
    assert not list(registry.blob_dir.glob("*.delta"))


def test_the_cache_serves_each_delta_as_a_stream_of_its_own(
    tmp_path: Path, registry: Registry, keys: ReleaseKeys
) -> None:
    records = release_all(registry, keys, versions(tmp_path, 3))
    cache = ReleaseCache(registry, "default")
    streams = records[2].delta_streams()
    assert len(streams) == 2
    stream = streams[0]
    manifest = records[2].signed
    assert stream.release_id == manifest.delta_stream(manifest.deltas[0]).release_id
    assert cache.lookup("m", 3, stream.short_id) == stream  # read from the database
    assert cache.get(stream.short_id) == stream
    assert stream.stream.startswith("~delta-") and stream.size == manifest.deltas[0].size
    assert Path(stream.blob_path).exists()
    assert cache.release_of(stream.short_id) == records[2].short_id
    assert cache.release_of(records[2].short_id) == records[2].short_id


def test_a_device_taking_the_delta_counts_toward_its_releases_fresh_hold(
    tmp_path: Path, registry: Registry, keys: ReleaseKeys
) -> None:
    """d1 and d2 are both expected to ask for m@3; d2 asks for the delta instead. The sender
    does not hold the release's chunks waiting for d2 (it would, for the whole hold)."""
    records = release_all(registry, keys, versions(tmp_path, 3))
    release, stream = records[2], records[2].delta_streams()[0]
    wanted = frozenset({"d1", "d2"})
    server = ChunkServer(
        protocol.Topics("default"),
        ReleaseCache(registry, "default"),
        lambda rid: wanted if rid == release.short_id else frozenset(),
        Progress(),
        threading.Event(),
        max_pending=64,
        fresh_hold=30.0,
    )
    try:
        for device, rec in (("d2", stream), ("d1", release)):
            ask = protocol.ChunkRequest(device, "m", 3, rec.short_id, ((0, 1),), fresh=True)
            server.on_request(ask)
        batch = server.next_batch(FakeLink())  # held: [] after 30 s
        assert {(rid, i) for rid, i, _ in batch} == {(release.short_id, 0), (stream.short_id, 0)}
        assert server.askers(release.short_id) == wanted
    finally:
        server.close()


def test_the_cli_says_which_deltas_a_release_offers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from modelcast.cli import main

    init_keys(tmp_path / "keys")
    paths = versions(tmp_path, 3)
    common = ["--name", "m", "--db", str(tmp_path / "c.db"), "--keys", str(tmp_path / "keys")]
    for v, path in enumerate(paths[:2], start=1):
        assert main(["release", str(path), "--version", str(v), *common]) == 0
    out = capsys.readouterr().out
    assert "with deltas of" not in out.splitlines()[0]
    assert ", with deltas of " in out.splitlines()[1] and "bytes from v1;" in out.splitlines()[1]
    assert main(["release", str(paths[2]), "--version", "3", "--delta-bases", "0", *common]) == 0
    assert "with deltas" not in capsys.readouterr().out
