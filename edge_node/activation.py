"""The last gate before a model becomes active: it must load in onnxruntime and run once.

The check itself is ``runtime.model_check`` (the coordinator runs the same one at release);
here it runs as the edge needs it: a text model embeds a probe text with its own tokenizer (so
a device that cannot tokenise refuses it with the reason, instead of failing every request
later), and failures are the edge's ``ActivationError`` (``load-failed``) and
``AcceptanceError`` (``acceptance-failed``), with their messages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from protocol import Acceptance
from protocol.textmodel import KIND_FILE
from runtime import model_check
from runtime.errors import AcceptanceMiss, ModelCheckError

from .errors import AcceptanceError, ActivationError, TextModelError
from .text import TextEmbedder


def load_session(path: Path, threads: int = 1) -> Any:
    """``runtime.model_check.load_session``, failing with ``ActivationError``."""
    try:
        return model_check.load_session(path, threads)
    except ModelCheckError as exc:
        raise ActivationError(str(exc)) from None


def _embed_probe(session: Any) -> None:
    try:
        TextEmbedder(session).check()
    except TextModelError as exc:
        raise ModelCheckError(f"text model: {exc}") from None


def check_model(
    path: Path, kind: str | None = None, acceptance: Acceptance | None = None
) -> float | None:
    """Load ``path`` and run one inference; raise ``ActivationError`` if either fails. This is
    what keeps a model that is signed and whole, but broken, off the device.

    ``kind`` is what the release's manifest says the model is; the file must declare the same.
    With ``acceptance`` vectors, also run those and return the largest error
    (``AcceptanceError`` when it exceeds the tolerance). A ``file`` release is never loaded:
    its chunks and whole-file sha256 were its check.
    """
    if kind == KIND_FILE:
        return None
    try:
        return model_check.check_model(path, kind, acceptance, text_probe=_embed_probe)
    except AcceptanceMiss as exc:
        raise AcceptanceError(str(exc), max_error=exc.max_error) from None
    except ModelCheckError as exc:
        raise ActivationError(str(exc)) from None
