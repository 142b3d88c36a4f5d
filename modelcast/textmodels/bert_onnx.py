"""A BERT sentence-embedding encoder as an ONNX graph, written op by op from its weights.

The graph is what Hugging Face's ``BertModel`` computes, followed by what sentence-transformers
adds for all-MiniLM-L6-v2 (mean pooling over the real tokens, then L2 normalisation):

    embeddings: word[input_ids] + position[0..n) + token_type[0], LayerNorm
    N x layer:  self-attention (H heads, additive mask), dense, residual, LayerNorm,
                dense (GELU, exact erf form), dense, residual, LayerNorm
    pooling:    sum(hidden * mask) / max(sum(mask), 1e-9), then x / max(||x||, 1e-12)

Inputs ``input_ids`` and ``attention_mask`` (int64, [batch, tokens]); output ``embedding``
(float32, [batch, hidden]). Single-segment input only: the token-type-0 row is folded into the
position table at build time (the sum is the same), so no ``token_type_ids`` input is needed.
Linear weights are stored transposed ([in, out]) for MatMul, which is also the form
onnxruntime's dynamic quantizer turns into int8 MatMuls.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from protocol.textmodel import ATTENTION_MASK, INPUT_IDS, OUTPUT_EMBEDDING

OPSET = 17  # LayerNormalization is an ONNX op from 17 on
IR_VERSION = 8


@dataclass(frozen=True)
class BertConfig:
    """The fields of a Hugging Face BERT ``config.json`` that shape the graph."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> BertConfig:
        if obj.get("model_type", "bert") != "bert":
            raise ValueError(f"config.json: model_type {obj.get('model_type')!r} is not 'bert'")
        if obj.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError("config.json: only absolute position embeddings are supported")
        config = cls(
            vocab_size=int(obj["vocab_size"]),
            hidden_size=int(obj["hidden_size"]),
            num_hidden_layers=int(obj["num_hidden_layers"]),
            num_attention_heads=int(obj["num_attention_heads"]),
            intermediate_size=int(obj["intermediate_size"]),
            max_position_embeddings=int(obj["max_position_embeddings"]),
            layer_norm_eps=float(obj.get("layer_norm_eps", 1e-12)),
            hidden_act=str(obj.get("hidden_act", "gelu")),
        )
        if config.hidden_act != "gelu":
            raise ValueError(f"config.json: hidden_act {config.hidden_act!r} is not 'gelu'")
        if config.hidden_size % config.num_attention_heads:
            raise ValueError("config.json: hidden_size is not a multiple of the head count")
        return config

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads


class _Graph:
    """Collects nodes and initializers; every tensor name is made unique by a prefix."""

    def __init__(self, weights: Mapping[str, np.ndarray]) -> None:
        self.weights = weights
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._n = 0

    def weight(self, key: str, *, transpose: bool = False) -> str:
        """Add the checkpoint tensor ``key`` (float32) as an initializer, named after it."""
        try:
            array = self.weights[key]
        except KeyError:
            raise ValueError(f"the checkpoint has no tensor {key!r}") from None
        array = np.ascontiguousarray(array.T if transpose else array, dtype=np.float32)
        return self.const(array, key)

    def const(self, array: np.ndarray, name: str) -> str:
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def op(self, op_type: str, inputs: list[str], prefix: str, **attrs: Any) -> str:
        self._n += 1
        out = f"{prefix}/{op_type}_{self._n}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def linear(self, x: str, key: str, prefix: str) -> str:
        """x @ W^T + b for the checkpoint's ``key.weight`` ([out, in]) and ``key.bias``."""
        w = self.weight(f"{key}.weight", transpose=True)
        b = self.weight(f"{key}.bias")
        return self.op("Add", [self.op("MatMul", [x, w], prefix), b], prefix)

    def layer_norm(self, x: str, key: str, eps: float, prefix: str) -> str:
        scale, bias = self.weight(f"{key}.weight"), self.weight(f"{key}.bias")
        return self.op("LayerNormalization", [x, scale, bias], prefix, axis=-1, epsilon=eps)


def _embeddings(g: _Graph, config: BertConfig) -> tuple[str, str]:
    """The embedding sum and LayerNorm; also returns the float mask [batch, tokens]."""
    p = "embeddings"
    word = g.weight("embeddings.word_embeddings.weight")
    positions = g.weights["embeddings.position_embeddings.weight"]
    token_type0 = g.weights["embeddings.token_type_embeddings.weight"][0]
    pos_table = g.const(
        np.ascontiguousarray(positions + token_type0, dtype=np.float32), "embeddings.position_type0"
    )
    tokens = g.op(
        "Gather",
        [g.op("Shape", [INPUT_IDS], p), g.const(np.array(1, dtype=np.int64), "one_scalar")],
        p,
        axis=0,
    )
    zero = g.const(np.array(0, dtype=np.int64), "zero_scalar")
    step = g.const(np.array(1, dtype=np.int64), "step_scalar")
    position_ids = g.op("Range", [zero, tokens, step], p)
    summed = g.op(
        "Add",
        [
            g.op("Gather", [word, INPUT_IDS], p, axis=0),
            g.op("Gather", [pos_table, position_ids], p),
        ],
        p,
    )
    hidden = g.layer_norm(summed, "embeddings.LayerNorm", config.layer_norm_eps, p)
    mask = g.op("Cast", [ATTENTION_MASK], p, to=TensorProto.FLOAT)
    return hidden, mask


