"""Writing a large file back to disk behind its writer, and out of the page cache.

A download (``storage.PartialDownload``) and a delta apply (``delta_updates.apply_file``) write a
model's worth of bytes and then make them durable. Left to the end, that final ``fdatasync``
writes everything at once and stalls the completion (30-600 ms per 100 MB measured on the
download), and the written pages stay in the page cache: a model as large as the device's
free memory would evict everything else, the running model's pages included.

So every ``FLUSH_BEHIND_BYTES`` written, a background thread syncs what is written so far and
drops the clean pages from the cache (``drop_cached``). It only starts the disk writes early:
durability still comes from the writer's own sync. The writer never reads those bytes back
(each chunk was hashed in its received buffer, an apply's output as it is made). The price:
activation reads the file from the disk, not from memory. It also keeps a download fast where
fresh memory is expensive: the same few MB of page cache are reused for the next chunks (on
this project's VMs, writing 512 MB into pages never touched before took 1.3 s, into reused ones
0.2 s; docs/BENCHMARKS.md).
"""

from __future__ import annotations

import contextlib
import os
import threading

#: Written bytes after which the background thread syncs and drops them.
FLUSH_BEHIND_BYTES = 4 << 20


def drop_cached(fd: int) -> None:
    """Drop the file's clean pages from the page cache (pages still dirty stay; Linux)."""
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


class WriteBehind:
    """The background sync of one open file: call ``wrote`` after each write, ``close`` before
    the descriptor is closed. The thread starts at the first ``FLUSH_BEHIND_BYTES``."""

    def __init__(self, fd: int, name: str) -> None:
        self._fd = fd
        self._name = name
        self._unflushed = 0  # bytes written since the last (background or real) flush
        self._thread: threading.Thread | None = None
        self._wanted = threading.Event()
        self._closing = False

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wrote(self, n: int) -> None:
        self._unflushed += n
        if self._unflushed < FLUSH_BEHIND_BYTES:
            return
        self._unflushed = 0
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
        self._wanted.set()

    def synced(self) -> None:
        """The writer has just synced everything itself: nothing is left to write behind."""
        self._unflushed = 0

    def close(self) -> None:
        """Stop the thread (it uses the descriptor: before the descriptor is closed)."""
        if self._thread is not None:
            self._closing = True
            self._wanted.set()
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            if self._closing:
                return
            # an error shows again, and is reported, at the writer's own sync
            with contextlib.suppress(OSError):
                os.fdatasync(self._fd)
                drop_cached(self._fd)
