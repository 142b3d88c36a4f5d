"""The ONNX MiniLM against an independent implementation of the same model: Hugging Face
``transformers`` (BertModel on torch, CPU) with sentence-transformers' mean pooling and L2
normalisation written out. Skipped where torch or transformers is not installed (CI installs
neither: torch is a large download); run it with ``pip install torch==2.13.0 transformers``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_node.text import load_embedder
from modelcast.textmodels.samples import SENTENCES
from modelcast.textmodels.sources import load_minilm
from tests.support.minilm import BuiltMiniLM

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

#: A few more shapes of input: very short, punctuation, casing, accents, numbers, long.
EXTRA = (
    "Hi",
    "ÉCOLE d'été à Zürich: 3 élèves, 12.5% de réussite!",
    "The quick brown fox jumps over the lazy dog. " * 12,
)


def reference_embeddings(weights_dir: Path, texts: list[str]) -> np.ndarray:
    tokenizer = transformers.BertTokenizerFast(tokenizer_file=str(weights_dir / "tokenizer.json"))
    model = transformers.BertModel.from_pretrained(str(weights_dir), add_pooling_layer=False)
    model.eval()
    batch = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=1).numpy()


def test_onnx_minilm_matches_the_transformers_reference(
    minilm: BuiltMiniLM, tmp_path: Path
) -> None:
    files = load_minilm()
    (tmp_path / "model.safetensors").write_bytes(files.safetensors)
    (tmp_path / "config.json").write_text((minilm.dir / "config.json").read_text())
    (tmp_path / "tokenizer.json").write_text(files.tokenizer_json, encoding="utf-8")
    texts = [*SENTENCES, *EXTRA]
    reference = reference_embeddings(tmp_path, texts)
    fp32 = load_embedder(minilm.fp32).embed(texts)
    int8 = load_embedder(minilm.int8).embed(texts)
    fp32_cos = np.sum(reference * fp32, axis=1)
    int8_cos = np.sum(reference * int8, axis=1)
    print(f"\nfp32 vs transformers: min cosine {fp32_cos.min():.6f} over {len(texts)} texts")
    print(f"int8 vs transformers: min cosine {int8_cos.min():.4f}, mean {int8_cos.mean():.4f}")
    assert fp32_cos.min() >= 0.999, dict(zip(texts, fp32_cos.tolist(), strict=True))
    assert int8_cos.min() >= 0.95, dict(zip(texts, int8_cos.tolist(), strict=True))
