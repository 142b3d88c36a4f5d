"""The releases the coordinator serves chunks of, by their 16-byte release id.

Read on the MQTT network thread (is a request's release known?), by the worker (looked up on a
miss) and by the sender (each chunk's release), written by the worker and the poller (what an
index names): a dict under its own lock, held for one lookup or update, never while reading the
database. Releases never change, so an entry never goes stale.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import protocol

from .release_record import ReleaseRecord
from .releases import ReleaseStore


class ReleaseCache:
    def __init__(self, releases: ReleaseStore, fleet: str) -> None:
        self._releases = releases
        self._fleet = fleet
        self._lock = threading.Lock()
        self._by_id: dict[bytes, ReleaseRecord] = {}
        self._release_of: dict[bytes, bytes] = {}  # a delta's stream -> the release it makes

    def get(self, short_id: bytes) -> ReleaseRecord | None:
        """The cached release with that id (never reads the database)."""
        with self._lock:
            return self._by_id.get(short_id)

    def release_of(self, short_id: bytes) -> bytes:
        """The release a delta's stream (``short_id``) makes; any other id unchanged. A device
        asking for a delta is one more asker of its release (the sender's fresh hold)."""
        with self._lock:
            return self._release_of.get(short_id, short_id)

    def add(self, records: Iterable[ReleaseRecord]) -> None:
        """Cache ``records``, and the chunk stream of each delta they offer."""
        pairs = [(s, r.short_id) for r in records for s in (r, *r.delta_streams())]
        with self._lock:
            for record, release in pairs:
                self._by_id[record.short_id] = record
                if record.short_id != release:
                    self._release_of[record.short_id] = release

    def cached(self, req: protocol.ChunkRequest) -> bool:
        """Whether the release ``req`` names is cached (so it can be served without the
        database)."""
        record = self.get(req.release_id)
        return record is not None and (record.name, record.version) == (req.name, req.version)

    def lookup(self, name: str, version: int, short_id: bytes) -> ReleaseRecord | None:
        """The build of ``name@version`` with release id ``short_id`` (one of its variants),
        else any build of it (so the caller can say which id it has); None if there is no such
        release. Reads the database on a miss (never on the network thread)."""
        record = self.get(short_id)
        if record is not None and (record.name, record.version) == (name, version):
            return record
        builds = self._releases.release_variants(self._fleet, name, version)
        self.add(builds)
        for build in (s for b in builds for s in (b, *b.delta_streams())):
            if build.short_id == short_id:
                return build
        return builds[0] if builds else None
