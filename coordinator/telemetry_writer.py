"""The telemetry writer thread: flushes the telemetry buffer to SQLite in one transaction per
batch (every half second or 500 rows, see ``TelemetryStore.wait_due``) and prunes telemetry
older than the retention. A database error is logged; the rows stay buffered (up to a cap) for
the next flush."""

from __future__ import annotations

import logging
import sqlite3
import threading

from .progress import Progress
from .telemetry_store import TelemetryStore

log = logging.getLogger(__name__)

#: Safety-net timeout of the wait: the writer is woken when a batch is due, or to stop.
WAKE_S = 0.5


class TelemetryWriter:
    def __init__(
        self, store: TelemetryStore, fleet: str, progress: Progress, stopping: threading.Event
    ) -> None:
        self._store = store
        self._fleet = fleet
        self._progress = progress
        self._stopping = stopping

    def run(self) -> None:
        while not self._stopping.is_set():
            if self._store.wait_due(WAKE_S):
                self.flush()
            try:
                self._store.maybe_prune(self._fleet)
            except sqlite3.Error:
                log.exception("fleet %s: pruning old telemetry failed; retrying", self._fleet)

    def flush(self) -> None:
        try:
            self._store.flush()
        except sqlite3.Error:  # the rows stay buffered (up to a cap) for the next flush
            log.exception("fleet %s: could not store telemetry", self._fleet)
        self._progress.notify()

    def wake(self) -> None:
        self._store.wake()
