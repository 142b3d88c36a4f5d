"""Bit rot on the device's disk: each active file checked against its signed sha256.

SD cards and eMMC flip bits, and a model file that no longer matches its release still loads
and answers, wrongly. So the agent checks every active file when it starts, and the inference
service checks a file each time before it loads a session from it (``runtime.files.sha256_file``,
1 MiB at a time: about 50 ms for 90 MB). A file that no longer matches is *corrupt*:

- it is logged here, and reported by the worker (``model-corrupt``: the model, the path and
  both hashes), which drains ``found``;
- inference serves the previous version meanwhile if its file matches its own signed sha256,
  and otherwise answers 503 (``fallback`` says which);
- ``repairs`` tells the target choice to fetch the active release again (the one exception to
  "nothing at or below the active version"); the downloader resumes from the corrupt file, so
  only the chunks whose hashes no longer match are fetched, and the activator reactivates it
  through the usual checks, then calls ``settled``.

Shared by the agent's worker (the start, ``found``, ``repairs``, ``settled``) and the HTTP
threads (``check`` before a session is loaded); its lock guards ``_corrupt`` alone and is never
held while hashing or while taking another lock.
"""

from __future__ import annotations

import collections
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from protocol.textmodel import KIND_TENSORS
from runtime.files import sha256_file

from .active import ActiveModel, ActiveModels

log = logging.getLogger("modelcast.edge")


@dataclass(frozen=True)
class Fallback:
    """A version whose file matched its signed sha256: what inference serves meanwhile."""

    version: int
    path: Path
    kind: str


@dataclass(frozen=True)
class Corruption:
    """The active file of ``name@version`` no longer matches its signed sha256."""

    name: str
    version: int
    path: Path
    expected: str  # the signed sha256, hex
    actual: str | None  # what the file hashes to now (hex); None: missing or unreadable
    fallback: Fallback | None  # the previous version, if its file matches
    previous_version: int | None = None  # kept on disk, whether it matches or not

    def describe(self) -> str:
        found = f"sha256 {self.actual}" if self.actual else "missing or unreadable"
        return f"{self.path}: {found}, signed sha256 {self.expected}; {self.meanwhile()}"

    def meanwhile(self) -> str:
        """What inference does until the repair is done."""
        if self.fallback is not None:
            return f"serving {self.name}@{self.fallback.version} until it is repaired"
        if self.previous_version is not None:
            return (
                f"its previous version {self.name}@{self.previous_version} is corrupt too: "
                "no inference until it is repaired"
            )
        return "no previous version: no inference until it is repaired"


def file_sha256(path: Path) -> str | None:
    """The file's sha256 (hex), or None if it is missing or cannot be read."""
    try:
        return sha256_file(path).hex()
    except OSError:
        return None


def verify(active: ActiveModel) -> Corruption | None:
    """Hash ``active``'s file (and, on a mismatch, its previous one): None if it matches."""
    actual = file_sha256(active.path)
    if actual == active.sha256:
        return None
    return Corruption(
        active.name,
        active.version,
        active.path,
        active.sha256,
        actual,
        _fallback(active),
        active.previous_version,
    )


def _fallback(active: ActiveModel) -> Fallback | None:
    path, version, sha = active.previous_path, active.previous_version, active.previous_sha256
    if path is None or version is None or sha is None or file_sha256(path) != sha:
        return None
    return Fallback(version, path, active.previous_kind or KIND_TENSORS)


class ModelIntegrity:
    """Which active files are corrupt (see the module docstring)."""

    def __init__(self, actives: ActiveModels, device: str = "local") -> None:
        self._actives = actives
        self.device = device
        self._lock = threading.Lock()
        self._corrupt: dict[str, Corruption] = {}
        #: corruptions found and not reported yet: the worker drains it (appended by any thread)
        self.found: collections.deque[Corruption] = collections.deque()

    def check_all(self) -> list[Corruption]:
        """Check every active file (at the agent's start)."""
        return [c for m in self._actives.all() if (c := self.check(m.name)) is not None]

    def check(self, name: str) -> Corruption | None:
        """The active file of ``name``, checked: a corruption known for its version already is
        not hashed again (it stays so until its repair ``settled`` it)."""
        active = self._actives.get(name)
        if active is None:
            return None
        known = self.corrupt(name)
        if known is not None:
            return known
        corruption = verify(active)
        if corruption is None:
            return None
        with self._lock:
            fresh = self._corrupt.get(name) != corruption  # two threads may find it at once
            self._corrupt[name] = corruption
        if not fresh:
            return corruption
        self.found.append(corruption)
        log.error(
            "edge %s: %s@%d is corrupt: %s",
            self.device,
            name,
            corruption.version,
            corruption.describe(),
        )
        return corruption

    def corrupt(self, name: str) -> Corruption | None:
        """The corruption of ``name``'s active version, if one was found."""
        active = self._actives.get(name)
        with self._lock:
            known = self._corrupt.get(name)
        if known is None or active is None or known.version != active.version:
            return None
        return known

    def repairs(self) -> dict[str, int]:
        """By model name, the active version whose file is to be fetched again."""
        with self._lock:
            known = list(self._corrupt.values())
        return {c.name: c.version for c in known if self.corrupt(c.name) == c}

    def settled(self, name: str) -> None:
        """``name``'s active file was just replaced by a verified one (an activation, a
        rollback, a repair): whatever was found about the one before no longer holds."""
        with self._lock:
            self._corrupt.pop(name, None)
