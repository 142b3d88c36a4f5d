"""Chunk reuse: before a download asks for anything, copy from the device's own disk the chunks
of the new release that another verified release of the same model already holds.

A *source* is the ``model.onnx`` of any other version or variant of the model (a file by that
name exists only once its whole-file sha256 matched its signed manifest), with the
``manifest.env`` kept beside it: that manifest's chunk hashes say where each chunk sits in the
file. The kept manifest is only an index, not trusted: every chunk copied is hashed again and
must match the hash in the NEW (signed, verified) manifest, so a source that rotted on disk, or
a kept manifest that lies, costs a request for that chunk, never a bad chunk. Sources cut in
another chunk size are skipped (their chunk hashes cannot match). Chunks are matched by hash,
not by position, so a chunk that moved (to another chunk-aligned offset) is found too.

Runs on the worker thread in ``Downloader.begin``, before the download state machine exists:
the copy reads, hashes and writes at disk speed (all of MiniLM, 86.6 MB: 0.46 s here). No
chunk flows meanwhile (nothing was asked for yet), so the worker's inbox has little to hold.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from protocol import DEFAULT_LIMITS, Manifest, ProtocolError, VerifiedChunk
from protocol.envelope import Envelope

from .storage import FINAL, MANIFEST, PartialDownload

log = logging.getLogger("modelcast.edge")


@dataclass(frozen=True)
class Source:
    """A verified release of the model on this device, and where its chunks are."""

    release: str  # "m@1", "m@1 (int8)": for the log and the event
    path: Path
    manifest: Manifest


@dataclass(frozen=True)
class Reused:
    """What ``reuse_chunks`` copied into the part file."""

    indices: tuple[int, ...]
    size: int  # bytes
    sources: tuple[str, ...]  # the releases they came from
    refused: int  # chunks whose local copy did not match the new manifest's hash


#: what a download that reuses nothing (a delta's stream) starts with
NOTHING_REUSED = Reused((), 0, (), 0)


def reuse_from_disk(part: PartialDownload, manifest: Manifest, held: Iterable[int]) -> Reused:
    """``reuse_chunks`` from every other verified release of the model beside ``part``'s
    directory (``models/NAME/VERSION[/VARIANT]``)."""
    sources = find_sources(_model_dir(part.dir, manifest), part.dir, manifest)
    return reuse_chunks(part, manifest, held, sources)


def bytes_to_fetch(directory: Path, manifest: Manifest) -> int:
    """What downloading ``manifest``'s release whole into ``directory`` would fetch once the
    chunks other verified releases on this device hold are reused (by their kept manifests:
    an estimate, since a local copy that rotted is asked for after all). The edge compares it
    with a delta's size (``DeltaUpdates.plan``)."""
    local = {
        s.manifest.chunk_hash(i)
        for s in find_sources(_model_dir(directory, manifest), directory, manifest)
        for i in range(s.manifest.n_chunks)
    }
    return sum(
        manifest.chunk_length(i)
        for i in range(manifest.n_chunks)
        if manifest.chunk_hash(i) not in local
    )


def _model_dir(directory: Path, manifest: Manifest) -> Path:
    """``models/NAME`` from a release's ``models/NAME/VERSION[/VARIANT]``."""
    return directory.parent if manifest.variant is None else directory.parent.parent


def find_sources(model_dir: Path, target: Path, manifest: Manifest) -> list[Source]:
    """Verified releases of the model under ``model_dir`` (``models/NAME``) other than the one
    in ``target``, cut in the same chunk size, newest version first."""
    candidates = [d for d in _release_dirs(model_dir) if d != target]
    sources = []
    for directory in candidates:
        kept = _kept_manifest(directory)
        if kept is None or kept.name != manifest.name:
            continue
        if kept.chunk_size != manifest.chunk_size:
            continue
        sources.append(Source(kept.release, directory / FINAL, kept))
    sources.sort(key=lambda s: s.manifest.version, reverse=True)
    return sources


def _release_dirs(model_dir: Path) -> Iterable[Path]:
    """``VERSION`` and ``VERSION/VARIANT`` directories that hold a ``model.onnx``."""
    try:
        versions = [d for d in model_dir.iterdir() if d.is_dir()]
    except OSError:
        return []
    found = []
    for v in versions:  # a delta's own download (``VERSION/.delta-HEX``) is not a release
        if (v / FINAL).is_file():
            found.append(v)
        try:
            found.extend(
                d
                for d in v.iterdir()
                if d.is_dir() and not d.name.startswith(".") and (d / FINAL).is_file()
            )
        except OSError:
            continue
    return found


def _kept_manifest(directory: Path) -> Manifest | None:
    try:
        raw = (directory / MANIFEST).read_bytes()
        return Manifest.decode(Envelope.decode(raw, DEFAULT_LIMITS.max_envelope_bytes).body)
    except (OSError, ProtocolError):
        return None


def reuse_chunks(
    part: PartialDownload, manifest: Manifest, held: Iterable[int], sources: list[Source]
) -> Reused:
    """Copy into ``part`` every chunk of ``manifest`` not in ``held`` that a source holds,
    each verified against ``manifest``'s hash before it is written. ``StorageError`` if
    writing the part file fails (reading a source that fails just skips it)."""
    where: dict[bytes, tuple[Source, int]] = {}
    for source in reversed(sources):  # the newest source wins a hash several hold
        m = source.manifest
        for i in range(m.n_chunks):
            where[m.chunk_hash(i)] = (source, i * m.chunk_size)
    have = set(held)
    copied: list[int] = []
    used: set[str] = set()
    refused = 0
    fds: dict[Path, int] = {}
    try:
        for i in range(manifest.n_chunks):
            found = where.get(manifest.chunk_hash(i))
            if i in have or found is None:
                continue
            source, offset = found
            data = _read(fds, source.path, offset, manifest.chunk_length(i))
            if data is None or hashlib.sha256(data).digest() != manifest.chunk_hash(i):
                refused += 1
                continue
            part.write(VerifiedChunk(i, i * manifest.chunk_size, memoryview(data)))
            copied.append(i)
            used.add(source.release)
    finally:
        for fd in fds.values():
            os.close(fd)
    size = sum(manifest.chunk_length(i) for i in copied)
    return Reused(tuple(copied), size, tuple(sorted(used)), refused)


def _read(fds: dict[Path, int], path: Path, offset: int, length: int) -> bytes | None:
    """``length`` bytes of ``path`` at ``offset``; None when the file cannot give them."""
    try:
        fd = fds.get(path)
        if fd is None:
            fd = fds[path] = os.open(path, os.O_RDONLY)
        return os.pread(fd, length, offset)
    except OSError as exc:
        log.warning("cannot read %s for chunk reuse: %s", path, exc)
        return None
