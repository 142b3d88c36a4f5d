"""Chunk frames: the fixed binary header, and the checks a chunk passes before a byte is written."""

from __future__ import annotations

import hashlib
import struct

import pytest

from protocol import (
    DEFAULT_LIMITS,
    HEADER_SIZE,
    ChunkFrame,
    ChunkRejected,
    MalformedMessage,
    Manifest,
    OversizedMessage,
    hash_chunks,
    verify_chunk,
)

CHUNK_SIZE = 4096
PAYLOAD = bytes((i * 31 + 7) % 251 for i in range(10_000))  # 3 distinct chunks: 4096, 4096, 1808
PIECES = [PAYLOAD[i : i + CHUNK_SIZE] for i in range(0, len(PAYLOAD), CHUNK_SIZE)]


def _manifest(version: int = 1) -> Manifest:
    whole, hashes, size = hash_chunks(PIECES)
    return Manifest("default", "m", version, size, whole, CHUNK_SIZE, hashes, 1.0, 2.0)


MANIFEST = _manifest()
RID = MANIFEST.release_id


def _header(
    *,
    magic: bytes = b"MCCH",
    fmt: int = 1,
    flags: int = 0,
    reserved: int = 0,
    index: int = 0,
    length: int = 0,
    rid: bytes = RID[:16],
) -> bytes:
    return struct.pack(">4sBBHII16s", magic, fmt, flags, reserved, index, length, rid)


def _reason_of(frame: bytes) -> str:
    with pytest.raises(ChunkRejected) as exc:
        verify_chunk(MANIFEST, RID, ChunkFrame.decode(frame))
    return exc.value.reason


# --- framing --------------------------------------------------------------------------------------
@pytest.mark.parametrize("index", [0, 1, 2, 2**32 - 1])
@pytest.mark.parametrize("payload", [b"", b"a", b"\x00" * 4096, bytes(range(256)) * 7])
def test_frame_round_trip(index: int, payload: bytes) -> None:
    frame = ChunkFrame.encode(index, RID, payload)
    assert len(frame) == HEADER_SIZE + len(payload)
    decoded = ChunkFrame.decode(frame)
    assert decoded.index == index
    assert decoded.release_id == RID[:16]
    assert bytes(decoded.payload) == payload


@pytest.mark.parametrize("payload", [b"", b"a", bytes(range(256)) * 7])
def test_a_blank_frame_filled_in_place_is_the_encoded_frame(payload: bytes) -> None:
    frame = ChunkFrame.blank(7, RID, len(payload))
    assert len(frame) == HEADER_SIZE + len(payload)
    memoryview(frame)[HEADER_SIZE:] = payload
    assert frame == ChunkFrame.encode(7, RID, payload)


def test_decode_is_a_zero_copy_view() -> None:
    frame = bytearray(ChunkFrame.encode(0, RID, b"hello"))
    decoded = ChunkFrame.decode(frame)  # type: ignore[arg-type]
    assert isinstance(decoded.payload, memoryview)
    frame[HEADER_SIZE] = ord("j")
    assert bytes(decoded.payload) == b"jello"


def test_encode_accepts_a_full_release_id_and_keeps_16_bytes() -> None:
    assert ChunkFrame.encode(0, RID, b"x")[16:32] == RID[:16]
    assert ChunkFrame.encode(0, RID[:16], b"x") == ChunkFrame.encode(0, RID, b"x")


def test_largest_frame_is_accepted_and_under_one_megabyte() -> None:
    frame = ChunkFrame.encode(0, RID, b"\x00" * DEFAULT_LIMITS.max_chunk_size)
    assert len(frame) < 1_000_000
    assert len(ChunkFrame.decode(frame).payload) == DEFAULT_LIMITS.max_chunk_size


@pytest.mark.parametrize("size", [0, 1, 16, HEADER_SIZE - 1])
def test_short_frame(size: int) -> None:
    with pytest.raises(MalformedMessage) as exc:
        ChunkFrame.decode(ChunkFrame.encode(0, RID, b"")[:size])
    assert exc.value.reason == "malformed"


def test_header_only_frame_is_an_empty_chunk() -> None:
    assert bytes(ChunkFrame.decode(_header()).payload) == b""


@pytest.mark.parametrize("magic", [b"MCCX", b"mcch", b"\x00\x00\x00\x00", b"HCCM"])
def test_bad_magic(magic: bytes) -> None:
    with pytest.raises(MalformedMessage) as exc:
        ChunkFrame.decode(_header(magic=magic, length=3) + b"abc")
    assert exc.value.reason == "malformed"
    assert "magic" in exc.value.detail


