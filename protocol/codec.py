"""msgpack encoding with strict, capped decoding and small typed field readers."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TypeVar

import msgpack

from .errors import MalformedMessage, OversizedMessage, UnsupportedVersion

T = TypeVar("T")

SCHEMA_VERSION = 1


def pack(obj: Any) -> bytes:
    """Deterministic encoding: maps are written in the order given, bytes as ``bin``."""
    return msgpack.packb(obj, use_bin_type=True)


def unpack_map(data: bytes, max_bytes: int, what: str) -> dict[str, Any]:
    """Decode ``data`` into a map with string keys, refusing anything oversized or malformed.

    The cap is checked before decoding, and msgpack's own length limits are tied to it, so a
    header that declares a huge array or string cannot make us allocate.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedMessage(f"{what}: expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise OversizedMessage(f"{what}: {len(data)} bytes exceeds the cap of {max_bytes}")
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_str_len=max_bytes,
            max_bin_len=max_bytes,
            max_array_len=max_bytes,
            max_map_len=max_bytes,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises a zoo of types (ExtraData, StackError, ValueError...)
        raise MalformedMessage(f"{what}: not valid msgpack ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise MalformedMessage(f"{what}: expected a map, got {type(obj).__name__}")
    return obj


def check_schema_version(obj: Mapping[str, Any], what: str) -> None:
    v = obj.get("v")
    if type(v) is not int:
        raise MalformedMessage(f"{what}: missing integer schema version 'v'")
    if v != SCHEMA_VERSION:
        raise UnsupportedVersion(f"{what}: schema version {v}, this build speaks {SCHEMA_VERSION}")


def field(obj: Mapping[str, Any], key: str, kind: type[T], what: str) -> T:
    """The value of ``key``, which must be of exactly ``kind`` (bool is not accepted as int)."""
    if key not in obj:
        raise MalformedMessage(f"{what}: missing field {key!r}")
    value = obj[key]
    if kind is float and type(value) is int:
        value = float(value)
    if type(value) is not kind:
        raise MalformedMessage(
            f"{what}: field {key!r} must be {kind.__name__}, got {type(value).__name__}"
        )
    if isinstance(value, float) and not math.isfinite(value):  # a NaN expiry never expires
        raise MalformedMessage(f"{what}: field {key!r} must be finite, got {value}")
    return value


def optional(obj: Mapping[str, Any], key: str, kind: type[T], what: str, default: T) -> T:
    if key not in obj or obj[key] is None:
        return default
    return field(obj, key, kind, what)


def non_negative(value: int, key: str, what: str) -> int:
    if value < 0:
        raise MalformedMessage(f"{what}: field {key!r} must be >= 0, got {value}")
    return value
