"""The delta format: a new model file as edits to a base file the edge already holds.

Layout (integers little-endian; docs/PROTOCOL.md "Deltas" has the reasoning and measurements)::

    magic    b"MCDELTA1"
    header   u32 length + msgpack map: v, base_size, base_sha256, target_size, target_sha256,
             dict ([[offset, length], ...]: ranges of the base, concatenated: the zstd
             dictionary of the rest), rest_size, rest_zlen
    rest     zstd frame of every target byte that is not a tensor (graph, metadata), compressed
             with the base's own non-tensor bytes as a raw dictionary
    records  until END, each producing the next bytes of the target, in order:
             COPY  u64 base offset, u64 length                   bytes of the base, as they are
             REST  u64 length                                     the next bytes of ``rest``
             XOR   u64 base offset, u64 length, u8 width, u64 zlen, zstd frame:
                   (target XOR base) split into ``width`` byte planes
             LIT   u64 length, u8 width, u64 zlen, zstd frame:    target bytes in byte planes
             END

A tensor that changed is XORed with the same tensor of the base: weights that moved a little
keep their sign, exponent and high mantissa bits, so the XOR is mostly zero bytes, and splitting
it into byte planes (all first bytes of each element, then all second bytes, ...) puts those
zeros together for zstd. XOR and LIT records cover at most ``Limits.max_delta_segment_bytes``
each, so applying holds a few segments in memory, never a whole model (or a whole tensor).

``encode_delta`` (the coordinator) yields the delta in pieces; ``apply_delta`` (the edge) reads
it with a ``read(n)`` callable and the base with ``read_base(offset, length)``, and yields the
target's bytes in order, checking every length, offset and cap before it allocates, and the
target's sha256 at the end. Pure: both sides do their own I/O.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import zstandard

from .codec import SCHEMA_VERSION, check_schema_version, field, pack, unpack_map
from .errors import ProtocolError
from .limits import DEFAULT_LIMITS, Limits

MAGIC = b"MCDELTA1"
OP_END, OP_COPY, OP_REST, OP_XOR, OP_LIT = 0, 1, 2, 3, 4

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_U64X2 = struct.Struct("<QQ")
_WIDTH_ZLEN = struct.Struct("<BQ")
_WIDTHS = (1, 2, 4, 8)


class DeltaError(ProtocolError):
    """A delta that cannot be applied: malformed, oversized, or for another base."""

    reason = "delta-malformed"


class DeltaBaseMismatch(DeltaError):
    """The delta was made from another base file than the one it is applied to."""

    reason = "delta-base-mismatch"


class DeltaResultMismatch(DeltaError):
    """Applying the delta did not produce the file it promises."""

    reason = "delta-result-mismatch"


@dataclass(frozen=True)
class DeltaHeader:
    base_size: int
    base_sha256: bytes
    target_size: int
    target_sha256: bytes
    #: ranges of the base whose bytes, concatenated, are the dictionary of ``rest``
    dictionary: tuple[tuple[int, int], ...]
    rest_size: int
    rest_zlen: int

    def encode(self) -> bytes:
        body = pack(
            {
                "v": SCHEMA_VERSION,
                "base_size": self.base_size,
                "base_sha256": self.base_sha256,
                "target_size": self.target_size,
                "target_sha256": self.target_sha256,
                "dict": [list(r) for r in self.dictionary],
                "rest_size": self.rest_size,
                "rest_zlen": self.rest_zlen,
            }
        )
        return MAGIC + _U32.pack(len(body)) + body

    @classmethod
    def decode(cls, body: bytes, limits: Limits = DEFAULT_LIMITS) -> DeltaHeader:
        what = "delta header"
        try:
            obj = unpack_map(body, limits.max_delta_header_bytes, what)
            check_schema_version(obj, what)
            header = cls(
                base_size=field(obj, "base_size", int, what),
                base_sha256=field(obj, "base_sha256", bytes, what),
                target_size=field(obj, "target_size", int, what),
                target_sha256=field(obj, "target_sha256", bytes, what),
                dictionary=_ranges(field(obj, "dict", list, what)),
                rest_size=field(obj, "rest_size", int, what),
                rest_zlen=field(obj, "rest_zlen", int, what),
            )
        except DeltaError:
            raise
        except ProtocolError as exc:
            raise DeltaError(exc.detail) from None
        header.check(limits)
        return header

    def check(self, limits: Limits = DEFAULT_LIMITS) -> None:
        if len(self.base_sha256) != 32 or len(self.target_sha256) != 32:
            raise DeltaError("delta header: sha256 fields must be 32 bytes")
        for size, what in ((self.base_size, "base"), (self.target_size, "target")):
            if not 0 < size <= limits.max_model_bytes:
                raise DeltaError(f"delta header: {what} size {size} outside 1..model cap")
        dict_bytes = 0
        for offset, length in self.dictionary:
            if offset < 0 or length < 0 or offset + length > self.base_size:
                raise DeltaError(f"delta header: dictionary range {offset}+{length} not in base")
            dict_bytes += length
        for value, what in ((self.rest_size, "rest"), (dict_bytes, "dictionary")):
            if not 0 <= value <= limits.max_delta_rest_bytes:
                raise DeltaError(
                    f"delta header: {what} of {value} bytes exceeds {limits.max_delta_rest_bytes}"
                )
        if not 0 <= self.rest_zlen <= limits.max_delta_rest_bytes + 1024:
            raise DeltaError(f"delta header: compressed rest of {self.rest_zlen} bytes")


def _ranges(raw: list[object]) -> tuple[tuple[int, int], ...]:
    out = []
    for item in raw:
        if not isinstance(item, list) or len(item) != 2 or not all(type(v) is int for v in item):
            raise DeltaError("delta header: a dictionary range is not [offset, length]")
        out.append((int(item[0]), int(item[1])))
    return tuple(out)


# --- byte planes and XOR (no numpy: protocol stays pure; these run at C speed) -------------
def to_planes(data: bytes, width: int) -> bytes:
    """``data`` (whole elements of ``width`` bytes) as ``width`` planes: byte 0 of every
    element, then byte 1, ..."""
    if width == 1:
        return data
    return b"".join(data[i::width] for i in range(width))


def from_planes(planes: bytes, width: int) -> bytes:
    if width == 1:
        return planes
    n = len(planes) // width
    out = bytearray(len(planes))
    for i in range(width):
        out[i::width] = planes[i * n : (i + 1) * n]
    return bytes(out)


def xor_bytes(a: bytes, b: bytes) -> bytes:
    """Byte-wise XOR of two equally long byte strings."""
    n = len(a)
    return (int.from_bytes(a, "little") ^ int.from_bytes(b, "little")).to_bytes(n, "little")


#: ``(planes, base bytes or None, width) -> target bytes`` of one XOR (base given) or LIT record
Unplane = Callable[[bytes, bytes | None, int], bytes | memoryview]


def unplane(planes: bytes, base: bytes | None, width: int) -> bytes:
    """The pure-Python ``Unplane``; callers that may use numpy pass a faster one
    (``runtime.delta_kernel.unplane``)."""
    data = from_planes(planes, width)
    return data if base is None else xor_bytes(data, base)


def dictionary_of(
    ranges: tuple[tuple[int, int], ...], read_base: Callable[[int, int], bytes]
) -> zstandard.ZstdCompressionDict | None:
    """The raw-content dictionary made of the base's ``ranges`` (None when there are none)."""
    data = b"".join(read_base(offset, length) for offset, length in ranges)
    if not data:
        return None
    return zstandard.ZstdCompressionDict(data, dict_type=zstandard.DICT_TYPE_RAWCONTENT)


