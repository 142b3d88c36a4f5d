"""The delta format (protocol/delta.py, delta_encode.py, onnx_layout.py): round trips over the
kinds of change a new model version makes, and every malformed delta refused with its reason."""

from __future__ import annotations

import hashlib
import io
import struct
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import onnx
import pytest
import zstandard
from onnx import TensorProto, helper, numpy_helper

from protocol import (
    DEFAULT_LIMITS,
    DeltaRef,
    Limits,
    MalformedMessage,
    Manifest,
    ProtocolError,
    Topics,
)
from protocol.delta import (
    MAGIC,
    OP_COPY,
    OP_END,
    OP_LIT,
    OP_REST,
    OP_XOR,
    DeltaBaseMismatch,
    DeltaError,
    DeltaHeader,
    DeltaResultMismatch,
    apply_delta,
    from_planes,
    read_header,
    record_prefix,
    to_planes,
    width_zlen,
    xor_bytes,
)
from protocol.delta_encode import DeltaOptions, encode_delta
from protocol.onnx_layout import tensor_spans

SMALL = replace(DEFAULT_LIMITS, max_delta_segment_bytes=64 * 1024)


def model_bytes(tensors: dict[str, np.ndarray], *, doc: str = "model") -> bytes:
    """An ONNX file whose initializers are ``tensors`` (an Identity graph over the first)."""
    first = next(iter(tensors))
    graph = helper.make_graph(
        [helper.make_node("Identity", [first], ["y"])],
        "g",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(tensors[first].shape))],
        initializer=[numpy_helper.from_array(a, name) for name, a in tensors.items()],
    )
    model = helper.make_model(graph, producer_name="modelcast")
    model.doc_string = doc
    return model.SerializeToString()


def weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "w1": rng.standard_normal((256, 300), dtype=np.float32),
        "w2": rng.standard_normal((300, 64), dtype=np.float32),
        "b2": rng.standard_normal((64,), dtype=np.float32),
        "steps": np.arange(40, dtype=np.int64),
        "half": rng.standard_normal((100,), dtype=np.float32).astype(np.float16),
    }


def make(base: bytes, target: bytes, limits: Limits = SMALL, **options: object) -> bytes:
    return b"".join(encode_delta(base, target, options=DeltaOptions(**options), limits=limits))  # type: ignore[arg-type]


def base_reader(base: bytes) -> Callable[[int, int], bytes]:
    return lambda offset, length: base[offset : offset + length]


def apply(delta: bytes, base: bytes, limits: Limits = SMALL) -> bytes:
    pieces = apply_delta(
        io.BytesIO(delta).read, base_reader(base), base_size=len(base), limits=limits
    )
    return b"".join(pieces)


# --- the layout --------------------------------------------------------------------------
def test_tensor_spans_are_where_onnx_keeps_raw_data() -> None:
    data = model_bytes(weights())
    spans = {s.name: s for s in tensor_spans(data)}
    for init in onnx.load_from_string(data).graph.initializer:
        span = spans[init.name]
        assert data[span.offset : span.end] == init.raw_data
    assert (spans["w1"].width, spans["steps"].width, spans["half"].width) == (4, 8, 2)


@pytest.mark.parametrize("data", [b"\x0a\xff\xff\xff\xff\x0f", b"\x0f", b"\x3a\x05ab"])
def test_tensor_spans_refuse_broken_protobuf(data: bytes) -> None:
    with pytest.raises(MalformedMessage):
        tensor_spans(data)


# --- round trips -------------------------------------------------------------------------
def scaled(tensors: dict[str, np.ndarray], names: set[str], noise: float, seed: int = 1):
    rng = np.random.default_rng(seed)
    out = dict(tensors)
    for name in names:
        a = tensors[name]
        out[name] = (a * (1 + noise * rng.standard_normal(a.shape))).astype(a.dtype)
    return out


