"""The model kind in the manifest and the text-model spec in a model file's metadata."""

from __future__ import annotations

import contextlib
import json
from dataclasses import replace

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import (
    DEFAULT_LIMITS,
    MalformedMessage,
    Manifest,
    OversizedMessage,
    ProtocolError,
    hash_chunks,
)
from protocol.textmodel import (
    KIND_TENSORS,
    KIND_TEXT_EMBEDDING,
    META_DIMENSIONS,
    META_KIND,
    META_MAX_TOKENS,
    META_POOLING,
    META_TOKENIZER,
    TextModelSpec,
    model_kind_of,
    parse_text_spec,
)

TOKENIZER = json.dumps({"version": "1.0", "model": {"type": "WordPiece", "vocab": {"a": 0}}})


def manifest(**changes: object) -> Manifest:
    whole, hashes, size = hash_chunks([b"x" * 4096, b"y" * 100])
    m = Manifest("default", "m", 3, size, whole, 4096, hashes, 1000.0, 2000.0)
    return replace(m, **changes)  # type: ignore[arg-type]


def test_a_tensor_manifest_has_no_model_kind_field() -> None:
    assert "model_kind" not in msgpack.unpackb(manifest().encode(), raw=False)
    assert Manifest.decode(manifest().encode()).model_kind == KIND_TENSORS


def test_a_text_manifest_carries_its_kind_and_parses_back() -> None:
    m = manifest(model_kind=KIND_TEXT_EMBEDDING)
    obj = msgpack.unpackb(m.encode(), raw=False)
    assert obj["model_kind"] == KIND_TEXT_EMBEDDING
    assert list(obj).index("model_kind") == list(obj).index("format") + 1
    assert Manifest.decode(m.encode()) == m


def test_the_kind_is_part_of_the_release_identity() -> None:
    assert manifest(model_kind=KIND_TEXT_EMBEDDING).release_id != manifest().release_id
    assert manifest(model_kind=KIND_TENSORS).release_id == manifest().release_id


@pytest.mark.parametrize("kind", ["text", "", "TEXT-EMBEDDING", 7])
def test_an_unknown_kind_is_refused(kind: object) -> None:
    obj = msgpack.unpackb(manifest().encode(), raw=False)
    obj["model_kind"] = kind
    with pytest.raises(MalformedMessage):
        Manifest.decode(msgpack.packb(obj, use_bin_type=True))


def spec() -> TextModelSpec:
    return TextModelSpec(tokenizer_json=TOKENIZER, max_tokens=256, dimensions=384, source="s")


def test_spec_metadata_round_trip() -> None:
    meta = spec().metadata()
    assert meta[META_KIND] == KIND_TEXT_EMBEDDING
    assert model_kind_of(meta) == KIND_TEXT_EMBEDDING
    assert parse_text_spec(meta) == spec()


def test_a_file_without_a_kind_is_plain_tensors() -> None:
    assert model_kind_of({}) == KIND_TENSORS
    assert model_kind_of({"other": "x"}) == KIND_TENSORS
    with pytest.raises(MalformedMessage):
        model_kind_of({META_KIND: "audio"})


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({META_KIND: KIND_TENSORS}, "is 'tensors'"),
        ({META_TOKENIZER: ""}, "tokenizer is missing"),
        ({META_TOKENIZER: "{nope"}, "not JSON"),
        ({META_TOKENIZER: "[1, 2]"}, "no 'model'"),
        ({META_MAX_TOKENS: "-3"}, "max_tokens must be an integer"),
        ({META_MAX_TOKENS: "1"}, "max_tokens must be an integer"),
        ({META_MAX_TOKENS: "lots"}, "max_tokens must be an integer"),
        ({META_MAX_TOKENS: "2\u00b2"}, "max_tokens must be an integer"),
        ({META_DIMENSIONS: "0"}, "dimensions must be an integer"),
        ({META_POOLING: "cls"}, "pooling 'cls'"),
    ],
)
def test_a_broken_spec_is_refused_with_the_reason(change: dict[str, str], match: str) -> None:
    with pytest.raises(MalformedMessage, match=match):
        parse_text_spec({**spec().metadata(), **change})


def test_a_missing_number_is_refused() -> None:
    meta = spec().metadata()
    del meta[META_DIMENSIONS]
    with pytest.raises(MalformedMessage, match="dimensions is missing"):
        parse_text_spec(meta)


def test_a_huge_tokenizer_is_refused_before_parsing() -> None:
    huge = '{"model": "' + "x" * DEFAULT_LIMITS.max_tokenizer_bytes + '"}'
    with pytest.raises(OversizedMessage):
        parse_text_spec({**spec().metadata(), META_TOKENIZER: huge})


META_KEYS = st.sampled_from(
    [META_KIND, META_TOKENIZER, META_MAX_TOKENS, META_DIMENSIONS, META_POOLING, "other"]
)


@settings(max_examples=300, deadline=None, database=None)
@given(
    st.dictionaries(
        META_KEYS,
        st.one_of(
            st.text(max_size=40),
            st.sampled_from([KIND_TEXT_EMBEDDING, KIND_TENSORS, "256", "384", "mean", TOKENIZER]),
        ),
    )
)
def test_any_metadata_parses_or_is_refused_as_protocol_error(meta: dict[str, str]) -> None:
    for decode in (model_kind_of, parse_text_spec):
        for candidate in ({**spec().metadata(), **meta}, meta):
            with contextlib.suppress(ProtocolError):
                decode(candidate)
