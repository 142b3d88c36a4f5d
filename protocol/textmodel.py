"""What kind of model a release is, and the contract of a text-embedding model file.

A release is either plain ``tensors`` (callers feed named arrays) or a ``text-embedding``
model: texts in, one L2-normalised vector per text out, tokenised on the device; or, asked for
explicitly, a ``file``: any bytes, delivered, verified and activated like a model, but never
loaded or run. The manifest records the kind (``model_kind``, see manifest.py) so the edge knows
how to serve the release. An ONNX file declares one of the first two in its metadata.

A text-embedding ONNX file is self-contained: its ``metadata_props`` carry the tokenizer
(``tokenizer.json`` of Hugging Face ``tokenizers``) and how to use it. The file is hashed and
signed as a whole, so the tokenizer travels signed with the model and can never be paired with
the wrong one. The graph takes ``input_ids`` and ``attention_mask`` (int64, [batch, tokens]) and
returns ``embedding`` (float32, [batch, dimensions]), already pooled and normalised.

Pure: this module parses a ``{key: value}`` map that the caller read from the file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import MalformedMessage, OversizedMessage
from .limits import DEFAULT_LIMITS, Limits

KIND_TENSORS = "tensors"
KIND_TEXT_EMBEDDING = "text-embedding"
KIND_FILE = "file"
#: what an ONNX file may declare (``META_KIND``)
ONNX_KINDS = (KIND_TENSORS, KIND_TEXT_EMBEDDING)
#: what a release may be: an ONNX model of one of ``ONNX_KINDS``, or a file that is never run
MODEL_KINDS = (*ONNX_KINDS, KIND_FILE)

META_KIND = "modelcast.kind"
META_TOKENIZER = "modelcast.tokenizer"
META_MAX_TOKENS = "modelcast.max_tokens"
META_DIMENSIONS = "modelcast.dimensions"
META_POOLING = "modelcast.pooling"
META_NORMALIZE = "modelcast.normalize"
#: Free text: where the weights came from (name and sha256 of the source file).
META_SOURCE = "modelcast.source"

INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
OUTPUT_EMBEDDING = "embedding"

POOLING_MEAN = "mean"
NORMALIZE_L2 = "l2"

#: A tokenizer.json of a large multilingual vocabulary is ~17 MB; refuse anything far beyond.


def check_model_kind(
    value: object, what: str = "model kind", kinds: tuple[str, ...] = MODEL_KINDS
) -> str:
    if value not in kinds:
        raise MalformedMessage(f"{what} must be one of {', '.join(kinds)}, got {value!r}")
    return str(value)


def model_kind_of(meta: Mapping[str, str]) -> str:
    """The kind a model file declares; a file that declares none is plain ``tensors``."""
    return check_model_kind(meta.get(META_KIND, KIND_TENSORS), f"metadata {META_KIND}", ONNX_KINDS)


@dataclass(frozen=True)
class TextModelSpec:
    """How to serve a text-embedding model: its tokenizer and the shape of its answer."""

    tokenizer_json: str
    max_tokens: int
    dimensions: int
    pooling: str = POOLING_MEAN
    normalize: str = NORMALIZE_L2
    source: str = ""

    def metadata(self) -> dict[str, str]:
        """The ``metadata_props`` that declare this spec (``parse_text_spec`` reads them back)."""
        meta = {
            META_KIND: KIND_TEXT_EMBEDDING,
            META_MAX_TOKENS: str(self.max_tokens),
            META_DIMENSIONS: str(self.dimensions),
            META_POOLING: self.pooling,
            META_NORMALIZE: self.normalize,
            META_TOKENIZER: self.tokenizer_json,
        }
        if self.source:
            meta[META_SOURCE] = self.source
        return meta


def _int(meta: Mapping[str, str], key: str, low: int, high: int) -> int:
    raw = meta.get(key)
    if raw is None:
        raise MalformedMessage(f"text model: metadata {key} is missing")
    if not (isinstance(raw, str) and raw.isascii() and raw.isdigit() and low <= int(raw) <= high):
        raise MalformedMessage(f"text model: metadata {key} must be an integer {low}..{high}")
    return int(raw)


def parse_text_spec(meta: Mapping[str, str], limits: Limits = DEFAULT_LIMITS) -> TextModelSpec:
    """The spec of a text-embedding model file, from its metadata; ``MalformedMessage`` (or
    ``OversizedMessage`` for a huge tokenizer) if the file is not a usable text model."""
    kind = model_kind_of(meta)
    if kind != KIND_TEXT_EMBEDDING:
        raise MalformedMessage(f"text model: metadata {META_KIND} is {kind!r}")
    tokenizer = meta.get(META_TOKENIZER)
    if not isinstance(tokenizer, str) or not tokenizer:
        raise MalformedMessage(f"text model: metadata {META_TOKENIZER} is missing")
    if len(tokenizer) > limits.max_tokenizer_bytes:
        raise OversizedMessage(
            f"text model: tokenizer of {len(tokenizer)} bytes exceeds {limits.max_tokenizer_bytes}"
        )
    try:
        parsed = json.loads(tokenizer)
    except ValueError as exc:
        raise MalformedMessage(f"text model: tokenizer is not JSON ({exc})") from None
    if not isinstance(parsed, dict) or "model" not in parsed:
        raise MalformedMessage("text model: tokenizer JSON has no 'model'")
    pooling = meta.get(META_POOLING, POOLING_MEAN)
    if pooling != POOLING_MEAN:
        raise MalformedMessage(f"text model: pooling {pooling!r} is not {POOLING_MEAN!r}")
    normalize = meta.get(META_NORMALIZE, NORMALIZE_L2)
    if normalize != NORMALIZE_L2:
        raise MalformedMessage(f"text model: normalize {normalize!r} is not {NORMALIZE_L2!r}")
    return TextModelSpec(
        tokenizer_json=tokenizer,
        max_tokens=_int(meta, META_MAX_TOKENS, 2, limits.max_text_tokens),
        dimensions=_int(meta, META_DIMENSIONS, 1, limits.max_embedding_dimensions),
        pooling=pooling,
        normalize=normalize,
        source=str(meta.get(META_SOURCE, "")),
    )
