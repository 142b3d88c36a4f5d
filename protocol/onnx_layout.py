"""Where each initializer's bytes are in an ONNX file, read from the protobuf wire format.

A delta (``protocol.delta``) needs the byte offset of every initializer's ``raw_data`` in the
base and in the new file. ``onnx.load`` gives the tensors but not their offsets, so this walks
the protobuf encoding itself: ``ModelProto.graph`` (field 7) -> ``GraphProto.initializer``
(field 5) -> ``TensorProto`` ``data_type`` (2), ``name`` (8) and ``raw_data`` (9). Everything
else (the graph's nodes, metadata, tensors held in typed fields rather than ``raw_data``) is
"the rest of the file" to a delta. Pure: it reads a bytes-like object and does no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from .errors import MalformedMessage

#: ``TensorProto.DataType`` -> bytes per element, for splitting a tensor into byte planes
#: (1 for anything not listed: a single plane)
ELEMENT_BYTES = {1: 4, 4: 2, 5: 2, 6: 4, 7: 8, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2}

_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5
_MODEL_GRAPH, _GRAPH_INITIALIZER = 7, 5
_TENSOR_DATA_TYPE, _TENSOR_NAME, _TENSOR_RAW_DATA = 2, 8, 9


@dataclass(frozen=True)
class TensorSpan:
    """One initializer: its name, bytes per element and where its ``raw_data`` lies."""

    name: str
    width: int
    offset: int
    length: int

    @property
    def end(self) -> int:
        return self.offset + self.length


def tensor_spans(data: bytes | memoryview) -> list[TensorSpan]:
    """The initializers with ``raw_data`` in an ONNX ``ModelProto``, in file order.

    Raises ``MalformedMessage`` when ``data`` is not a well-formed protobuf message.
    """
    view = memoryview(data)
    spans: list[TensorSpan] = []
    for number, wire, start, end in _fields(view, 0, len(view)):
        if number == _MODEL_GRAPH and wire == _LEN:
            for g_number, g_wire, g_start, g_end in _fields(view, start, end):
                if g_number == _GRAPH_INITIALIZER and g_wire == _LEN:
                    span = _tensor(view, g_start, g_end)
                    if span is not None:
                        spans.append(span)
    spans.sort(key=lambda s: s.offset)
    return spans


def _tensor(view: memoryview, start: int, end: int) -> TensorSpan | None:
    name, data_type, raw = "", 0, None
    for number, wire, f_start, f_end in _fields(view, start, end):
        if number == _TENSOR_DATA_TYPE and wire == _VARINT:
            data_type = f_start
        elif number == _TENSOR_NAME and wire == _LEN:
            name = bytes(view[f_start:f_end]).decode("utf-8", "replace")
        elif number == _TENSOR_RAW_DATA and wire == _LEN:
            raw = (f_start, f_end - f_start)
    if raw is None or raw[1] == 0:
        return None
    return TensorSpan(name, ELEMENT_BYTES.get(data_type, 1), raw[0], raw[1])


def _fields(view: memoryview, pos: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """``(field number, wire type, a, b)`` for each field in ``view[pos:end]``: for a
    length-delimited field, its payload is ``view[a:b]``; for a varint, ``a`` is its value."""
    while pos < end:
        key, pos = _varint(view, pos, end)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _varint(view, pos, end)
            yield number, wire, value, pos
        elif wire == _LEN:
            length, pos = _varint(view, pos, end)
            if pos + length > end:
                raise MalformedMessage(f"protobuf field {number} runs past its message")
            yield number, wire, pos, pos + length
            pos += length
        elif wire in (_FIXED64, _FIXED32):
            pos += 8 if wire == _FIXED64 else 4
            if pos > end:
                raise MalformedMessage(f"protobuf field {number} runs past its message")
        else:
            raise MalformedMessage(f"protobuf wire type {wire} (field {number}) is not supported")


def _varint(view: memoryview, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise MalformedMessage("protobuf varint runs past its message")
        byte = view[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
