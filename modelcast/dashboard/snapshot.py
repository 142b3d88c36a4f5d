"""The snapshot every page is served from, and the one thread that reads it.

Live updates cost one shared read of the database per interval, not one per open page: the
``SnapshotReader`` thread reads the fleet once per interval (and, in the same turn, each device
whose page was open recently), and publishes an immutable ``Snapshot`` with a new generation.
Requests only ever look at the latest snapshot. A read that fails (a locked database, a file
gone) keeps the last good data and records the failure, which the pages show as a banner; so
does a read that has not come back for a while.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol

from .source import DeviceDetail, FleetData

log = logging.getLogger("modelcast.dashboard")

#: a device's page keeps its device read each interval this long after it was last asked for
WATCH_TTL_S = 30.0

DetailKey = tuple[str, float]  # device, window


class Source(Protocol):
    def read_fleet(self) -> FleetData: ...
    def read_device(self, device: str, window: float) -> DeviceDetail: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class Snapshot:
    generation: int = 0
    taken_at: float | None = None  # when the last good fleet read finished (wall clock)
    fleet: FleetData | None = None
    details: Mapping[DetailKey, DeviceDetail] = field(default_factory=dict)
    error: str | None = None  # why the last read failed (None: it did not)
    failing_since: float | None = None
    reading_since: float | None = None  # a read under way since then (None: none is)


class SnapshotReader:
    """Reads ``source`` every ``interval`` seconds on its own thread."""

    def __init__(
        self, source: Source, interval: float, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.source = source
        self.interval = interval
        self._clock = clock
        self._cond = threading.Condition()  # guards everything below
        self._snapshot = Snapshot()
        self._watched: dict[DetailKey, float] = {}  # key -> last asked (monotonic)
        self._pending: set[DetailKey] = set()  # asked for, not read yet
        self._wake = threading.Event()
        self._refresh = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.fleet_reads = 0
        self.device_reads = 0

    # --- requests' side ------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        with self._cond:
            return self._snapshot

    def wait(self, predicate: Callable[[Snapshot], bool], timeout: float) -> Snapshot:
        """The snapshot once ``predicate`` holds on it (or the latest at the timeout)."""
        with self._cond:
            self._cond.wait_for(lambda: predicate(self._snapshot), timeout)
            return self._snapshot

    def wait_for_generation(self, generation: int, timeout: float) -> Snapshot:
        """The snapshot once its generation is past ``generation`` (or at the timeout)."""
        return self.wait(lambda s: s.generation > generation, timeout)

    def device(self, device: str, window: float, timeout: float = 15.0) -> DeviceDetail | None:
        """The device's detail (read with every interval from now on, while asked for). The
        first time, waits for the reader to read it; None if that read failed."""
        key = (device, window)
        with self._cond:
            self._watched[key] = time.monotonic()
            if key not in self._snapshot.details:
                self._pending.add(key)
                self._wake.set()
                self._cond.wait_for(lambda: key not in self._pending, timeout)
            return self._snapshot.details.get(key)

    def refresh(self) -> None:
        """Read the fleet again now, not at the end of the interval (after a rollout button)."""
        self._refresh.set()
        self._wake.set()

    # --- the reader's thread -------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dashboard-reader", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.source.close()

    def _run(self) -> None:
        due = 0.0
        while not self._stop.is_set():
            with self._cond:
                pending = sorted(self._pending)
            if pending:
                self._read(pending, fleet=False)
                continue
            if self._refresh.is_set() or time.monotonic() >= due:
                self._refresh.clear()
                self._read(self._watched_keys(), fleet=True)
                due = time.monotonic() + self.interval
            self._wake.wait(max(0.0, due - time.monotonic()))
            self._wake.clear()

    def _watched_keys(self) -> list[DetailKey]:
        """The details to read again, forgetting those nobody asked for lately."""
        now = time.monotonic()
        with self._cond:
            for key in [k for k, at in self._watched.items() if now - at > WATCH_TTL_S]:
                del self._watched[key]
            return sorted(self._watched)

    def _read(self, keys: list[DetailKey], *, fleet: bool) -> None:
        with self._cond:
            self._snapshot = replace(self._snapshot, reading_since=self._clock())
            self._cond.notify_all()
        try:
            data = self.source.read_fleet() if fleet else None
            details = {key: self.source.read_device(*key) for key in keys}
        except Exception as exc:  # a locked or vanished database: keep the last data
            self._failed(keys, exc)
            return
        with self._cond:
            old = self._snapshot
            kept = {k: v for k, v in old.details.items() if k in self._watched}
            self._snapshot = Snapshot(
                generation=old.generation + 1,
                taken_at=self._clock() if fleet else old.taken_at,
                fleet=data if data is not None else old.fleet,
                details={**kept, **details},
                # a device read alone says nothing of the fleet read that failed
                error=None if fleet else old.error,
                failing_since=None if fleet else old.failing_since,
            )
            self._pending.difference_update(keys)
            if fleet:
                self.fleet_reads += 1
            self.device_reads += len(keys)
            self._cond.notify_all()

    def _failed(self, keys: list[DetailKey], exc: Exception) -> None:
        log.warning("dashboard: reading the database failed: %s", exc)
        self.source.close()  # nothing half-open kept for the next read
        with self._cond:
            old = self._snapshot
            self._snapshot = replace(
                old,
                error=f"{type(exc).__name__}: {exc}",
                failing_since=old.failing_since or self._clock(),
                reading_since=None,
            )
            self._pending.difference_update(keys)
            self._cond.notify_all()
