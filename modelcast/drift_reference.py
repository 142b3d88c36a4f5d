"""``modelcast release --reference FILE``: the reference texts (one a line) embedded with the
model being released, on the coordinator, into the drift profile signed into its manifest
(runtime.drift_profile fits and calibrates it). The texts themselves go nowhere: only the
profile (a centroid, directions, bin edges and thresholds) is signed and shipped."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from protocol import DriftProfile
from protocol.textmodel import KIND_TEXT_EMBEDDING
from runtime.drift_profile import MIN_REFERENCE, fit_profile

from .errors import CommandError

log = logging.getLogger("modelcast.drift")

#: lines a reference file may hold (a bigger one is refused, not truncated)
MAX_REFERENCE_LINES = 100_000
#: texts embedded per call
BATCH = 64


def read_reference(path: Path) -> list[str]:
    """The non-empty lines of ``path`` (``CommandError`` if unreadable, too few or too many)."""
    from edge_node.text import MAX_TEXT_CHARS

    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"--reference {path}: {exc}") from None
    texts = [line.strip() for line in lines if line.strip()]
    if not MIN_REFERENCE <= len(texts) <= MAX_REFERENCE_LINES:
        raise CommandError(
            f"--reference {path}: {len(texts)} texts; a reference holds {MIN_REFERENCE} to "
            f"{MAX_REFERENCE_LINES} non-empty lines (one text each)"
        )
    long = [i + 1 for i, t in enumerate(texts) if len(t) > MAX_TEXT_CHARS]
    if long:
        raise CommandError(f"--reference {path}: text {long[0]} is over {MAX_TEXT_CHARS} chars")
    return texts


class ReferenceProfile:
    """A ``coordinator.release_build.ProfileBuilder`` over reference texts; ``built`` is the
    profile it made."""

    def __init__(self, texts: list[str], source: Path) -> None:
        self.texts = texts
        self.source = source
        self.built: DriftProfile | None = None

    def __call__(self, path: Path, kind: str) -> DriftProfile:
        from edge_node.errors import TextModelError
        from edge_node.text import load_embedder

        if kind != KIND_TEXT_EMBEDDING:
            raise ValueError(
                f"a reference of texts needs a {KIND_TEXT_EMBEDDING} model, this one is {kind}"
            )
        try:
            embedder = load_embedder(path)
            parts = []
            step = max(len(self.texts) // 10, BATCH)  # progress on a long reference
            for i in range(0, len(self.texts), BATCH):
                parts.append(embedder.embed(self.texts[i : i + BATCH]))
                if len(self.texts) > 10 * BATCH and (i + BATCH) // step > i // step:
                    done = min(i + BATCH, len(self.texts))
                    log.info("embedded %d of %d reference texts", done, len(self.texts))
        except TextModelError as exc:
            raise ValueError(str(exc)) from None
        log.info("embedded %d reference texts from %s", len(self.texts), self.source)
        self.built = fit_profile(np.concatenate(parts))
        return self.built


def describe(profile: DriftProfile) -> str:
    sizes = ", ".join(str(t.count) for t in profile.thresholds)
    return (
        f"drift profile: {profile.ref_count} reference texts ({profile.held_out} held out to "
        f"calibrate), {profile.n_directions} directions explaining {profile.explained:.0%} of "
        f"the variance, {profile.bins} bins each, {profile.encoded_size} bytes; thresholds for "
        f"windows of {sizes} (false alarms aimed at {profile.false_alarm:.0%})"
    )
