"""Chunks compressed on the wire: the codec's threshold, the capped decompression (bombs and
garbage refused with their reason), the frame's flag, the edge accepting compressed chunks and
saying so in its requests, and the coordinator compressing each chunk once, only for devices
that decode zstd."""

from __future__ import annotations

import hashlib
import os

import pytest
import zstandard

import protocol
from coordinator.chunk_codec import ChunkCodec
from protocol import (
    ChunkFrame,
    ChunkRejected,
    ChunkRequest,
    DownloadSession,
    MalformedMessage,
    compress_chunk,
    decompress_chunk,
)
from tests.support.edge_fakes import CHUNK, DEVICE, release

ZEROS = bytes(CHUNK)
#: half zeros, half noise: compresses to about half
HALF = bytes(CHUNK // 2) + hashlib.shake_256(b"noise").digest(CHUNK // 2)
NOISE = hashlib.shake_256(b"random").digest(CHUNK)


def frame(
    codec: ChunkCodec, release_id: bytes, index: int, data: bytes, device: str | None
) -> bytes:
    """What the sender publishes for this chunk: the plain frame ``ChunkSource.read_frame``
    reads, through the codec."""
    plain = bytearray(ChunkFrame.encode(index, release_id, data))
    return bytes(codec.framed(plain, index, release_id, device))


class CountingZstd:
    """A zstd context that records the size of everything it is asked to compress."""

    def __init__(self) -> None:
        self.inner = zstandard.ZstdCompressor(level=protocol.compression.ZSTD_LEVEL)
        self.sizes: list[int] = []

    def compress(self, data: bytes) -> bytes:
        self.sizes.append(len(data))
        return self.inner.compress(data)


def test_a_probe_keeps_incompressible_chunks_from_being_compressed_whole() -> None:
    size = protocol.DEFAULT_CHUNK_SIZE
    probe = 3 * protocol.compression.PROBE_BYTES
    compressor = protocol.ChunkCompressor()
    counting = CountingZstd()
    compressor._zstd = counting  # type: ignore[assignment]
    noise = hashlib.shake_256(b"big noise").digest(size)
    assert compressor.compress(noise) is None
    assert counting.sizes == [probe]  # the probe only
    # every eighth byte varies: compressible everywhere, the probe says so, the chunk is packed
    sparse = bytes(b if i % 8 == 0 else 0 for i, b in enumerate(noise))
    packed = compressor.compress(sparse)
    assert packed is not None and decompress_chunk(packed, size, 0) == sparse
    assert counting.sizes == [probe, probe, size]


def test_a_chunk_is_compressed_only_when_that_saves_five_percent() -> None:
    packed = compress_chunk(HALF)
    assert packed is not None and len(packed) < 0.6 * CHUNK
    assert decompress_chunk(packed, CHUNK, 0) == HALF
    assert compress_chunk(NOISE) is None
    # 4 % compressible: not worth it; 10 %: worth it
    assert compress_chunk(bytes(CHUNK // 25) + NOISE[: CHUNK - CHUNK // 25]) is None
    assert compress_chunk(bytes(CHUNK // 10) + NOISE[: CHUNK - CHUNK // 10]) is not None


def reason(payload: bytes, expected: int = CHUNK) -> str:
    with pytest.raises(ChunkRejected) as exc:
        decompress_chunk(payload, expected, 3)
    return exc.value.reason


def test_a_bomb_is_refused_whether_it_declares_its_size_or_not() -> None:
    declared = zstandard.ZstdCompressor().compress(bytes(4 << 20))  # 4 MiB of zeros
    assert len(declared) < 1000
    assert reason(declared) == "decompression-bomb"
    hidden = zstandard.ZstdCompressor(write_content_size=False).compress(bytes(CHUNK + 1))
    assert reason(hidden) == "decompression-bomb"
    assert reason(zstandard.ZstdCompressor().compress(bytes(CHUNK - 1))) == "bad-compression"


def test_garbage_and_a_cut_frame_are_refused() -> None:
    assert reason(b"not zstd at all") == "bad-compression"
    assert reason(b"") == "bad-compression"
    packed = zstandard.ZstdCompressor(write_content_size=False).compress(HALF)
    assert reason(packed[: len(packed) // 2]) == "bad-compression"


def test_the_frame_flag_round_trips_and_unknown_flags_are_refused() -> None:
    frame = ChunkFrame.encode(5, b"r" * 16, b"xyz", compressed=True)
    decoded = ChunkFrame.decode(frame)
    assert decoded.compressed and bytes(decoded.payload) == b"xyz" and decoded.index == 5
    assert not ChunkFrame.decode(ChunkFrame.encode(5, b"r" * 16, b"xyz")).compressed
    bad = bytearray(frame)
    bad[5] = 0x03
    with pytest.raises(MalformedMessage, match="unknown flags"):
        ChunkFrame.decode(bytes(bad))


CHUNKS = [HALF, ZEROS, NOISE, HALF[:1000]]
REL = release(version=4, chunks=CHUNKS)


def compressed_frame(index: int, payload: bytes | None = None) -> bytes:
    packed = payload if payload is not None else compress_chunk(CHUNKS[index])
    assert packed is not None
    return ChunkFrame.encode(index, REL.id, packed, compressed=True)


def test_the_edge_takes_compressed_chunks_verifies_the_uncompressed_bytes_and_says_so() -> None:
    session = DownloadSession(REL)
    plan = session.plan(DEVICE, 0.0, 8)
    assert plan.request is not None and plan.request.codecs == ("zstd",)
    assert ChunkRequest.decode(plan.request.encode()).codecs == ("zstd",)
    bomb = zstandard.ZstdCompressor().compress(bytes(10 * CHUNK))
    with pytest.raises(ChunkRejected) as exc:
        session.accept(compressed_frame(1, bomb))
    assert exc.value.reason == "decompression-bomb"
    liar = compress_chunk(HALF)  # right size, wrong bytes for chunk 1
    with pytest.raises(ChunkRejected) as exc:
        session.accept(compressed_frame(1, liar))
    assert exc.value.reason == "hash-mismatch"
    for i in (0, 1, 3):
        chunk = session.accept(compressed_frame(i))
        assert chunk is not None and bytes(chunk.data) == CHUNKS[i]
        session.commit(chunk, 1.0)
    raw = session.accept(ChunkFrame.encode(2, REL.id, NOISE))
    assert raw is not None and bytes(raw.data) == NOISE


def test_a_request_with_a_bad_codec_list_is_refused_and_old_requests_have_none() -> None:
    req = ChunkRequest("d1", "m", 1, b"r" * 16, ((0, 1),))
    assert "codecs" not in protocol.codec.unpack_map(req.encode(), 1 << 16, "x")
    assert ChunkRequest.decode(req.encode()).codecs == ()
    for bad in (["x" * 17], [1], [""], ["zstd"] * 9):
        obj = protocol.codec.unpack_map(req.encode(), 1 << 16, "x")
        obj["codecs"] = bad
        with pytest.raises(MalformedMessage):
            ChunkRequest.decode(protocol.codec.pack(obj))


def request(device: str, codecs: tuple[str, ...] = ("zstd",)) -> ChunkRequest:
    return ChunkRequest(device, "m", 4, REL.id[:16], ((0, 4),), codecs=codecs)


def decoded(frame: bytes) -> bytes:
    f = ChunkFrame.decode(frame)
    if not f.compressed:
        return bytes(f.payload)
    return decompress_chunk(f.payload, len(CHUNKS[f.index]), f.index)


def test_the_coordinator_compresses_each_chunk_once_whoever_asks() -> None:
    codec = ChunkCodec()
    for d in ("a", "b", "c"):
        codec.on_request(REL.id[:16], request(d))
    frames = [frame(codec, REL.id, i, CHUNKS[i], dev) for dev in (None, "a", "b") for i in range(4)]
    assert [decoded(f) for f in frames] == CHUNKS * 3
    flags = [ChunkFrame.decode(f).compressed for f in frames]
    assert flags == [True, True, False, True] * 3  # the noise travels raw
    stats = codec.stats()
    assert stats.compressions == 4 and stats.compressed_sent == 9 and stats.raw_sent == 3


def test_an_older_device_gets_raw_chunks_and_makes_block_publications_raw() -> None:
    codec = ChunkCodec()
    codec.on_request(REL.id[:16], request("new"))
    assert ChunkFrame.decode(frame(codec, REL.id, 0, HALF, None)).compressed
    codec.on_request(REL.id[:16], request("old", codecs=()))
    assert not ChunkFrame.decode(frame(codec, REL.id, 0, HALF, None)).compressed
    assert not ChunkFrame.decode(frame(codec, REL.id, 0, HALF, "old")).compressed
    assert ChunkFrame.decode(frame(codec, REL.id, 0, HALF, "new")).compressed
    codec.forget([REL.id])  # retired: its askers and cached chunks go
    assert codec.stats().cached_bytes == 0
    assert ChunkFrame.decode(frame(codec, REL.id, 0, HALF, None)).compressed


def test_the_cache_is_bounded_and_an_evicted_chunk_is_compressed_again() -> None:
    size = len(compress_chunk(HALF) or b"")
    codec = ChunkCodec(cache_bytes=2 * size)
    codec.on_request(REL.id[:16], request("a"))
    halves = [HALF[:-8] + os.urandom(8) for _ in range(3)]
    for i, data in enumerate(halves):
        frame(codec, REL.id, i, data, None)
    assert codec.stats().cached_bytes <= 2 * size
    frame(codec, REL.id, 0, halves[0], None)  # evicted (the oldest): compressed again
    frame(codec, REL.id, 2, halves[2], None)  # still cached
    assert codec.stats().compressions == 4
