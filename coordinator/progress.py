"""The coordinator's counters, and the condition that ``Coordinator.wait_until`` waits on.

Every thread that makes progress (a message handled, chunks published, an index published)
counts it here and wakes the waiters. One lock guards all the counters: it is held for a few
statements and nothing else is locked under it, except by a ``wait_until`` predicate, which may
read other statistics (each under its own lock) while it is held; no thread takes it while
holding another lock, so that nesting cannot deadlock.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable


class Progress:
    def __init__(self) -> None:
        # Reentrant (Condition's default): a predicate may read the counters it guards.
        self._cond = threading.Condition()
        self._messages_processed = 0
        self._chunks_published = 0
        self._bytes_published = 0
        self._inbox_dropped = 0
        self._rejections: Counter[str] = Counter()

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Block until ``predicate()`` holds, re-checking it on every progress."""
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def notify(self) -> None:
        """Something changed that a predicate may be waiting for (e.g. an index published)."""
        with self._cond:
            self._cond.notify_all()

    def message_handled(self, handled: bool = True) -> None:
        """A device message was handled (``handled=False``: a worker's idle turn, which may
        still have flushed device reports)."""
        with self._cond:
            if handled:
                self._messages_processed += 1
            self._cond.notify_all()

    def chunks_published(self, chunks: int, size: int) -> None:
        with self._cond:
            self._chunks_published += chunks
            self._bytes_published += size
            self._cond.notify_all()

    def inbox_full(self) -> int:
        """A message was dropped because the worker's inbox is full; returns the drops so far."""
        with self._cond:
            self._inbox_dropped += 1
            return self._inbox_dropped

    def rejected(self, reason: str) -> int:
        """A device message was refused for ``reason``; returns how many so far."""
        with self._cond:
            self._rejections[reason] += 1
            return self._rejections[reason]

    # --- reading -------------------------------------------------------------------------
    @property
    def messages_processed(self) -> int:
        with self._cond:
            return self._messages_processed

    @property
    def published(self) -> tuple[int, int]:
        """Chunks published, and their frame bytes."""
        with self._cond:
            return self._chunks_published, self._bytes_published

    @property
    def inbox_dropped(self) -> int:
        with self._cond:
            return self._inbox_dropped

    def rejections(self) -> dict[str, int]:
        with self._cond:
            return dict(self._rejections)