def round_trip(base: bytes, target: bytes, **options: object) -> bytes:
    delta = make(base, target, **options)
    assert apply(delta, base) == target
    header = read_header(io.BytesIO(delta).read)
    assert header.target_sha256 == hashlib.sha256(target).digest()
    assert header.base_sha256 == hashlib.sha256(base).digest()
    return delta


def test_identical_weights_make_a_tiny_delta() -> None:
    base = model_bytes(weights())
    target = model_bytes(weights(), doc="model, released again")
    assert len(round_trip(base, target)) < 0.01 * len(target)


def test_one_changed_tensor_costs_about_that_tensor() -> None:
    w = weights()
    base = model_bytes(w)
    target = model_bytes(scaled(w, {"b2"}, 1e-2))
    assert len(round_trip(base, target)) < 0.01 * len(target)


def test_every_weight_changed_slightly_compresses_and_planes_help() -> None:
    w = weights()
    base = model_bytes(w)
    target = model_bytes(scaled(w, {"w1", "w2", "b2"}, 1e-3))
    with_planes = round_trip(base, target)
    without = round_trip(base, target, planes=False)
    assert len(with_planes) < 0.7 * len(target)
    assert len(with_planes) < len(without)


def test_new_removed_and_resized_tensors() -> None:
    w = weights()
    target_w = {k: v for k, v in w.items() if k != "w2"}
    target_w["w1"] = w["w1"][:100]  # resized: a literal
    target_w["extra"] = np.ones((50, 7), dtype=np.float32)  # new: a literal
    round_trip(model_bytes(w), model_bytes(target_w))


def test_files_that_are_not_onnx_and_other_sizes() -> None:
    rng = np.random.default_rng(3)
    base = rng.bytes(200_000)
    round_trip(base, base[:150_000] + b"tail")
    round_trip(base, base, tensors=False)
    round_trip(base, bytes(len(base)), tensors=False, planes=False)
    round_trip(model_bytes(weights()), base)


def test_applying_holds_segments_not_files() -> None:
    w = weights()
    base, target = model_bytes(w), model_bytes(scaled(w, {"w1"}, 1e-3))
    delta = make(base, target)
    pieces = apply_delta(
        io.BytesIO(delta).read, base_reader(base), base_size=len(base), limits=SMALL
    )
    rest = read_header(io.BytesIO(delta).read).rest_size
    assert max(len(p) for p in pieces) <= max(SMALL.max_delta_segment_bytes, rest)


def test_planes_and_xor_helpers() -> None:
    data = bytes(range(16)) * 4
    for width in (1, 2, 4, 8):
        assert from_planes(to_planes(data, width), width) == data
    assert to_planes(bytes([1, 2, 3, 4, 5, 6, 7, 8]), 4) == bytes([1, 5, 2, 6, 3, 7, 4, 8])
    assert xor_bytes(b"\x0f\xf0", b"\xff\xff") == b"\xf0\x0f"


def test_too_much_rest_gets_no_delta() -> None:
    data = np.random.default_rng(0).bytes(100_000)
    with pytest.raises(DeltaError, match="not tensors"):
        make(data, data[::-1], limits=replace(SMALL, max_delta_rest_bytes=50_000))


# --- refusals ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pair() -> tuple[bytes, bytes, bytes]:
    w = weights()
    base = model_bytes(w)
    target = model_bytes(scaled(w, {"w2", "b2"}, 1e-2), doc="v2")
    return base, target, make(base, target)


def refused(delta: bytes, base: bytes, error: type[DeltaError] = DeltaError) -> DeltaError:
    with pytest.raises(error) as caught:
        apply(delta, base)
    return caught.value


