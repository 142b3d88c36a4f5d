"""Chunk framing: a fixed 32-byte header followed by the chunk's bytes.

Header (big-endian)::

    0   4  magic  b"MCCH"
    4   1  frame format (1)
    5   1  flags: bit 0 (``FLAG_ZSTD``) the payload is zstd-compressed; other bits 0
    6   2  reserved (0)
    8   4  chunk index
    12  4  payload length
    16 16  release id: first 16 bytes of sha256(manifest body)

A fixed header (not msgpack) lets the edge verify and write the payload as a zero-copy slice.
A compressed payload (protocol/compression.py) is decompressed, capped at the chunk's length,
before its length and sha256 are checked: hashes cover the uncompressed bytes.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from .compression import decompress_chunk
from .errors import ChunkRejected, MalformedMessage, OversizedMessage
from .limits import DEFAULT_LIMITS, Limits
from .manifest import Manifest

MAGIC = b"MCCH"
FRAME_FORMAT = 1
_HEADER = struct.Struct(">4sBBHII16s")
HEADER_SIZE = _HEADER.size  # 32
RELEASE_ID_LEN = 16
#: the flag of a zstd-compressed payload
FLAG_ZSTD = 0x01


@dataclass(frozen=True)
class ChunkFrame:
    index: int
    release_id: bytes
    payload: memoryview
    #: ``payload`` is zstd-compressed (the chunk's bytes are what it decompresses to)
    compressed: bool = False

    @staticmethod
    def encode(index: int, release_id: bytes, payload: bytes, *, compressed: bool = False) -> bytes:
        flags = FLAG_ZSTD if compressed else 0
        header = _HEADER.pack(
            MAGIC, FRAME_FORMAT, flags, 0, index, len(payload), release_id[:RELEASE_ID_LEN]
        )
        return header + payload

    @staticmethod
    def blank(index: int, release_id: bytes, length: int) -> bytearray:
        """A frame of chunk ``index`` with its header written and ``length`` payload bytes left
        for the caller to fill in place (``memoryview(frame)[HEADER_SIZE:]``, read from a file):
        the bytes of ``encode`` without copying the payload into the frame."""
        frame = bytearray(HEADER_SIZE + length)
        _HEADER.pack_into(
            frame, 0, MAGIC, FRAME_FORMAT, 0, 0, index, length, release_id[:RELEASE_ID_LEN]
        )
        return frame

    @classmethod
    def decode(cls, frame: bytes, limits: Limits = DEFAULT_LIMITS) -> ChunkFrame:
        if len(frame) < HEADER_SIZE:
            raise MalformedMessage(f"chunk frame of {len(frame)} bytes is shorter than its header")
        if len(frame) > HEADER_SIZE + limits.max_chunk_size:
            raise OversizedMessage(f"chunk frame of {len(frame)} bytes exceeds the cap")
        magic, fmt, flags, _reserved, index, length, release_id = _HEADER.unpack_from(frame)
        if magic != MAGIC:
            raise MalformedMessage("chunk frame has a bad magic number")
        if fmt != FRAME_FORMAT:
            raise MalformedMessage(f"chunk frame format {fmt} is not supported")
        if flags & ~FLAG_ZSTD:
            raise MalformedMessage(f"chunk frame has unknown flags {flags:#04x}")
        if length != len(frame) - HEADER_SIZE:
            raise MalformedMessage(
                f"chunk frame declares {length} bytes but carries {len(frame) - HEADER_SIZE}"
            )
        return cls(index, release_id, memoryview(frame)[HEADER_SIZE:], bool(flags & FLAG_ZSTD))


def frame_release_id(frame: bytes) -> bytes | None:
    """The release id a chunk frame's header names, without checking anything else; None when
    the frame is too short or not a chunk frame at all."""
    if len(frame) < HEADER_SIZE:
        return None
    magic, _fmt, _flags, _reserved, _index, _length, release_id = _HEADER.unpack_from(frame)
    return bytes(release_id) if magic == MAGIC else None


def verify_chunk(manifest: Manifest, release_id: bytes, frame: ChunkFrame) -> memoryview:
    """The chunk's bytes (decompressed if need be), once they match the manifest. Refuse a
    chunk of another release, out of range, that decompresses beyond its length or not at
    all, of the wrong length, or whose hash differs."""
    if frame.release_id != release_id[:RELEASE_ID_LEN]:
        raise ChunkRejected(
            f"chunk {frame.index} belongs to another release (id {frame.release_id.hex()})",
            reason="wrong-release",
        )
    if frame.index >= manifest.n_chunks:
        raise ChunkRejected(
            f"chunk index {frame.index} out of range (release has {manifest.n_chunks})",
            reason="index-out-of-range",
        )
    expected_len = manifest.chunk_length(frame.index)
    payload = frame.payload
    if frame.compressed:
        payload = memoryview(decompress_chunk(payload, expected_len, frame.index))
    if len(payload) != expected_len:
        raise ChunkRejected(
            f"chunk {frame.index} has {len(payload)} bytes, expected {expected_len}",
            reason="bad-length",
        )
    if hashlib.sha256(payload).digest() != manifest.chunk_hash(frame.index):
        raise ChunkRejected(f"chunk {frame.index} sha256 mismatch", reason="hash-mismatch")
    return payload