def record_prefix(op: int, *values: int) -> bytes:
    return bytes([op]) + b"".join(_U64.pack(v) for v in values)


def width_zlen(width: int, zlen: int) -> bytes:
    return _WIDTH_ZLEN.pack(width, zlen)


# --- applying ------------------------------------------------------------------------------
def apply_delta(
    read: Callable[[int], bytes],
    read_base: Callable[[int, int], bytes],
    *,
    base_size: int,
    limits: Limits = DEFAULT_LIMITS,
    kernel: Unplane = unplane,
    check_sha256: bool = True,
) -> Iterator[bytes | memoryview]:
    """The target's bytes, in order, from a delta read with ``read(n)`` (fewer bytes only at its
    end) against a base of ``base_size`` bytes read with ``read_base(offset, length)``.

    Raises ``DeltaError`` (malformed, oversized, another base) or ``DeltaResultMismatch`` (the
    output is not the file the header promises; raised after the last byte is yielded, so the
    caller must not use what it wrote until the generator is exhausted). ``check_sha256=False``:
    the caller hashes the output itself (on another thread, say) and compares it with the
    header's ``target_sha256`` (``read_header``).
    """
    reader = _Reader(read)
    header = read_header(reader.take, limits)
    if header.base_size != base_size:
        raise DeltaBaseMismatch(f"delta is for a {header.base_size}-byte base, not {base_size}")
    with_dict = zstandard.ZstdDecompressor(dict_data=dictionary_of(header.dictionary, read_base))
    rest = _decompress(reader.take(header.rest_zlen), header.rest_size, with_dict, "rest")
    digest = hashlib.sha256() if check_sha256 else None
    written = rest_pos = 0
    for piece in _records(reader, header, read_base, limits, kernel):
        if piece is None:  # END
            break
        if isinstance(piece, int):
            if piece == 0 or rest_pos + piece > len(rest):
                raise DeltaError(f"delta REST record of {piece} bytes runs past the rest")
            rest_pos, piece = rest_pos + piece, rest[rest_pos : rest_pos + piece]
        written += len(piece)
        if written > header.target_size:
            raise DeltaError(f"delta writes more than the target's {header.target_size} bytes")
        if digest is not None:
            digest.update(piece)
        yield piece
    if written != header.target_size or rest_pos != len(rest):
        raise DeltaError(
            f"delta wrote {written} of {header.target_size} bytes and used {rest_pos} of "
            f"{len(rest)} rest bytes"
        )
    if digest is not None and digest.digest() != header.target_sha256:
        raise DeltaResultMismatch("the applied delta does not match the sha256 it promises")


