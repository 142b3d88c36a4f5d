"""A worker process's verified chunks (``modelcast.simulate.verified``): bytes equal to bytes
verified in the process are accepted by comparison, anything else is checked in full (a tampered
chunk is still refused), the whole-file sha256 is computed once per release and process, and the
cache stays within its cap."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest

from modelcast.simulate.config import SimConfig
from modelcast.simulate.device import DeviceOptions, VirtualDevice
from modelcast.simulate.sinks import SharedSink, memory_sinks
from modelcast.simulate.spec import DeviceProfile, DeviceSpec
from modelcast.simulate.verified import DEFAULT_CAP_MB, ReleaseBytes, VerifiedChunks
from protocol import (
    ChunkFrame,
    ChunkRejected,
    DigestMismatch,
    DownloadSession,
    Manifest,
    VerifiedManifest,
    compress_chunk,
    open_manifest,
)
from tests.support.download_release import CERT, NOW, RELEASE, TRUST
from tests.support.edge_fakes import CHUNK, Clock, frame, pieces, release
from tests.unit.test_simulate_device import TOPICS, Sim, Wire, target


def cached(rel: VerifiedManifest) -> tuple[VerifiedChunks, ReleaseBytes]:
    """A process's cache, and ``rel``'s place in it for one device."""
    cache = VerifiedChunks()
    entry = cache.acquire(rel)
    assert entry is not None
    return cache, entry


def check(entry: ReleaseBytes, rel: VerifiedManifest, raw: bytes) -> memoryview:
    return entry.verify(rel.manifest, rel.id, ChunkFrame.decode(raw))


def test_equal_bytes_are_compared_not_hashed_and_share_one_copy() -> None:
    chunks = pieces(3)
    rel = release(chunks=chunks)
    cache, entry = cached(rel)
    first = check(entry, rel, frame(rel, 1, chunks))
    again = check(entry, rel, bytes(bytearray(frame(rel, 1, chunks))))  # another message
    assert again is first and first.tobytes() == chunks[1]
    assert (cache.counts.hashed, cache.counts.compared) == (1, 1)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda data: b"x" * len(data),  # same length, other bytes
        lambda data: data[:-1] + bytes([data[-1] ^ 1]),  # one bit
        lambda data: data[:-1],  # shorter
    ],
)
def test_a_tampered_chunk_is_refused_after_the_good_one_was_cached(tamper: object) -> None:
    chunks = pieces(3)
    rel = release(chunks=chunks)
    _, entry = cached(rel)
    check(entry, rel, frame(rel, 0, chunks))
    bad = ChunkFrame.encode(0, rel.id, tamper(chunks[0]))  # type: ignore[operator]
    with pytest.raises(ChunkRejected) as err:
        check(entry, rel, bad)
    assert err.value.reason in ("hash-mismatch", "bad-length")
    assert entry.chunks[0] is not None and entry.chunks[0].tobytes() == chunks[0]


def test_a_refused_chunk_is_never_cached() -> None:
    chunks = pieces(2)
    rel = release(chunks=chunks)
    _, entry = cached(rel)
    with pytest.raises(ChunkRejected):
        check(entry, rel, ChunkFrame.encode(0, rel.id, b"x" * CHUNK))
    assert entry.chunks[0] is None
    assert check(entry, rel, frame(rel, 0, chunks)).tobytes() == chunks[0]


def test_the_header_is_checked_before_any_comparison() -> None:
    chunks = pieces(2)
    rel, other = release(chunks=chunks), release(version=9, chunks=chunks)
    _, entry = cached(rel)
    check(entry, rel, frame(rel, 0, chunks))
    with pytest.raises(ChunkRejected) as err:
        check(entry, rel, ChunkFrame.encode(0, other.id, chunks[0]))
    assert err.value.reason == "wrong-release"
    with pytest.raises(ChunkRejected) as err:
        check(entry, rel, ChunkFrame.encode(7, rel.id, chunks[0]))
    assert err.value.reason == "index-out-of-range"


def test_a_compressed_chunk_is_compared_after_its_capped_decompression() -> None:
    chunks = [bytes(CHUNK), bytes(range(256)) * 4]  # compressible
    rel = release(chunks=chunks)
    cache, entry = cached(rel)
    packed = compress_chunk(chunks[0])
    assert packed is not None
    plain = check(entry, rel, frame(rel, 0, chunks))
    squeezed = check(entry, rel, ChunkFrame.encode(0, rel.id, packed, compressed=True))
    assert squeezed is plain and cache.counts.compared == 1
    tampered = compress_chunk(b"\x01" + bytes(CHUNK - 1))
    assert tampered is not None
    with pytest.raises(ChunkRejected):
        check(entry, rel, ChunkFrame.encode(0, rel.id, tampered, compressed=True))


def test_the_cap_is_respected_and_a_retired_release_is_dropped() -> None:
    small, big = release(chunks=pieces(2)), release(version=3, chunks=pieces(6))
    cache = VerifiedChunks(cap_bytes=small.manifest.size + big.manifest.size - 1)
    a = cache.acquire(small)
    assert a is not None and cache.reserved_bytes == small.manifest.size
    assert cache.acquire(big) is None  # would exceed the cap: its devices hash everything
    assert cache.counts.releases_uncached == 1
    assert cache.acquire(small) is a and a.users == 2
    cache.release(a)
    assert small.id in cache
    cache.release(a)  # its last user is done: retired from this process
    assert small.id not in cache and cache.reserved_bytes == 0
    assert cache.acquire(big) is not None
    assert VerifiedChunks(cap_bytes=0).acquire(small) is None


def sink_with_all(entry: ReleaseBytes, rel: VerifiedManifest, chunks: list[bytes]) -> SharedSink:
    session = DownloadSession(rel, verify=entry.verify)
    sink = SharedSink(rel.manifest, entry)
    for i in reversed(range(len(chunks))):  # any order
        accepted = session.accept(frame(rel, i, chunks))
        assert accepted is not None
        sink.write(accepted)
        session.commit(accepted, 0.0)
    session.finish(sink.sha256())
    return sink


def test_the_whole_file_sha256_is_computed_once_per_release_and_process() -> None:
    chunks = pieces(5)
    rel = release(chunks=chunks)
    cache, entry = cached(rel)
    for _ in range(3):
        sink_with_all(entry, rel, chunks)
    assert entry.file_sha256 == rel.manifest.sha256 == hashlib.sha256(b"".join(chunks)).digest()
    assert (cache.counts.files_hashed, cache.counts.files_shared) == (1, 2)
    assert (cache.counts.hashed, cache.counts.compared) == (5, 10)


def test_chunks_that_agree_with_the_manifest_but_not_its_file_hash_are_still_refused() -> None:
    chunks = pieces(3)
    good = release(chunks=chunks).manifest
    lying = replace(good, sha256=hashlib.sha256(b"another file").digest())
    rel = open_manifest(TRUST, Manifest.sign(lying, RELEASE, CERT), now=NOW, fleet="default")
    _, entry = cached(rel)
    for _ in range(2):  # computed once, refused each time
        with pytest.raises(DigestMismatch):
            sink_with_all(entry, rel, chunks)


def test_a_sink_with_bytes_of_its_own_hashes_them() -> None:
    chunks = pieces(3)
    rel = release(chunks=chunks)
    cache, entry = cached(rel)
    sink = SharedSink(rel.manifest, entry)
    session = DownloadSession(rel)  # verified elsewhere: not the cache's objects
    for i in range(3):
        accepted = session.accept(frame(rel, i, chunks))
        assert accepted is not None
        sink.write(accepted)
    assert sink.sha256() == rel.manifest.sha256
    assert entry.file_sha256 is None and cache.counts.files_hashed == 1


def device(number: int, verified: VerifiedChunks | None) -> Sim:
    wire, clock = Wire(), Clock()
    dev = VirtualDevice(
        DeviceSpec(f"sim-{number}", DeviceProfile()),
        TRUST,
        wire=wire,
        clock=clock,
        sinks=memory_sinks(),
        options=DeviceOptions(window=4),
        verified=verified,
    )
    dev.on_connect(session_present=False)
    return Sim(dev, wire, clock)


def test_devices_of_one_process_verify_a_release_once_and_refuse_a_tampered_chunk() -> None:
    chunks = pieces(6)
    rel = release(version=2, chunks=chunks)
    cache = VerifiedChunks()
    first, second = device(1, cache), device(1, cache)
    for s in (first, second):
        s.index(m=target(rel))
    second.device.on_message(TOPICS.manifest("m", 2), rel.envelope)  # both downloading it
    first.deliver(rel, chunks)
    bad = ChunkFrame.encode(0, rel.id, b"x" * len(chunks[0]))
    second.device.on_message(TOPICS.chunk_block("m", 2, 0), bad)
    assert list(second.device.reporter.rejections.values()) == [1]
    second.deliver(rel, chunks)
    for s in (first, second):
        assert s.device.memory.versions() == {"m": 2}
    assert (cache.counts.hashed, cache.counts.compared) == (6, 6)
    assert (cache.counts.files_hashed, cache.counts.files_shared) == (1, 1)
    assert rel.id not in cache  # both done: retired


def test_verify_each_gives_no_cache_and_disk_shares_chunks_only(tmp_path: Path) -> None:
    trust = tmp_path / "root.pub"
    trust.write_bytes(TRUST.root.to_pem())
    config = SimConfig("mqtt://localhost:1883", 2, trust)
    cache = config.verified_chunks()
    assert cache is not None and cache.whole_file and cache.cap_bytes == DEFAULT_CAP_MB << 20
    assert SimConfig("mqtt://localhost:1883", 2, trust, verify_each=True).verified_chunks() is None
    on_disk = SimConfig("mqtt://localhost:1883", 2, trust, disk=tmp_path).verified_chunks()
    assert on_disk is not None and not on_disk.whole_file


def test_the_command_line_default_is_the_cache_s() -> None:
    from modelcast.cli.simulate import VERIFY_CACHE_MB

    assert VERIFY_CACHE_MB.fallback == str(DEFAULT_CAP_MB)
