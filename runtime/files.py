"""Durable file writes: a crash leaves either the old file or the new one, whole, never a mix."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable."""
    _fsync(path, os.O_RDONLY | os.O_DIRECTORY)


def fsync_file(path: Path) -> None:
    """Make the contents of an existing file durable (its directory entry: ``fsync_dir``)."""
    _fsync(path, os.O_RDONLY)


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StagedFile:
    """A temporary file in ``directory`` that becomes a real file only on ``commit``.

    Use as a context manager: write to ``file``, then ``commit(path)`` (fsync, rename, fsync the
    directory). Leaving the block without committing, or by an exception, removes the temporary
    file. The destination can be chosen after writing (e.g. named by the content's hash).
    """

    def __init__(self, directory: Path, *, mode: int = 0o644) -> None:
        fd, name = tempfile.mkstemp(prefix=".staged-", suffix=".tmp", dir=directory)
        self.path = Path(name)
        try:
            os.fchmod(fd, mode)
            self.file: BinaryIO = os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            self.path.unlink(missing_ok=True)
            raise
        self._committed = False

    def commit(self, path: Path, *, replace: bool = True, durable: bool = True) -> None:
        """Move the written bytes to ``path``. ``replace=False`` refuses (``FileExistsError``)
        to clobber an existing file, atomically: the temporary file is hard-linked, not renamed,
        so two racing writers cannot both win. ``durable=False`` skips the two fsyncs (about
        10 ms here): still all-or-nothing for other processes and a crash of this one, but an OS
        crash may lose it, so the caller must make it durable later (``fsync_file``) or not
        need it to survive one."""
        self.file.flush()
        if durable:
            os.fsync(self.file.fileno())
        self.file.close()
        if replace:
            os.replace(self.path, path)
        else:
            os.link(self.path, path)
            self.path.unlink()
        self._committed = True
        if durable:
            fsync_dir(path.parent)

    def __enter__(self) -> StagedFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._committed:
            self.file.close()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


def write_atomic(
    path: Path, data: bytes, *, mode: int = 0o644, replace: bool = True, durable: bool = True
) -> None:
    """Write ``data`` to ``path`` atomically (see ``StagedFile.commit`` for ``replace`` and
    ``durable``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with StagedFile(path.parent, mode=mode) as staged:
        staged.file.write(data)
        staged.commit(path, replace=replace, durable=durable)


def sha256_file(path: Path) -> bytes:
    """sha256 of a file, read in 1 MiB pieces (memory does not grow with its size)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while piece := f.read(1 << 20):
            h.update(piece)
    return h.digest()


def write_json_atomic(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=True).encode())


def read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        return default