def _attention_bias(g: _Graph, mask: str) -> str:
    """(1 - mask) * -10000, shaped [batch, 1, 1, tokens] to add to every head's scores."""
    p = "attention_bias"
    axes = g.const(np.array([1, 2], dtype=np.int64), "axes_1_2")
    expanded = g.op("Unsqueeze", [mask, axes], p)
    one = g.const(np.array(1.0, dtype=np.float32), "one_float")
    big = g.const(np.array(-10000.0, dtype=np.float32), "minus_10000")
    return g.op("Mul", [g.op("Sub", [one, expanded], p), big], p)


def _layer(g: _Graph, config: BertConfig, i: int, x: str, bias: str) -> str:
    key, p = f"encoder.layer.{i}", f"layer{i}"
    heads, size = config.num_attention_heads, config.head_size
    split = g.const(np.array([0, 0, heads, size], dtype=np.int64), f"{p}/split_heads")
    merge = g.const(np.array([0, 0, config.hidden_size], dtype=np.int64), f"{p}/merge_heads")

    def heads_of(name: str, perm: list[int]) -> str:
        projected = g.linear(x, f"{key}.attention.self.{name}", p)
        return g.op("Transpose", [g.op("Reshape", [projected, split], p)], p, perm=perm)

    q = heads_of("query", [0, 2, 1, 3])  # [b, h, t, d]
    k = heads_of("key", [0, 2, 3, 1])  # [b, h, d, t]
    v = heads_of("value", [0, 2, 1, 3])  # [b, h, t, d]
    scale = g.const(np.array(1.0 / math.sqrt(size), dtype=np.float32), f"{p}/scale")
    scores = g.op("Add", [g.op("Mul", [g.op("MatMul", [q, k], p), scale], p), bias], p)
    probs = g.op("Softmax", [scores], p, axis=-1)
    context = g.op("Transpose", [g.op("MatMul", [probs, v], p)], p, perm=[0, 2, 1, 3])
    context = g.op("Reshape", [context, merge], p)
    attended = g.linear(context, f"{key}.attention.output.dense", p)
    x = g.layer_norm(
        g.op("Add", [attended, x], p),
        f"{key}.attention.output.LayerNorm",
        config.layer_norm_eps,
        p,
    )
    inner = g.linear(x, f"{key}.intermediate.dense", p)
    # GELU, exact form: 0.5 * u * (1 + erf(u / sqrt(2)))
    half = g.const(np.array(0.5, dtype=np.float32), f"{p}/half")
    one = g.const(np.array(1.0, dtype=np.float32), f"{p}/one")
    root2 = g.const(np.array(math.sqrt(2.0), dtype=np.float32), f"{p}/sqrt2")
    erf = g.op("Erf", [g.op("Div", [inner, root2], p)], p)
    gelu = g.op("Mul", [g.op("Mul", [inner, half], p), g.op("Add", [erf, one], p)], p)
    out = g.linear(gelu, f"{key}.output.dense", p)
    return g.layer_norm(
        g.op("Add", [out, x], p), f"{key}.output.LayerNorm", config.layer_norm_eps, p
    )


def _pool_and_normalise(g: _Graph, hidden: str, mask: str) -> str:
    p = "pooling"
    axis1 = g.const(np.array([1], dtype=np.int64), "axes_1")
    axis2 = g.const(np.array([-1], dtype=np.int64), "axes_last")
    weights = g.op("Unsqueeze", [mask, axis2], p)  # [b, t, 1]
    summed = g.op("ReduceSum", [g.op("Mul", [hidden, weights], p), axis1], p, keepdims=0)
    counts = g.op("ReduceSum", [weights, axis1], p, keepdims=0)  # [b, 1]
    tiny = g.const(np.array(1e-9, dtype=np.float32), "min_count")
    mean = g.op("Div", [summed, g.op("Max", [counts, tiny], p)], p)
    # ReduceL2 takes its axes as an attribute until opset 18 (ReduceSum: an input from 13)
    norm = g.op("ReduceL2", [mean], "normalise", axes=[-1], keepdims=1)
    eps = g.const(np.array(1e-12, dtype=np.float32), "min_norm")
    return g.op("Div", [mean, g.op("Max", [norm, eps], "normalise")], "normalise")


def build_bert_embedding(
    weights: Mapping[str, np.ndarray], config: BertConfig, *, graph_name: str
) -> onnx.ModelProto:
    """The whole encoder with pooling and normalisation as one ONNX model (not yet saved)."""
    g = _Graph(weights)
    hidden, mask = _embeddings(g, config)
    bias = _attention_bias(g, mask)
    for i in range(config.num_hidden_layers):
        hidden = _layer(g, config, i, hidden, bias)
    pooled = _pool_and_normalise(g, hidden, mask)
    g.nodes.append(helper.make_node("Identity", [pooled], [OUTPUT_EMBEDDING], name="output"))
    graph = helper.make_graph(
        g.nodes,
        graph_name,
        [
            helper.make_tensor_value_info(INPUT_IDS, TensorProto.INT64, ["batch", "tokens"]),
            helper.make_tensor_value_info(ATTENTION_MASK, TensorProto.INT64, ["batch", "tokens"]),
        ],
        [
            helper.make_tensor_value_info(
                OUTPUT_EMBEDDING, TensorProto.FLOAT, ["batch", config.hidden_size]
            )
        ],
        initializer=g.initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="modelcast"
    )
    model.ir_version = IR_VERSION
    return model