def read_header(read: Callable[[int], bytes], limits: Limits = DEFAULT_LIMITS) -> DeltaHeader:
    """Only the header of a delta (what base it needs, what it makes)."""
    reader = _Reader(read)
    if reader.take(len(MAGIC)) != MAGIC:
        raise DeltaError("not a modelcast delta (bad magic)")
    (header_len,) = _U32.unpack(reader.take(4))
    if header_len > limits.max_delta_header_bytes:
        raise DeltaError(f"delta header of {header_len} bytes exceeds the cap")
    return DeltaHeader.decode(reader.take(header_len), limits)


def _records(
    reader: _Reader,
    header: DeltaHeader,
    read_base: Callable[[int, int], bytes],
    limits: Limits,
    kernel: Unplane,
) -> Iterator[bytes | memoryview | int | None]:
    """Each record's output (bytes), or for REST its length (int); None at END."""
    segment_cap = limits.max_delta_segment_bytes
    dctx = zstandard.ZstdDecompressor()  # one for every segment: reused, frame after frame
    while True:
        op = reader.take(1)[0]
        if op == OP_END:
            yield None
            return
        if op == OP_REST:
            (length,) = _U64.unpack(reader.take(8))
            yield length
        elif op == OP_COPY:
            offset, length = _U64X2.unpack(reader.take(16))
            _check_base_range(offset, length, header.base_size)
            for start in range(offset, offset + length, segment_cap):
                yield _read_exact(read_base, start, min(segment_cap, offset + length - start))
        elif op == OP_XOR:
            offset, length = _U64X2.unpack(reader.take(16))
            _check_base_range(offset, length, header.base_size)
            planes, width = _segment(reader, length, segment_cap, dctx)
            yield kernel(planes, _read_exact(read_base, offset, length), width)
        elif op == OP_LIT:
            (length,) = _U64.unpack(reader.take(8))
            planes, width = _segment(reader, length, segment_cap, dctx)
            yield kernel(planes, None, width)
        else:
            raise DeltaError(f"delta record type {op} is unknown")


def _segment(
    reader: _Reader, length: int, cap: int, dctx: zstandard.ZstdDecompressor
) -> tuple[bytes, int]:
    """An XOR or LIT record's payload: its planes, decompressed, and their width."""
    width, zlen = _WIDTH_ZLEN.unpack(reader.take(9))
    if not 0 < length <= cap:
        raise DeltaError(f"delta segment of {length} bytes outside 1..{cap}")
    if width not in _WIDTHS or length % width:
        raise DeltaError(f"delta segment width {width} does not divide its {length} bytes")
    if zlen > cap + 1024:
        raise DeltaError(f"delta segment frame of {zlen} bytes exceeds the cap")
    return _decompress(reader.take(zlen), length, dctx, "segment"), width


def _decompress(frame: bytes, size: int, dctx: zstandard.ZstdDecompressor, what: str) -> bytes:
    """Exactly ``size`` bytes from one zstd frame; a frame that claims or makes more is refused
    before it is expanded (a decompression bomb)."""
    if size == 0 and not frame:
        return b""
    try:
        claimed = zstandard.frame_content_size(frame)
    except zstandard.ZstdError as exc:
        raise DeltaError(f"delta {what}: not a zstd frame ({exc})") from None
    if claimed not in (-1, size):
        raise DeltaError(f"delta {what}: frame claims {claimed} bytes, the record says {size}")
    try:
        out = dctx.decompress(frame, max_output_size=size)
    except zstandard.ZstdError as exc:
        raise DeltaError(f"delta {what}: {exc}") from None
    if len(out) != size:
        raise DeltaError(f"delta {what}: frame holds {len(out)} bytes, the record says {size}")
    return out


def _check_base_range(offset: int, length: int, base_size: int) -> None:
    if length == 0 or offset + length > base_size:
        raise DeltaError(f"delta record reads {offset}+{length}, the base has {base_size} bytes")


def _read_exact(read_base: Callable[[int, int], bytes], offset: int, length: int) -> bytes:
    data = read_base(offset, length)
    if len(data) != length:
        raise DeltaBaseMismatch(f"base is short: {len(data)} of {length} bytes at {offset}")
    return data


class _Reader:
    """``take(n)``: exactly ``n`` bytes of the delta, or ``DeltaError`` (truncated)."""

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self._read = read

    def take(self, n: int) -> bytes:
        data = self._read(n) if n else b""
        if len(data) != n:
            raise DeltaError(f"delta is truncated: wanted {n} bytes, got {len(data)}")
        return data


__all__ = [
    "MAGIC",
    "DeltaBaseMismatch",
    "DeltaError",
    "DeltaHeader",
    "DeltaResultMismatch",
    "apply_delta",
    "read_header",
]
