"""Property tests: every decoder, fed arbitrary or hostile bytes, raises only ``ProtocolError``.

A receiver catches ``ProtocolError``, counts the rejection and carries on; anything else
(``KeyError``, ``TypeError``, ``UnicodeDecodeError``, ``RecursionError``, ``MemoryError``...)
would escape that handler and take the device's message loop down.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import (
    ChunkFrame,
    ChunkRequest,
    Command,
    DeploymentIndex,
    DeviceEvent,
    DeviceState,
    DeviceStatus,
    DownloadSession,
    KeyCertificate,
    MalformedMessage,
    Manifest,
    MetricsSample,
    OversizedMessage,
    ProtocolError,
    Revocations,
    SigningKey,
    TrustedRoot,
    UpdateState,
    VerifiedChunk,
    apply_revocations,
    apply_rotation,
    certify,
    follow_chain,
    hash_chunks,
    open_command,
    open_index,
    open_manifest,
    seal,
)
from protocol.envelope import Envelope
from protocol.limits import DEFAULT_LIMITS
from protocol.rotation import RootRotation

FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,  # no example database written into the repository
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Every reason code a receiver may put on its state topic (docs/PROTOCOL.md, "Device state").
DOCUMENTED_REASONS = {
    "malformed",
    "oversized",
    "unsupported-version",
    "unsigned",
    "bad-signature",
    "untrusted-key",
    "revoked-key",
    "expired",
    "stale",
    "wrong-release",
    "index-out-of-range",
    "bad-length",
    "hash-mismatch",
    "digest-mismatch",
    "load-failed",
    "write-failed",
}

ROOT = SigningKey(Ed25519PrivateKey.from_private_bytes(b"\x31" * 32))
RELEASE = SigningKey(Ed25519PrivateKey.from_private_bytes(b"\x32" * 32))
CERT = certify(ROOT, RELEASE.verify_key, issued=0.0, expires=4e9)
TRUST = TrustedRoot(ROOT.verify_key)
NOW = 1_750_000_000.0

CHUNK = 4096
DATA = bytes((i * 31 + 7) % 251 for i in range(3 * CHUNK - 100))
PIECES = [DATA[i : i + CHUNK] for i in range(0, len(DATA), CHUNK)]
_whole, _hashes, _size = hash_chunks(PIECES)
MANIFEST = Manifest("default", "m", 1, _size, _whole, CHUNK, _hashes, 1e9, 2e9, block_chunks=2)
RELEASE_ENV = MANIFEST.sign(RELEASE, CERT)
VERIFIED = open_manifest(TRUST, RELEASE_ENV, now=NOW, fleet="default")
RID = VERIFIED.id

MAX_CHUNK = DEFAULT_LIMITS.max_chunk_size


def _accept(data: bytes) -> None:
    session = DownloadSession(VERIFIED, held=[1])
    chunk = session.accept(data)
    if chunk is not None:  # only a genuine chunk can get here: it must be the real thing
        assert isinstance(chunk, VerifiedChunk)
        assert bytes(chunk.data) == PIECES[chunk.index]


DECODERS: dict[str, Callable[[bytes], object]] = {
    "Envelope.decode": lambda d: Envelope.decode(d, 1_000_000),
    "TrustedRoot.open/manifest": lambda d: TRUST.open(d, "manifest", NOW),
    "TrustedRoot.open/index": lambda d: TRUST.open(d, "index", NOW),
    "TrustedRoot.check_certificate": lambda d: TRUST.check_certificate(d, NOW),
    "open_manifest": lambda d: open_manifest(TRUST, d, now=NOW, fleet="default"),
    "open_index": lambda d: open_index(TRUST, d, now=NOW, fleet="default", last_seq=3),
    "Manifest.decode": Manifest.decode,
    "DeploymentIndex.decode": DeploymentIndex.decode,
    "KeyCertificate.decode": KeyCertificate.decode,
    "ChunkFrame.decode": ChunkFrame.decode,
    "DownloadSession.accept": _accept,
    "ChunkRequest.decode": ChunkRequest.decode,
    "DeviceState.decode": DeviceState.decode,
    "DeviceStatus.decode": DeviceStatus.decode,
    "DeviceEvent.decode": DeviceEvent.decode,
    "MetricsSample.decode": MetricsSample.decode,
    "Command.decode": Command.decode,
    "open_command": lambda d: open_command(
        TRUST, d, now=NOW, fleet="default", device="d1", last_seq=3
    ),
    "RootRotation.decode": RootRotation.decode,
    "apply_rotation": lambda d: apply_rotation(TRUST, d),
    "follow_chain": lambda d: follow_chain(TRUST, d),
    "Revocations.decode": Revocations.decode,
    "apply_revocations": lambda d: apply_revocations(TRUST, d, now=NOW),
}
ALL = sorted(DECODERS)
MSGPACK_DECODERS = [
    name for name in ALL if name not in ("ChunkFrame.decode", "DownloadSession.accept")
]


def _only_protocol_errors(decoder: str, data: bytes) -> ProtocolError | None:
    """Run the decoder; a ProtocolError (with a documented reason) is fine, nothing else is."""
    try:
        DECODERS[decoder](data)
    except ProtocolError as exc:
        assert exc.reason in DOCUMENTED_REASONS, f"{decoder}: undocumented reason {exc.reason!r}"
        assert isinstance(exc.detail, str) and str(exc).startswith(exc.reason)
        return exc
    except Exception as exc:
        raise AssertionError(f"{decoder} leaked {type(exc).__name__}: {exc}") from exc
    return None


def _pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


# --- strategies -----------------------------------------------------------------------------------
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=40)
)
ANY = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(max_size=6) | st.sampled_from([b"v", b"kind"]), children, max_size=4
        )
    ),
    max_leaves=8,
)
#: Small values for single fields: wrong types more often than deep structures.
ANY_FIELD = (
    _scalars
    | st.lists(_scalars, max_size=3)
    | st.dictionaries(st.text(max_size=4), _scalars, max_size=2)
)


# Weighted by hand: ``a | b`` flattens b's branches into one one_of, which would drown a.
@st.composite
def _mostly(draw: st.DrawFn, good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> Any:
    """``good`` most of the time, else ``bad``. (Hypothesis favours the ends of an integer range,
    so the rare case is a value in the middle.)"""
    return draw(bad if draw(st.integers(0, 6)) == 3 else good)


def _pick(good: list[Any], bad: list[Any]) -> st.SearchStrategy[Any]:
    return _mostly(st.sampled_from(good), st.sampled_from(bad))


_names = _pick(
    ["default", "m", "edge-01", "x" * 64], ["a.b", "", "x" * 65, "a/b", "+", "#", "é", "a\n"]
)
_ints = _mostly(
    st.sampled_from([0, 1, 2, 3, 16]) | st.integers(min_value=0, max_value=2**16),
    st.sampled_from([-1, 2**32, 2**63 - 1, 2**64 - 1, -(2**63), 30_000, 29_999])
    | st.integers(min_value=-(2**63), max_value=2**64 - 1),
)
_floats = _mostly(
    st.sampled_from([0.0, 1e9, 2e9, NOW, 4e9]) | st.integers(min_value=0, max_value=2**40),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1.0]) | st.floats(),
)
_digests = _mostly(st.binary(min_size=32, max_size=32), st.binary(max_size=40))


@st.composite
def _map(
    draw: st.DrawFn, fields: dict[str, st.SearchStrategy[Any]], versioned: bool = True
) -> dict[str, Any]:
    """A map with the right keys, each usually present with a plausible value (valid or a near
    miss), sometimes missing or of any type; now and then an unknown key too. Many maps get past
    the first checks, so the deep ones are exercised as well."""
    obj: dict[str, Any] = {}
    if versioned and draw(st.integers(0, 20)) != 10:
        obj["v"] = draw(_pick([1], [0, 2, -1, 2**64 - 1, "1", 1.0, True, None]))
    for key, plausible in fields.items():
        roll = draw(st.integers(0, 20))
        if roll == 10:
            continue
        obj[key] = draw(ANY_FIELD if roll == 11 else plausible)
    if draw(st.integers(0, 4)) == 2:
        obj[draw(st.text(max_size=6))] = draw(ANY_FIELD)
    return obj


MANIFEST_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "fleet": _names,
    "name": _names,
    "version": _ints,
    "format": _pick(["onnx"], ["tflite", ""]),
    "size": _mostly(st.just(_size), _ints),
    "sha256": _digests,
    "chunk_size": _pick([4096], [4095, MAX_CHUNK, MAX_CHUNK + 1, 0, -1, 2**64 - 1]),
    "block_chunks": _pick([1, 2, 16], [0, 4097, -1]),
    "chunks": _mostly(
        st.just(_hashes), st.sampled_from([_hashes[:-1], b"", _hashes * 2]) | st.binary()
    ),
    "created": _floats,
    "expires": _floats,
}
TARGET = _map({"version": _ints, "manifest": _digests}, versioned=False)
INDEX_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "fleet": _names,
    "seq": _ints,
    "issued": _floats,
    "expires": _floats,
    "targets": st.dictionaries(_names, _mostly(TARGET, ANY_FIELD), max_size=4),
}
CERT_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "role": _pick(["release"], ["root", "", "Release"]),
    "key": _mostly(st.binary(min_size=32, max_size=32), st.binary(max_size=40)),
    "issued": _floats,
    "expires": _floats,
}
ENVELOPE_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "kind": _pick(["manifest", "index", "key-cert"], ["", "command"]),
    "body": _mostly(st.builds(_pack, _map(MANIFEST_FIELDS)), st.binary(max_size=64)),
    "sig": _mostly(st.binary(min_size=64, max_size=64), st.binary(max_size=70)),
    "cert": _mostly(st.just(CERT), st.binary(max_size=64)),
}
_range = _mostly(st.tuples(_ints, _ints).map(list), st.lists(_ints, max_size=3))
REQUEST_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "device": _names,
    "name": _names,
    "version": _ints,
    "release": _mostly(st.sampled_from([RID[:16], RID]), st.binary(max_size=40)),
    "ranges": st.lists(_mostly(_range, ANY_FIELD), max_size=6),
    "subscribed": st.lists(_mostly(_ints, ANY_FIELD), max_size=6),
    "fresh": st.booleans(),
    "repair": st.booleans(),
}
_active = st.dictionaries(_names, _mostly(_ints, ANY_FIELD), max_size=3)
STATE_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "device": _names,
    "state": _pick([s.value for s in UpdateState], ["bogus", "", "IDLE"]),
    "ts": _floats,
    "boot": st.text(max_size=10),
    "model": _names,
    "version": _ints,
    **{
        k: _ints
        for k in (
            "chunks_held",
            "chunks_total",
            "bytes_held",
            "size",
            "received",
            "duplicates",
            "rejections",
        )
    },
    "reason": st.text(max_size=10),
    "active": _active,
}
STATUS_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "device": _names,
    "online": st.booleans(),
    "ts": _floats,
    "boot": st.text(max_size=10),
    "agent": st.text(max_size=10),
    "active": _active,
}
EVENT_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "device": _names,
    "boot": st.text(max_size=10),
    "seq": _ints,
    "ts": _floats,
    "event": st.text(max_size=10),
    **{k: st.text(max_size=10) for k in ("reason", "detail", "topic", "model")},
    "version": _ints,
}
METRICS_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "device": _names,
    "boot": st.text(max_size=10),
    "seq": _ints,
    "ts": _floats,
    "hist": st.booleans(),
    "dropped": _ints,
    **{k: _floats for k in ("interval_s", "uptime_s", "cpu_pct", "rss_mb", "latency_p95_ms")},
    **{k: _ints for k in ("reconnects", "bytes_received", "inferences", "errors")},
    "active": _active,
    "models": st.lists(
        st.dictionaries(
            st.sampled_from(["model", "version", "inferences"]), st.one_of(_names, _ints)
        ),
        max_size=3,
    ),
}
COMMAND_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "fleet": _names,
    "device": st.one_of(_names, st.just("*")),
    "seq": _ints,
    "issued": _floats,
    "expires": _floats,
    "action": st.sampled_from(["rollback", "config", "re-request", "format-disk"]),
    "args": st.dictionaries(st.sampled_from(["model", "version"]), st.one_of(_names, _ints)),
}
ROTATION_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "version": _ints,
    "key": st.binary(min_size=30, max_size=34),
    "issued": _floats,
}
REVOCATION_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "seq": _ints,
    "revoked": st.lists(st.text(min_size=15, max_size=17), max_size=3),
    "issued": _floats,
    "expires": _floats,
}
CHAIN_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "chain": st.lists(st.binary(max_size=200), max_size=3),
}

#: schema name -> (the fields of that map, every decoder that reads such a map)
STRUCTURED: dict[str, tuple[dict[str, st.SearchStrategy[Any]], list[str]]] = {
    "envelope": (
        ENVELOPE_FIELDS,
        [
            "Envelope.decode",
            "TrustedRoot.open/manifest",
            "TrustedRoot.open/index",
            "TrustedRoot.check_certificate",
            "open_manifest",
            "open_index",
            "open_command",
            "apply_rotation",
            "apply_revocations",
        ],
    ),
    "metrics": (METRICS_FIELDS, ["MetricsSample.decode"]),
    "command": (COMMAND_FIELDS, ["Command.decode"]),
    "rotation": (ROTATION_FIELDS, ["RootRotation.decode"]),
    "revocations": (REVOCATION_FIELDS, ["Revocations.decode"]),
    "chain": (CHAIN_FIELDS, ["follow_chain"]),
    "manifest": (MANIFEST_FIELDS, ["Manifest.decode"]),
    "index": (INDEX_FIELDS, ["DeploymentIndex.decode"]),
    "key-cert": (CERT_FIELDS, ["KeyCertificate.decode"]),
    "request": (REQUEST_FIELDS, ["ChunkRequest.decode"]),
    "state": (STATE_FIELDS, ["DeviceState.decode"]),
    "status": (STATUS_FIELDS, ["DeviceStatus.decode"]),
    "event": (EVENT_FIELDS, ["DeviceEvent.decode"]),
}
assert sorted(d for _, decoders in STRUCTURED.values() for d in decoders) == MSGPACK_DECODERS


# --- arbitrary bytes, arbitrary msgpack -----------------------------------------------------------
# Every decoder sees every generated input: the same coverage per decoder as one test each, for
# a fraction of the generation cost.
@settings(FUZZ, max_examples=400)
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes(data: bytes) -> None:
    for decoder in ALL:
        _only_protocol_errors(decoder, data)


@settings(FUZZ, max_examples=400)
@given(obj=ANY)
def test_arbitrary_msgpack(obj: object) -> None:
    data = _pack(obj)
    for decoder in ALL:
        _only_protocol_errors(decoder, data)


# --- structured but wrong -------------------------------------------------------------------------
@pytest.mark.parametrize("schema", list(STRUCTURED))
@FUZZ
@given(data=st.data())
def test_structured_msgpack(schema: str, data: st.DataObject) -> None:
    fields, decoders = STRUCTURED[schema]
    payload = _pack(data.draw(_map(fields)))
    for decoder in decoders:
        _only_protocol_errors(decoder, payload)


def _signed(kind: str, fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[bytes]:
    """Validly signed envelopes over structured-but-wrong bodies: past the signature check,
    the body parser is what stands between the wire and the device."""
    return st.builds(lambda body: seal(kind, _pack(body), RELEASE, CERT), _map(fields))


@FUZZ
@given(env=_signed("manifest", MANIFEST_FIELDS))
def test_signed_garbage_manifest(env: bytes) -> None:
    _only_protocol_errors("open_manifest", env)


@FUZZ
@given(env=_signed("index", INDEX_FIELDS))
def test_signed_garbage_index(env: bytes) -> None:
    _only_protocol_errors("open_index", env)


@FUZZ
@given(body=_map(CERT_FIELDS))
def test_root_signed_garbage_certificate(body: dict[str, Any]) -> None:
    raw = _pack(body)
    cert = Envelope("key-cert", raw, ROOT.sign("key-cert", raw), None).encode()
    _only_protocol_errors("open_manifest", MANIFEST.sign(RELEASE, cert))


_magic = st.sampled_from([b"MCCH"]) | st.binary(min_size=4, max_size=4)
_index = st.sampled_from([0, 1, 2, 3, 2**32 - 1]) | st.integers(min_value=0, max_value=2**32 - 1)
_rid = st.sampled_from([RID[:16]]) | st.binary(min_size=16, max_size=16)
_payload = st.sampled_from(PIECES) | st.binary(max_size=CHUNK + 10)


@st.composite
def _frames(draw: st.DrawFn) -> bytes:
    payload = draw(_payload)
    length = draw(st.just(len(payload)) | st.integers(min_value=0, max_value=2**32 - 1))
    header = struct.pack(
        ">4sBBHII16s",
        draw(_magic),
        draw(st.sampled_from([1, 1, 0, 2])),
        draw(st.integers(0, 255)),
        draw(st.integers(0, 65535)),
        draw(_index),
        length,
        draw(_rid),
    )
    return header + payload


@pytest.mark.parametrize("decoder", ["ChunkFrame.decode", "DownloadSession.accept"])
@FUZZ
@given(frame=_frames())
def test_structured_frames(decoder: str, frame: bytes) -> None:
    _only_protocol_errors(decoder, frame)


@FUZZ
@given(index=st.integers(0, 2), position=st.integers(0, CHUNK - 101), bit=st.integers(0, 7))
def test_any_flipped_payload_bit_is_caught(index: int, position: int, bit: int) -> None:
    payload = bytearray(PIECES[index])
    payload[position] ^= 1 << bit
    frame = ChunkFrame.encode(index, RID, bytes(payload))
    exc = _only_protocol_errors("DownloadSession.accept", frame)
    assert exc is not None and exc.reason == "hash-mismatch"


@FUZZ
@given(position=st.integers(0, len(RELEASE_ENV) - 1), xor=st.integers(1, 255))
def test_any_corrupted_envelope_byte_is_refused(position: int, xor: int) -> None:
    env = bytearray(RELEASE_ENV)
    env[position] ^= xor
    exc = _only_protocol_errors("open_manifest", bytes(env))
    assert exc is not None


# --- hostile shapes -------------------------------------------------------------------------------
HOSTILE = {
    "deep-array": b"\x91" * 100_000 + b"\xc0",
    "deep-array-in-map": b"\x81\xa1v" + b"\x91" * 100_000 + b"\xc0",
    "deep-map": b"\x81\xa1a" * 50_000 + b"\xc0",
    "deep-under-64k": b"\x91" * 60_000 + b"\xc0",
    "str32": b"\xdb\xff\xff\xff\xff",
    "array32": b"\xdd\xff\xff\xff\xff",
    "bin32": b"\xc6\xff\xff\xff\xff",
    "map32": b"\xdf\xff\xff\xff\xff",
    "ext32": b"\xc9\xff\xff\xff\xff\x01",
    "str32-in-map": b"\x81\xa1v\xdb\xff\xff\xff\xff",
    "array32-in-map": b"\x82\xa1v\x01\xa6ranges\xdd\xff\xff\xff\xff",
    "bin32-in-map": b"\x82\xa1v\x01\xa4body\xc6\xff\xff\xff\xff",
    "map32-in-map": b"\x82\xa1v\x01\xa7targets\xdf\xff\xff\xff\xff",
    "array32-then-data": b"\xdd\x00\x10\x00\x00" + b"\xc0" * 100,
    "bin-len-past-end": b"\x81\xa4body\xc6\x00\x0f\xff\xff" + b"\x00" * 100,
    "timestamp-ext": b"\x81\xa1v\xd6\xff\x00\x00\x00\x01",
    "invalid-utf8": b"\x81\xa1v\xa2\xff\xfe",
    "never-used-byte": b"\xc1",
    "trailing-data": b"\x80\x80",
    "empty": b"",
}


@pytest.mark.parametrize("decoder", ALL)
@pytest.mark.parametrize("shape", sorted(HOSTILE))
def test_hostile_shapes_are_refused_with_a_typed_error(decoder: str, shape: str) -> None:
    with pytest.raises((MalformedMessage, OversizedMessage)):
        DECODERS[decoder](HOSTILE[shape])


@pytest.mark.parametrize("decoder", MSGPACK_DECODERS)
def test_past_the_envelope_cap_is_oversized(decoder: str) -> None:
    with pytest.raises(OversizedMessage):
        DECODERS[decoder](b"\x80" + b"\x00" * 1_000_000)