def test_a_truncated_delta_is_refused_wherever_it_is_cut(pair) -> None:
    base, _, delta = pair
    for cut in (0, 5, 12, 40, len(delta) // 3, len(delta) // 2, len(delta) - 1):
        assert refused(delta[:cut], base).reason == "delta-malformed"


def test_a_delta_for_another_base_is_refused(pair) -> None:
    base, _, delta = pair
    assert refused(delta, base + b"x", DeltaBaseMismatch).reason == "delta-base-mismatch"
    other = bytearray(base)
    other[len(other) // 2] ^= 0xFF  # same size, one bit flipped in a tensor
    assert refused(delta, bytes(other), DeltaResultMismatch).reason == "delta-result-mismatch"


def test_bad_magic_and_oversized_header(pair) -> None:
    base, _, delta = pair
    refused(b"NOTDELTA" + delta[8:], base)
    refused(MAGIC + struct.pack("<I", 2 * DEFAULT_LIMITS.max_delta_header_bytes), base)


def header_for(base: bytes, target: bytes, **changes: object) -> DeltaHeader:
    header = DeltaHeader(
        base_size=len(base),
        base_sha256=hashlib.sha256(base).digest(),
        target_size=len(target),
        target_sha256=hashlib.sha256(target).digest(),
        dictionary=(),
        rest_size=0,
        rest_zlen=0,
    )
    return replace(header, **changes)  # type: ignore[arg-type]


def crafted(base: bytes, target: bytes, records: bytes, **changes: object) -> bytes:
    return header_for(base, target, **changes).encode() + records


def frame(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


def test_crafted_records_are_each_refused(pair) -> None:
    base, _, _ = pair
    target = base[:1000]
    bomb = frame(bytes(SMALL.max_delta_segment_bytes * 4))
    lit_bomb = record_prefix(OP_LIT, 1000) + width_zlen(1, len(bomb)) + bomb
    cases = {
        "copy past the base": record_prefix(OP_COPY, len(base) - 10, 1000),
        "unknown record": bytes([9]),
        "rest with none": record_prefix(OP_REST, 1000),
        "segment over the cap": record_prefix(OP_LIT, SMALL.max_delta_segment_bytes + 8),
        "width not dividing": record_prefix(OP_LIT, 999) + width_zlen(4, 10) + b"x" * 10,
        "odd width": record_prefix(OP_LIT, 1000) + width_zlen(3, 10) + b"x" * 10,
        "decompression bomb": lit_bomb,
        "not zstd": record_prefix(OP_XOR, 0, 1000) + width_zlen(1, 10) + b"x" * 10,
        "writes too much": record_prefix(OP_COPY, 0, 1000) * 2 + bytes([OP_END]),
        "writes too little": record_prefix(OP_COPY, 0, 500) + bytes([OP_END]),
        "no end": record_prefix(OP_COPY, 0, 1000),
    }
    for what, records in cases.items():
        error = refused(crafted(base, target, records), base)
        assert error.reason == "delta-malformed", what
    good = record_prefix(OP_COPY, 0, 1000) + bytes([OP_END])
    assert apply(crafted(base, target, good), base) == target


def test_crafted_headers_are_each_refused(pair) -> None:
    base, target, _ = pair
    end = bytes([OP_END])
    for changes in (
        {"base_sha256": b"short"},
        {"target_size": 0},
        {"dictionary": ((len(base) - 4, 100),)},
        {"rest_size": SMALL.max_delta_rest_bytes + 1},
    ):
        body = crafted(base, target, end, **changes)
        refused(body, base)
    raw = MAGIC + struct.pack("<I", 3) + b"\x81\xa1v"  # a map whose value is missing
    refused(raw, base)


def test_the_rest_frame_must_hold_what_the_header_says(pair) -> None:
    base, _, _ = pair
    target = b"hello world"
    rest = frame(target)
    ok = crafted(
        base,
        target,
        rest + record_prefix(OP_REST, 11) + bytes([OP_END]),
        rest_size=11,
        rest_zlen=len(rest),
    )
    assert apply(ok, base) == target

    def with_rest(rest_size: int, rest_record: int) -> bytes:
        records = rest + record_prefix(OP_REST, rest_record) + bytes([OP_END])
        return crafted(base, target, records, rest_size=rest_size, rest_zlen=len(rest))

    refused(with_rest(5, 11), base)  # the frame holds more than the header says
    refused(with_rest(11, 12), base)  # a REST record past the rest


# --- the manifest's deltas ---------------------------------------------------------------
def delta_ref(size: int = 5000, chunk_size: int = 4096, **changes: object) -> DeltaRef:
    n = (size + chunk_size - 1) // chunk_size
    ref = DeltaRef(
        base=b"b" * 32,
        base_version=1,
        base_sha256=b"s" * 32,
        size=size,
        sha256=b"d" * 32,
        chunks=b"c" * 32 * n,
    )
    return replace(ref, **changes)  # type: ignore[arg-type]


def release(**changes: object) -> Manifest:
    m = Manifest(
        fleet="f",
        name="m",
        version=2,
        size=100_000,
        sha256=b"t" * 32,
        chunk_size=4096,
        chunks=b"h" * 32 * 25,
        created=1.0,
        expires=2.0,
    )
    return replace(m, **changes)  # type: ignore[arg-type]


def test_a_manifest_carries_its_deltas_signed_and_each_stream_has_its_own_id() -> None:
    plain = release()
    offered = release(deltas=(delta_ref(), delta_ref(base=b"o" * 32, base_version=0)))
    assert Manifest.decode(offered.encode()) == offered
    assert Manifest.decode(plain.encode()).deltas == ()
    # signed, but not part of the release id: the same bytes, and an edge older than deltas
    # (which ignores the field) computes the same id
    assert offered.release_id == plain.release_id
    assert Manifest.decode(offered.encode()).release_id == plain.release_id
    stream = offered.delta_stream(offered.deltas[0])
    other = offered.delta_stream(offered.deltas[1])
    assert (stream.size, stream.sha256, stream.n_chunks) == (5000, b"d" * 32, 2)
    assert len({stream.release_id, other.release_id, offered.release_id}) == 3
    assert stream.stream == "~delta-" + (b"b" * 8).hex()
    topics = Topics("f")
    assert topics.chunk_block("m", 2, 0, None, stream.stream).endswith(f"/m/2/{stream.stream}/0")
    assert topics.chunk_prefix("m", 2, "int8", stream.stream).endswith(f"/int8/{stream.stream}/")
    with pytest.raises(ValueError):
        topics.chunk_block("m", 2, 0, None, "../x")


@pytest.mark.parametrize(
    "bad",
    [
        {"base": b"short"},
        {"sha256": b"short"},
        {"chunks": b"c" * 32 * 5},
        {"size": 0},
    ],
)
def test_a_malformed_delta_ref_is_refused(bad: dict[str, object]) -> None:
    m = release(deltas=(delta_ref(**bad),))
    with pytest.raises(ProtocolError):
        Manifest.decode(m.encode())


def test_too_many_deltas_are_refused() -> None:
    m = release(deltas=(delta_ref(),) * (DEFAULT_LIMITS.max_deltas + 1))
    with pytest.raises(ProtocolError, match="deltas"):
        Manifest.decode(m.encode())


def test_the_numpy_kernel_makes_what_the_pure_one_makes() -> None:
    from protocol.delta import unplane as pure
    from runtime.delta_kernel import unplane as fast

    rng = np.random.default_rng(5)
    for width in (1, 2, 4, 8):
        planes, base = rng.bytes(width * 1000), rng.bytes(width * 1000)
        assert fast(planes, base, width) == pure(planes, base, width)
        assert fast(planes, None, width) == pure(planes, None, width)
    w = weights()
    base, target = model_bytes(w), model_bytes(scaled(w, {"w1", "half"}, 1e-3))
    delta = make(base, target)
    pieces = apply_delta(
        io.BytesIO(delta).read, base_reader(base), base_size=len(base), limits=SMALL, kernel=fast
    )
    assert b"".join(pieces) == target
