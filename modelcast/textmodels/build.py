"""``modelcast models build``: a text model as one self-contained ONNX file, plus its tokenizer.

DIR/model.onnx carries the tokenizer and how to use it in its metadata (protocol/textmodel.py),
so the file alone is a complete, signable release; DIR/tokenizer.json and DIR/config.json are
written beside it for other tools.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import onnx

from protocol.textmodel import TextModelSpec
from runtime.files import write_atomic, write_json_atomic
from runtime.onnxmeta import set_metadata

from .bert_onnx import BertConfig, build_bert_embedding
from .sources import MINILM_MAX_TOKENS, load_minilm

log = logging.getLogger("modelcast.models")

MODEL_FILE = "model.onnx"


@dataclass(frozen=True)
class BuiltModel:
    name: str
    model: Path
    tokenizer: Path
    dimensions: int
    max_tokens: int
    origin: str


def build_minilm(
    out_dir: Path, *, weights: Path | None = None, max_tokens: int = MINILM_MAX_TOKENS
) -> BuiltModel:
    """all-MiniLM-L6-v2 (384-dim sentence embeddings) as DIR/model.onnx, fp32."""
    from safetensors.numpy import load as load_safetensors  # the `models` extra

    files = load_minilm(weights)
    config = BertConfig.from_json(files.config)
    if not 2 <= max_tokens <= config.max_position_embeddings:
        raise ValueError(f"max tokens must be 2..{config.max_position_embeddings}")
    model = build_bert_embedding(
        load_safetensors(files.safetensors), config, graph_name="all_MiniLM_L6_v2"
    )
    spec = TextModelSpec(
        tokenizer_json=files.tokenizer_json,
        max_tokens=max_tokens,
        dimensions=config.hidden_size,
        source=f"sentence-transformers/all-MiniLM-L6-v2 model.safetensors sha256 {files.sha256}",
    )
    set_metadata(model, spec.metadata())
    onnx.checker.check_model(model)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / MODEL_FILE
    write_atomic(model_path, model.SerializeToString())
    tokenizer_path = out_dir / "tokenizer.json"
    write_atomic(tokenizer_path, files.tokenizer_json.encode("utf-8"))
    write_json_atomic(out_dir / "config.json", files.config)
    log.info(
        "built all-MiniLM-L6-v2 from %s: %s (%d bytes, %d-dim, up to %d tokens)",
        files.origin,
        model_path,
        model_path.stat().st_size,
        config.hidden_size,
        max_tokens,
    )
    return BuiltModel(
        "minilm", model_path, tokenizer_path, config.hidden_size, max_tokens, files.origin
    )


BUILDERS: dict[str, Callable[..., BuiltModel]] = {"minilm": build_minilm}
