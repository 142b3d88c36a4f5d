"""Chunks compressed on the wire (zstd), and the capped decompression an edge does.

A chunk travels compressed only when that saves at least ``MIN_SAVING`` of its bytes: below
that, the edge's decompression and the frame's flag buy too little. 5 % is about what zstd gets
from dense float32 weights (random normal fp32: 7.5 % saved at every level from 1 to 6), so
dense models travel compressed by a little, pruned or quantized ones by a lot, and random bytes
(already compressed files) travel raw. Level 3 (zstd's default): higher levels gained nothing
measurable on weights and cost twice the time.

Chunk hashes cover the UNCOMPRESSED bytes, so compression changes nothing in the signed
manifest, and a chunk's bytes are verified after decompression. Decompression is capped at the
chunk's length in the manifest (itself at most the chunk size): a frame that declares or
produces more is refused (``decompression-bomb``) without decompressing beyond the cap plus one
byte; one that is not zstd or is cut short is refused too (``bad-compression``).

An edge says it accepts compressed chunks in its chunk requests (``codecs: ["zstd"]``); a
coordinator sends a compressed frame only to a device that said so (see docs/PROTOCOL.md).
"""

from __future__ import annotations

import zstandard

from .errors import ChunkRejected

#: the one codec; a device lists it in ``ChunkRequest.codecs`` when it accepts it
CODEC_ZSTD = "zstd"
#: what this implementation decodes
SUPPORTED_CODECS: tuple[str, ...] = (CODEC_ZSTD,)
#: compress a chunk only when that saves at least this fraction of its bytes
MIN_SAVING = 0.05
ZSTD_LEVEL = 3


#: bytes of each of the three samples (start, middle, end) a chunk's probe compresses
PROBE_BYTES = 4096


class ChunkCompressor:
    """Compresses chunks with one zstd context, reused: a fresh context per 256 KiB chunk cost
    as much as compressing it (random bytes: 4.3 GB/s with a new context each, 8 GB/s reused).

    A chunk is first probed: three 4 KiB samples, compressed together, must save at least half
    of ``MIN_SAVING``, or the chunk goes raw without being compressed whole (incompressible
    bytes, such as an already compressed file, cost a quarter of the time). On MiniLM, fp32 and
    int8, and a delta-rebuilt MiniLM, every chunk passed the probe and compressed as before.
    Not thread-safe: one per thread."""

    def __init__(self) -> None:
        self._zstd = zstandard.ZstdCompressor(level=ZSTD_LEVEL)

    def compress(self, data: bytes | memoryview) -> bytes | None:
        """``data`` zstd-compressed, or None when that saves less than ``MIN_SAVING``."""
        if not self._worth_trying(data):
            return None
        packed = self._zstd.compress(data)
        return packed if len(packed) <= len(data) * (1.0 - MIN_SAVING) else None

    def _worth_trying(self, data: bytes | memoryview) -> bool:
        n = len(data)
        if n < 8 * PROBE_BYTES:
            return True  # small: compressing it whole is as cheap as a probe
        view = memoryview(data)
        middle = n // 2
        sample = b"".join(
            (view[:PROBE_BYTES], view[middle : middle + PROBE_BYTES], view[n - PROBE_BYTES :])
        )
        return len(self._zstd.compress(sample)) <= len(sample) * (1.0 - MIN_SAVING / 2)


def compress_chunk(data: bytes | memoryview) -> bytes | None:
    """``data`` zstd-compressed, or None when that saves less than ``MIN_SAVING`` (a context of
    its own: for one-off calls; a sender compressing many chunks keeps a ``ChunkCompressor``)."""
    return ChunkCompressor().compress(data)


def decompress_chunk(payload: bytes | memoryview, expected: int, index: int) -> bytes:
    """The ``expected`` bytes that ``payload`` decompresses to; ``ChunkRejected`` when it
    expands to more (never decompressing more than ``expected + 1`` bytes) or is not zstd."""
    try:
        declared = zstandard.frame_content_size(payload)
    except zstandard.ZstdError as exc:
        raise ChunkRejected(
            f"chunk {index}: not a zstd frame ({exc})", reason="bad-compression"
        ) from exc
    if declared > expected:  # -1: not declared, the read below caps it
        raise ChunkRejected(
            f"chunk {index}: declares {declared} bytes decompressed, the chunk has {expected}",
            reason="decompression-bomb",
        )
    try:
        with zstandard.ZstdDecompressor().stream_reader(payload) as reader:
            data = reader.read(expected + 1)
    except zstandard.ZstdError as exc:
        raise ChunkRejected(
            f"chunk {index}: corrupt zstd data ({exc})", reason="bad-compression"
        ) from exc
    if len(data) > expected:
        raise ChunkRejected(
            f"chunk {index}: decompresses to more than the chunk's {expected} bytes",
            reason="decompression-bomb",
        )
    if len(data) < expected:
        raise ChunkRejected(
            f"chunk {index}: decompresses to {len(data)} bytes, the chunk has {expected}",
            reason="bad-compression",
        )
    return data
