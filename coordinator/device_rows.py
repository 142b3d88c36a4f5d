"""The ``devices`` table: the latest state and status each device reported, when it was last
heard from, how far its clock is off, and how many of its messages the rate limits dropped.
Written in batches by ``devices.DeviceTracker``, read by status and rollouts."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import protocol

from .clock_skew import ClockReading
from .db import DEVICE_KEY, Store


@dataclass(frozen=True)
class DeviceUpdate:
    """A decoded state or status message and when it was heard (None: leave last_seen alone)."""

    message: protocol.DeviceState | protocol.DeviceStatus
    seen: float | None


@dataclass(frozen=True)
class Sightings:
    """What the coordinator noticed about devices between two flushes, apart from their reports:
    when each was heard from (``seen``, by telemetry), its clock's skew (``clocks``), and how many
    of its messages the rate limits dropped (``limited``: chunk requests, reports)."""

    seen: Mapping[str, float] = field(default_factory=dict)
    clocks: Mapping[str, ClockReading] = field(default_factory=dict)
    limited: Mapping[str, tuple[int, int]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.seen.keys() | self.clocks.keys() | self.limited.keys())


# last_seen only ever moves forward; a device not yet known gets a row
_SEEN_SQL = (
    "INSERT INTO devices (fleet, device_id, last_seen, updated) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (fleet, device_id) DO UPDATE SET "
    "last_seen = max(coalesce(devices.last_seen, excluded.last_seen), excluded.last_seen), "
    "updated = excluded.updated"
)
_CLOCK_SQL = (
    "INSERT INTO devices (fleet, device_id, clock_skew, clock_checked, updated) "
    "VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (fleet, device_id) DO UPDATE SET "
    "clock_skew = excluded.clock_skew, clock_checked = excluded.clock_checked, "
    "updated = excluded.updated"
)
# drop counts add up over the device's life (and coordinator restarts)
_LIMITED_SQL = (
    "INSERT INTO devices (fleet, device_id, limited_requests, limited_reports, limited_at, "
    "updated) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (fleet, device_id) DO UPDATE SET "
    "limited_requests = coalesce(devices.limited_requests, 0) + excluded.limited_requests, "
    "limited_reports = coalesce(devices.limited_reports, 0) + excluded.limited_reports, "
    "limited_at = excluded.limited_at, updated = excluded.updated"
)


class DeviceStore(Store):
    def record_state(
        self, fleet: str, state: protocol.DeviceState, *, seen: float | None = None
    ) -> None:
        self.record_devices(fleet, [DeviceUpdate(state, seen)])

    def record_status(
        self, fleet: str, status: protocol.DeviceStatus, *, seen: float | None = None
    ) -> None:
        self.record_devices(fleet, [DeviceUpdate(status, seen)])

    def record_devices(self, fleet: str, updates: Iterable[DeviceUpdate]) -> None:
        """Upsert a batch of device reports; each only touches the columns its message carries.

        Rows are grouped by their column set because an upsert writes every column it names,
        and a state report must not blank out what the status report said (and vice versa).
        """
        now = time.time()
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for update in updates:
            row = device_row(fleet, update, now)
            groups.setdefault(tuple(sorted(row)), []).append(row)
        with self._db.lock:
            for rows in groups.values():
                self._db.sql.table("devices").upsert_all(rows, pk=DEVICE_KEY)

    def record_seen(self, fleet: str, seen: dict[str, float]) -> None:
        """Devices heard from (telemetry), by id (see ``record_sightings``)."""
        self.record_sightings(fleet, Sightings(seen=seen))

    def record_sightings(self, fleet: str, sightings: Sightings) -> None:
        """One transaction: ``last_seen`` only ever moves forward, the clock's skew is replaced,
        drop counts are added (and ``limited_at`` is now); a device not yet known gets a row."""
        if not sightings:
            return
        now = time.time()
        seen = [(fleet, device, ts, now) for device, ts in sorted(sightings.seen.items())]
        clocks = [
            (fleet, device, reading.skew, reading.checked, now)
            for device, reading in sorted(sightings.clocks.items())
        ]
        limited = [
            (fleet, device, requests, reports, now, now)
            for device, (requests, reports) in sorted(sightings.limited.items())
        ]
        with self._db.lock, self._db.sql.conn:
            self._db.sql.conn.executemany(_SEEN_SQL, seen)
            self._db.sql.conn.executemany(_CLOCK_SQL, clocks)
            self._db.sql.conn.executemany(_LIMITED_SQL, limited)

    def devices(self, fleet: str) -> list[dict[str, Any]]:
        with self._db.lock:
            rows = list(
                self._db.sql.table("devices").rows_where("fleet = ?", [fleet], order_by="device_id")
            )
        for row in rows:
            row["active"] = json.loads(row["active"]) if row.get("active") else {}
            row["online"] = bool(row["online"]) if row.get("online") is not None else None
            row["profile"] = json.loads(row["profile"]) if row.get("profile") else {}
        return rows


def device_row(fleet: str, update: DeviceUpdate, now: float) -> dict[str, Any]:
    """The columns ``update`` writes (only those its message carries)."""
    msg = update.message
    row: dict[str, Any] = {"fleet": fleet, "device_id": msg.device, "updated": now}
    if update.seen is not None:
        row["last_seen"] = update.seen
    if isinstance(msg, protocol.DeviceState):
        row.update(
            state=msg.state.value,
            model=msg.model,
            version=msg.version,
            chunks_held=msg.chunks_held,
            chunks_total=msg.chunks_total,
            reason=msg.reason,
            active=json.dumps(msg.active, sort_keys=True),
            rejections=msg.rejections,
        )
        if msg.boot:
            row["boot"] = msg.boot
    else:
        row["online"] = int(msg.online)
        # The MQTT will carries only the online flag: keep what the device said before.
        if msg.active:
            row["active"] = json.dumps(msg.active, sort_keys=True)
        if msg.boot:
            row["boot"] = msg.boot
        if msg.agent:
            row["agent"] = msg.agent
        if msg.profile:
            row["profile"] = json.dumps(msg.profile, sort_keys=True)
    return row
