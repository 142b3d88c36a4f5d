"""Reading chunks of released models from their blob files, for the sender.

Chunks are not re-verified here: their hashes were computed from these very bytes when the
release was added, and the edge verifies every chunk against the signed manifest anyway. What is
checked is that the blob is there and long enough, so a deleted or truncated blob fails loudly
instead of publishing a short chunk that every edge would refuse.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from types import TracebackType

from protocol import HEADER_SIZE, ChunkFrame

from .errors import ChunkSourceError
from .release_record import ReleaseRecord


class ChunkSource:
    """``read_frame(record, index)`` with ``os.preadv`` on blob files kept open in a small
    LRU."""

    def __init__(self, max_open: int = 16) -> None:
        if max_open < 1:
            raise ValueError("max_open must be at least 1")
        self._max_open = max_open
        self._fds: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def read_frame(self, record: ReleaseRecord, index: int) -> bytearray:
        """The chunk frame of chunk ``index`` of ``record``: the blob's bytes are read straight
        into the frame after its header (a copy less than reading them, then framing them)."""
        if not 0 <= index < record.n_chunks:
            raise IndexError(f"{record.release}: chunk {index} out of range 0..{record.n_chunks}")
        offset = index * record.chunk_size
        length = min(record.chunk_size, record.size - offset)
        frame = ChunkFrame.blank(index, record.release_id, length)
        with self._lock:
            fd = self._open(record)
            try:
                got = os.preadv(fd, [memoryview(frame)[HEADER_SIZE:]], offset)
            except OSError as exc:
                self._close(record.blob_path)
                raise ChunkSourceError(
                    f"{record.release}: reading chunk {index} from {record.blob_path}: {exc}"
                ) from exc
        if got != length:
            raise ChunkSourceError(
                f"{record.release}: blob {record.blob_path} is short: chunk {index} has "
                f"{got} of {length} bytes"
            )
        return frame

    def _open(self, record: ReleaseRecord) -> int:
        path = record.blob_path
        fd = self._fds.get(path)
        if fd is not None:
            self._fds.move_to_end(path)
            return fd
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise ChunkSourceError(
                f"{record.release}: cannot open blob {path}: {exc.strerror}"
            ) from exc
        self._fds[path] = fd
        while len(self._fds) > self._max_open:
            _, old = self._fds.popitem(last=False)
            os.close(old)
        return fd

    def _close(self, path: str) -> None:
        fd = self._fds.pop(path, None)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        with self._lock:
            while self._fds:
                _, fd = self._fds.popitem()
                os.close(fd)

    def __enter__(self) -> ChunkSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
