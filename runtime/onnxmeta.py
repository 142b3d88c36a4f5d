"""The ``metadata_props`` of an ONNX file: read them, set them, and the model kind they declare."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import onnx

from protocol import ProtocolError
from protocol.textmodel import (
    KIND_FILE,
    KIND_TEXT_EMBEDDING,
    check_model_kind,
    model_kind_of,
    parse_text_spec,
)

from .errors import SetupError


def read_metadata(path: Path, *, label: str | None = None) -> dict[str, str]:
    """The file's ``metadata_props`` as a dict (``SetupError`` naming ``label``, default the
    path, and onnx's message if it is not an ONNX model)."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except OSError:  # a missing or unreadable file stays what it is
        raise
    except Exception as exc:  # protobuf's DecodeError and friends
        raise SetupError(f"{label or path}: not an ONNX model (onnx: {exc})") from None
    return {p.key: p.value for p in model.metadata_props}


def set_metadata(model: onnx.ModelProto, meta: Mapping[str, str]) -> None:
    """Add or replace the given keys, keeping every other entry."""
    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in meta]
    del model.metadata_props[:]
    for key, value in [*kept, *meta.items()]:
        model.metadata_props.add(key=key, value=value)


def read_model_kind(path: Path) -> str:
    """``tensors`` or ``text-embedding``, as the file declares it (``ProtocolError`` if its
    declaration is unknown)."""
    return model_kind_of(read_metadata(path))


#: protobuf cannot parse a message this large: such a file declares nothing we can read.
_MAX_PROTO_BYTES = (2 << 30) - 1


def release_kind(path: Path, requested: str | None = None, *, label: str | None = None) -> str:
    """The model kind to record in a release of ``path``.

    ``file``, when ``requested`` (``--kind file``): any bytes, nothing read. Otherwise the file
    must be ONNX (``SetupError`` with onnx's message if onnx cannot parse it), and the kind is
    what it declares (nothing: plain ``tensors``); ``requested`` must agree with it. A
    text-embedding file must carry a usable spec, so a release the edges could not serve is
    refused here. ``SetupError`` says why, naming the file ``label`` (default: ``path``).
    Whether the model loads and runs is ``runtime.model_check``'s question.
    """
    label = label or str(path)
    try:
        if requested is not None:
            check_model_kind(requested, "--kind")
        if requested == KIND_FILE:
            return KIND_FILE
        meta: dict[str, str] = {}
        if Path(path).stat().st_size <= _MAX_PROTO_BYTES:  # beyond: onnxruntime will say
            try:
                meta = read_metadata(path, label=label)
            except SetupError as exc:
                raise SetupError(f"{exc}; --kind {KIND_FILE} ships any file as it is") from None
        declared = model_kind_of(meta)
        kind = requested or declared
        if kind != declared:
            raise SetupError(f"{label} declares the model kind {declared}, not {kind}")
        if kind == KIND_TEXT_EMBEDDING:
            parse_text_spec(meta)
    except ProtocolError as exc:
        raise SetupError(f"{label}: {exc.detail}") from None
    return kind
