"""The whole-file sha256 of a download, computed on a background thread as chunks are written.

Chunks mostly arrive in order, so the hash follows the longest prefix of written chunks: a chunk
that extends the prefix is hashed from the received buffer; chunks already on disk past it
(resumed, or written out of order) are read back when the prefix reaches them. Doing this on its
own thread lets the hashing (hashlib releases the GIL on large buffers) overlap the receiving
and verifying of the next chunks instead of adding to them; the queue is bounded in bytes, so a
slow disk or CPU slows the download down rather than growing memory.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import deque
from collections.abc import Callable

#: Received chunk bytes waiting to be hashed at most; past this ``feed`` blocks.
MAX_QUEUED_BYTES = 8 << 20


class WholeFileHasher:
    """Feed it every chunk as it is written (in the order written); ``digest`` once all are."""

    def __init__(
        self,
        fd: int,
        n_chunks: int,
        chunk_size: int,
        chunk_length: Callable[[int], int],
        written: bytearray,
        *,
        name: str = "hasher",
    ) -> None:
        self._fd = fd
        self._n = n_chunks
        self._chunk_size = chunk_size
        self._chunk_length = chunk_length
        self._written = written  # one byte per chunk, set by the writer once the chunk is on disk
        self._hash = hashlib.sha256()
        self._upto = 0  # chunks [0, _upto) are in the hash
        self._queue: deque[tuple[int, memoryview] | None] = deque()
        self._queued_bytes = 0
        self._cond = threading.Condition()
        self._busy = False
        self._error: OSError | ValueError | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def feed(self, index: int, data: memoryview) -> None:
        """A chunk was just written at its place. Blocks while too much is queued."""
        with self._cond:
            while self._queued_bytes >= MAX_QUEUED_BYTES and self._error is None:
                self._cond.wait()
            self._queue.append((index, data))
            self._queued_bytes += len(data)
            self._cond.notify_all()

    def digest(self) -> bytes | None:
        """The sha256 of chunks [0, n) once every queued chunk is hashed, or None when the
        prefix does not cover the file (some chunk is not written). Raises what a read-back
        raised."""
        with self._cond:
            self._cond.wait_for(lambda: (not self._queue and not self._busy) or bool(self._error))
            if self._error is not None:
                raise self._error
        # the thread is idle and nothing is queued: extend over what is on disk, here
        self._extend()
        return self._hash.digest() if self._upto == self._n else None

    def close(self) -> None:
        with self._cond:
            self._queue.append(None)
            self._cond.notify_all()
        self._thread.join()

    # --- the thread ------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._queue))
                item = self._queue.popleft()
                if item is None:
                    return
                self._busy = True
            index, data = item
            try:
                if index == self._upto:
                    self._hash.update(data)
                    self._upto += 1
                    self._extend()
            except (OSError, ValueError) as exc:
                with self._cond:
                    self._error = exc
            finally:
                with self._cond:
                    self._busy = False
                    self._queued_bytes -= len(data)
                    self._cond.notify_all()

    def _extend(self) -> None:
        """Hash chunks already on disk right after the prefix (resumed, or out of order)."""
        while self._upto < self._n and self._written[self._upto]:
            i = self._upto
            length = self._chunk_length(i)
            data = os.pread(self._fd, length, i * self._chunk_size)
            if len(data) != length:
                raise ValueError(f"the part file is short: chunk {i} has {len(data)} bytes")
            self._hash.update(data)
            self._upto += 1
