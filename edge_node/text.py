"""Serving a text-embedding model: texts in, one L2-normalised vector per text out.

The tokenizer comes from the model file's own metadata (signed with it; see
protocol/textmodel.py) and runs on the device with Hugging Face ``tokenizers``, imported only
when a text model is used, so an edge without it still runs plain tensor models.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from protocol import ProtocolError
from protocol.textmodel import (
    ATTENTION_MASK,
    INPUT_IDS,
    KIND_TENSORS,
    KIND_TEXT_EMBEDDING,
    OUTPUT_EMBEDDING,
    TextModelSpec,
    parse_text_spec,
)
from runtime import model_check
from runtime.errors import ModelCheckError

from .errors import TextModelError

#: Texts per call and characters per text the edge accepts (the endpoint's own caps).
MAX_TEXTS = 256
MAX_TEXT_CHARS = 20_000
#: What the activation check embeds: a text model must answer this before it goes live.
PROBE_TEXT = "modelcast checks that this model answers."

TOKENIZERS_HINT = "pip install 'modelcast[text]' (Hugging Face tokenizers)"


def session_metadata(session: Any) -> dict[str, str]:
    return dict(session.get_modelmeta().custom_metadata_map)


def session_kind(session: Any) -> str:
    """The kind the loaded file declares (``TextModelError`` if unknown)."""
    try:
        return model_check.session_kind(session)
    except ModelCheckError as exc:
        raise TextModelError(str(exc)) from None


class TextEmbedder:
    """Tokenises and runs one loaded text-embedding session. Thread-safe."""

    def __init__(self, session: Any) -> None:
        try:
            self.spec: TextModelSpec = parse_text_spec(session_metadata(session))
        except ProtocolError as exc:
            raise TextModelError(f"not a usable text model: {exc}") from None
        names = {i.name for i in session.get_inputs()}
        outputs = {o.name for o in session.get_outputs()}
        if names != {INPUT_IDS, ATTENTION_MASK} or OUTPUT_EMBEDDING not in outputs:
            raise TextModelError(
                f"a text model takes {INPUT_IDS} and {ATTENTION_MASK} and returns "
                f"{OUTPUT_EMBEDDING}; this one takes {sorted(names)}, returns {sorted(outputs)}"
            )
        self.session = session
        self._tokenizer = _load_tokenizer(self.spec)
        # encode_batch fans out over its own thread pool: one batch at a time keeps concurrent
        # requests from oversubscribing a small device's cores
        self._lock = threading.Lock()

    @property
    def dimensions(self) -> int:
        return self.spec.dimensions

    def tokenize(self, texts: list[str]) -> dict[str, np.ndarray]:
        check_texts(texts)
        with self._lock:
            encodings = self._tokenizer.encode_batch(texts)
        return {
            INPUT_IDS: np.array([e.ids for e in encodings], dtype=np.int64),
            ATTENTION_MASK: np.array([e.attention_mask for e in encodings], dtype=np.int64),
        }

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        (vectors,) = self.session.run([OUTPUT_EMBEDDING], feeds)
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (feeds[INPUT_IDS].shape[0], self.spec.dimensions):
            raise TextModelError(
                f"the model answered shape {vectors.shape}, expected "
                f"({feeds[INPUT_IDS].shape[0]}, {self.spec.dimensions})"
            )
        return vectors

    def embed(self, texts: list[str]) -> np.ndarray:
        """[len(texts), dimensions] float32, each row of unit length."""
        return self.run(self.tokenize(texts))

    def check(self) -> None:
        """Embed ``PROBE_TEXT``: a finite vector of unit length, or ``TextModelError``."""
        vector = self.embed([PROBE_TEXT])[0]
        norm = float(np.linalg.norm(vector))
        if not np.all(np.isfinite(vector)) or abs(norm - 1.0) > 1e-3:
            raise TextModelError(f"the probe text gave a vector of norm {norm}, not 1")


def check_texts(texts: object) -> list[str]:
    if not isinstance(texts, list) or not texts:
        raise TextModelError("'texts' must be a non-empty list of strings")
    if len(texts) > MAX_TEXTS:
        raise TextModelError(f"at most {MAX_TEXTS} texts per call, got {len(texts)}")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TextModelError(f"texts[{i}] must be a string, got {type(text).__name__}")
        if len(text) > MAX_TEXT_CHARS:
            raise TextModelError(f"texts[{i}] is longer than {MAX_TEXT_CHARS} characters")
    return texts


def _load_tokenizer(spec: TextModelSpec) -> Any:
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise TextModelError(
            f"this device cannot tokenise: {TOKENIZERS_HINT} to serve text models"
        ) from None
    try:
        tokenizer = Tokenizer.from_str(spec.tokenizer_json)
    except Exception as exc:  # tokenizers raises its own Exception subclass
        raise TextModelError(f"the embedded tokenizer does not load: {exc}") from None
    # The model's rules, not whatever tokenizer.json was saved with (MiniLM's pads to 128).
    tokenizer.enable_truncation(spec.max_tokens)
    tokenizer.enable_padding()
    return tokenizer


def load_embedder(path: Path, threads: int = 1) -> TextEmbedder:
    """A ready embedder for the model file at ``path`` (the ``modelcast embed`` path)."""
    from .activation import load_session

    session = load_session(Path(path), threads)
    kind = session_kind(session)
    if kind != KIND_TEXT_EMBEDDING:
        raise TextModelError(
            f"{path} is a {kind} model, not {KIND_TEXT_EMBEDDING}"
            + (": build one with 'modelcast models build minilm'" if kind == KIND_TENSORS else "")
        )
    return TextEmbedder(session)