@pytest.mark.parametrize("fmt", [0, 2, 255])
def test_bad_format(fmt: int) -> None:
    with pytest.raises(MalformedMessage) as exc:
        ChunkFrame.decode(_header(fmt=fmt, length=3) + b"abc")
    assert exc.value.reason == "malformed"
    assert "format" in exc.value.detail


@pytest.mark.parametrize(("declared", "actual"), [(4, 3), (2, 3), (0, 1), (1, 0), (2**32 - 1, 3)])
def test_declared_length_mismatch(declared: int, actual: int) -> None:
    with pytest.raises(MalformedMessage) as exc:
        ChunkFrame.decode(_header(length=declared) + b"z" * actual)
    assert exc.value.reason == "malformed"
    assert "declares" in exc.value.detail


def test_oversized_frame() -> None:
    payload = b"\x00" * (DEFAULT_LIMITS.max_chunk_size + 1)
    with pytest.raises(OversizedMessage) as exc:
        ChunkFrame.decode(_header(length=len(payload)) + payload)
    assert exc.value.reason == "oversized"


# --- verification against the manifest ----------------------------------------------------------
@pytest.mark.parametrize("index", [0, 1, 2])
def test_every_genuine_chunk_verifies(index: int) -> None:
    verify_chunk(MANIFEST, RID, ChunkFrame.decode(ChunkFrame.encode(index, RID, PIECES[index])))


def test_release_id_may_be_given_as_16_bytes() -> None:
    verify_chunk(MANIFEST, RID[:16], ChunkFrame.decode(ChunkFrame.encode(0, RID, PIECES[0])))


def test_chunk_of_another_release() -> None:
    """Mix-and-match: a genuine chunk (same bytes, same hash), framed for another release."""
    other = _manifest(version=2).release_id
    assert other[:16] != RID[:16]
    assert _reason_of(ChunkFrame.encode(0, other, PIECES[0])) == "wrong-release"


def test_release_id_differing_only_in_its_last_frame_byte() -> None:
    rid = RID[:15] + bytes([RID[15] ^ 1])
    assert _reason_of(ChunkFrame.encode(0, rid, PIECES[0])) == "wrong-release"


@pytest.mark.parametrize("index", [3, 4, 2**31, 2**32 - 1])
def test_index_out_of_range(index: int) -> None:
    assert _reason_of(ChunkFrame.encode(index, RID, PIECES[0])) == "index-out-of-range"


@pytest.mark.parametrize(
    ("index", "payload"),
    [
        (2, PIECES[2] + b"\x00"),  # the last chunk is 1808 bytes, not more
        (2, PIECES[2][:-1]),
        (2, PIECES[0]),  # a full-size chunk where the short last one belongs
        (0, PIECES[0][:-1]),
        (1, PIECES[2]),  # the short last chunk where a full one belongs
        (0, b""),
    ],
)
def test_wrong_length(index: int, payload: bytes) -> None:
    assert _reason_of(ChunkFrame.encode(index, RID, payload)) == "bad-length"


@pytest.mark.parametrize("index", [0, 1, 2])
def test_hash_mismatch(index: int) -> None:
    tampered = bytearray(PIECES[index])
    tampered[len(tampered) // 2] ^= 0xFF
    assert _reason_of(ChunkFrame.encode(index, RID, bytes(tampered))) == "hash-mismatch"


def test_right_bytes_at_the_wrong_index() -> None:
    assert PIECES[0] != PIECES[1]
    assert _reason_of(ChunkFrame.encode(1, RID, PIECES[0])) == "hash-mismatch"


def test_chunk_rejected_is_typed() -> None:
    with pytest.raises(ChunkRejected) as exc:
        verify_chunk(MANIFEST, RID, ChunkFrame.decode(ChunkFrame.encode(0, RID, b"\x00" * 4096)))
    assert exc.value.reason == "hash-mismatch"
    assert str(exc.value).startswith("hash-mismatch: ")
    assert hashlib.sha256(b"\x00" * 4096).digest() != MANIFEST.chunk_hash(0)


def test_frame_release_id_reads_the_header_only() -> None:
    from protocol import ChunkFrame, frame_release_id

    rid = bytes(range(16))
    frame = ChunkFrame.encode(3, rid + b"ignored", b"payload")
    assert frame_release_id(frame) == rid
    assert frame_release_id(frame[:10]) is None
    assert frame_release_id(b"XXXX" + frame[4:]) is None  # not a chunk frame
