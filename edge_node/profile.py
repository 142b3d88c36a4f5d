"""What a device is, reported in its retained status so the coordinator can target and pick
variants: OS, CPU architecture, cores, RAM, onnxruntime and its execution providers, the model
kinds it can take, tags."""

from __future__ import annotations

import importlib.util
import os
import platform
from typing import Any

from protocol.textmodel import KIND_FILE, KIND_TENSORS, KIND_TEXT_EMBEDDING


def servable_kinds() -> list[str]:
    """Every device runs tensor models and takes files; text models need the tokenizer
    library. Looked up, not imported: importing it costs ~6 MB of RSS, which an edge without
    text models should not pay (activation imports it, and refuses a text model if that
    fails)."""
    try:
        found = importlib.util.find_spec("tokenizers") is not None
    except (ImportError, ValueError):
        found = False
    return [KIND_TENSORS, KIND_TEXT_EMBEDDING, KIND_FILE] if found else [KIND_TENSORS, KIND_FILE]


def device_profile(tags: dict[str, str], http_port: int | None) -> dict[str, Any]:
    import onnxruntime as ort  # the agent needs it to activate anyway

    try:
        ram_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20)
    except (ValueError, OSError):
        ram_mb = 0
    profile: dict[str, Any] = {
        "os": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(),
        "cores": os.cpu_count() or 0,
        "ram_mb": int(ram_mb),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "providers": list(ort.get_available_providers()),
        "model_kinds": servable_kinds(),
        "tags": dict(tags),
    }
    if http_port is not None:
        profile["http_port"] = http_port
    return profile
