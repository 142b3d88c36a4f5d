"""Making a delta (the format is in ``protocol.delta``): the coordinator's side.

Tensors are matched by name: one of the same name and length in the base becomes a COPY when
its bytes are equal, an XOR otherwise; a tensor the base lacks is a literal. Every other byte of
the target (its graph, its metadata) goes into one zstd frame, with the base's own non-tensor
bytes as the dictionary. A file that is not ONNX is all "rest", so it gets no delta when that is
over ``Limits.max_delta_rest_bytes`` (``encode_delta`` raises ``DeltaError``; the coordinator
then offers the full release only).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import zstandard

from .delta import (
    OP_COPY,
    OP_END,
    OP_LIT,
    OP_REST,
    OP_XOR,
    DeltaError,
    DeltaHeader,
    dictionary_of,
    record_prefix,
    to_planes,
    width_zlen,
    xor_bytes,
)
from .errors import ProtocolError
from .limits import DEFAULT_LIMITS, Limits
from .onnx_layout import TensorSpan, tensor_spans

#: zstd level of the planes and the rest: 3 is zstd's default; higher levels cost the coordinator
#: time at release for a percent or two (docs/PROTOCOL.md, "Deltas")
DEFAULT_LEVEL = 3


@dataclass(frozen=True)
class DeltaOptions:
    level: int = DEFAULT_LEVEL
    #: split XOR and literal segments into byte planes (False: zstd of the plain XOR)
    planes: bool = True
    #: match tensors by name (False: the whole file is XORed with the base, where sizes allow)
    tensors: bool = True


def encode_delta(
    base: bytes | memoryview,
    target: bytes | memoryview,
    *,
    options: DeltaOptions = DeltaOptions(),
    limits: Limits = DEFAULT_LIMITS,
) -> Iterator[bytes]:
    """The delta that turns ``base`` into ``target``, in pieces (a header and one record each).

    ``base`` and ``target`` may be memory maps: only the tensors being compared are read.
    """
    base_v, target_v = memoryview(base), memoryview(target)
    if options.tensors:
        base_spans, target_spans = _spans(base_v), _spans(target_v)
    else:  # the whole file as one tensor of bytes: plain XOR where the sizes agree
        base_spans = [TensorSpan("", 1, 0, len(base_v))]
        target_spans = [TensorSpan("", 1, 0, len(target_v))]
    plan = _plan(base_spans, target_spans, len(target_v))
    yield _head(
        base_v, target_v, plan, _dictionary_ranges(base_spans, len(base_v), limits), options, limits
    )
    cctx = zstandard.ZstdCompressor(level=options.level)
    for kind, start, end, base_span in plan:
        if kind == "rest":
            yield record_prefix(OP_REST, end - start)
        elif (
            base_span is not None
            and target_v[start:end] == base_v[base_span.offset : base_span.end]
        ):
            yield record_prefix(OP_COPY, base_span.offset, end - start)
        else:
            width = _width(base_span, options, start, end)
            yield from _segments(cctx, base_v, target_v, (start, end), base_span, width, limits)
    yield bytes([OP_END])


def _head(
    base_v: memoryview,
    target_v: memoryview,
    plan: list[Step],
    dictionary: tuple[tuple[int, int], ...],
    options: DeltaOptions,
    limits: Limits,
) -> bytes:
    """The magic, the header and the rest's zstd frame."""
    rest = b"".join(bytes(target_v[a:b]) for kind, a, b, _ in plan if kind == "rest")
    if len(rest) > limits.max_delta_rest_bytes:
        raise DeltaError(
            f"{len(rest)} bytes of the file are not tensors, over the "
            f"{limits.max_delta_rest_bytes} a delta may carry"
        )
    dict_data = dictionary_of(dictionary, lambda o, n: bytes(base_v[o : o + n]))
    cctx = zstandard.ZstdCompressor(level=options.level, dict_data=dict_data)
    rest_frame = cctx.compress(rest) if rest else b""
    header = DeltaHeader(
        base_size=len(base_v),
        base_sha256=hashlib.sha256(base_v).digest(),
        target_size=len(target_v),
        target_sha256=hashlib.sha256(target_v).digest(),
        dictionary=dictionary,
        rest_size=len(rest),
        rest_zlen=len(rest_frame),
    )
    header.check(limits)
    return header.encode() + rest_frame


def _segments(
    cctx: zstandard.ZstdCompressor,
    base_v: memoryview,
    target_v: memoryview,
    span: tuple[int, int],
    base_span: TensorSpan | None,
    width: int,
    limits: Limits,
) -> Iterator[bytes]:
    """The XOR (``base_span`` given) or LIT records of the target's bytes in ``span``."""
    start, end = span
    for s in range(start, end, limits.max_delta_segment_bytes):
        e = min(end, s + limits.max_delta_segment_bytes)
        data = bytes(target_v[s:e])
        if base_span is None:
            yield _segment(cctx, record_prefix(OP_LIT, e - s), data, width)
        else:
            b0 = base_span.offset + (s - start)
            xored = xor_bytes(data, bytes(base_v[b0 : b0 + e - s]))
            yield _segment(cctx, record_prefix(OP_XOR, b0, e - s), xored, width)


def _spans(view: memoryview) -> list[TensorSpan]:
    try:
        return tensor_spans(view)
    except ProtocolError:
        return []  # not ONNX: the whole file is the rest


def _width(span: TensorSpan | None, options: DeltaOptions, start: int, end: int) -> int:
    if span is None or not options.planes or (end - start) % span.width:
        return 1
    return span.width


def _segment(cctx: zstandard.ZstdCompressor, prefix: bytes, data: bytes, width: int) -> bytes:
    frame = cctx.compress(to_planes(data, width))
    return prefix + width_zlen(width, len(frame)) + frame


Step = tuple[str, int, int, TensorSpan | None]


def _plan(base_spans: list[TensorSpan], target_spans: list[TensorSpan], size: int) -> list[Step]:
    """``(kind, start, end, base tensor)`` covering the target in order: ``rest`` (bytes that are
    not tensors), ``xor`` (a base tensor of that name and length: a COPY if equal) or ``lit``."""
    by_name = {s.name: s for s in base_spans}
    plan: list[Step] = []
    pos = 0
    for span in target_spans:
        if span.offset < pos:
            continue  # overlapping spans cannot happen in a valid file: leave it to the rest
        if span.offset > pos:
            plan.append(("rest", pos, span.offset, None))
        base = by_name.get(span.name)
        if base is not None and base.length == span.length:
            plan.append(("xor", span.offset, span.end, base))
        else:
            plan.append(("lit", span.offset, span.end, None))
        pos = span.end
    if pos < size:
        plan.append(("rest", pos, size, None))
    return plan


def _dictionary_ranges(
    spans: list[TensorSpan], size: int, limits: Limits
) -> tuple[tuple[int, int], ...]:
    """The base's non-tensor ranges, as many as fit the cap."""
    ranges, pos, total = [], 0, 0
    for start, end in [(s.offset, s.end) for s in spans] + [(size, size)]:
        if start > pos:
            length = min(start - pos, limits.max_delta_rest_bytes - total)
            if length <= 0:
                break
            ranges.append((pos, length))
            total += length
        pos = max(pos, end)
    return tuple(ranges)
