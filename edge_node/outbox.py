"""Store-and-forward for telemetry: a bounded, on-disk, ordered queue (SQLite).

Every telemetry message is written here first and deleted only once the broker acknowledged it,
so a broker outage or a process restart loses nothing (at-least-once: a message acknowledged
just before a crash may be sent again; consumers de-duplicate on ``(device, boot, seq)``).
Messages leave in the order they were made, so replayed ones go before live ones. When the bound
is hit the oldest waiting messages are dropped, and the next message sent says how many (the
count is patched into it, on disk, in the same transaction that clears it, so a restart loses
neither the messages nor the count).

Owned by one thread (the agent's worker).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Protocol


class _Delivery(Protocol):
    @property
    def delivered(self) -> bool: ...


Publish = Callable[[str, bytes], "_Delivery | None"]
#: ``patch(payload, dropped)``: the payload, now also saying that ``dropped`` messages were lost
Patch = Callable[[bytes, int], bytes]


class Outbox:
    def __init__(
        self, path: Path, patch: Patch, *, capacity: int = 10_000, in_flight: int = 32
    ) -> None:
        self.patch = patch
        self.capacity = capacity
        self.in_flight = in_flight
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS outbox ("
            " id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, payload BLOB NOT NULL)"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)"
        )
        self._handed: dict[int, _Delivery] = {}
        self._last_handed = 0
        # False once a look found nothing more to hand over, until add(): the agent pumps after
        # every message it handles, and an idle queue need not be asked each time
        self._maybe_more = True
        self.dropped_total = 0

    def __len__(self) -> int:
        row = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()
        return int(row[0])

    def add(self, topic: str, payload: bytes) -> None:
        """Store one message; beyond the capacity, drop the oldest not yet handed over."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("INSERT INTO outbox (topic, payload) VALUES (?, ?)", (topic, payload))
            self._maybe_more = True
            excess = len(self) - self.capacity
            if excess > 0:
                discarded = self._db.execute(
                    "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE id > ?"
                    " ORDER BY id LIMIT ?)",
                    (self._last_handed, excess),
                ).rowcount
                self.dropped_total += discarded
                self._db.execute(
                    "INSERT INTO meta (key, value) VALUES ('dropped', ?)"
                    " ON CONFLICT(key) DO UPDATE SET value = value + excluded.value",
                    (discarded,),
                )

    def pump(self, publish: Publish) -> int:
        """Forget what the broker acknowledged; hand the next messages, in order, to
        ``publish`` (only call this while connected). Returns how many were handed."""
        done = [rowid for rowid, d in self._handed.items() if d.delivered]
        if done:
            with self._db:
                self._db.executemany("DELETE FROM outbox WHERE id = ?", [(r,) for r in done])
            for rowid in done:
                del self._handed[rowid]
        room = self.in_flight - len(self._handed)
        if room <= 0 or not self._maybe_more:
            return 0
        rows = self._db.execute(
            "SELECT id, topic, payload FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
            (self._last_handed, room),
        ).fetchall()
        self._maybe_more = len(rows) == room
        handed = 0
        for rowid, topic, payload in rows:
            payload = self._report_dropped(rowid, payload)
            delivery = publish(topic, payload)
            if delivery is None:
                self._maybe_more = True  # this one and the rest wait for the next pump
                break
            self._handed[rowid] = delivery
            self._last_handed = rowid
            handed += 1
        return handed

    def _report_dropped(self, rowid: int, payload: bytes) -> bytes:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'dropped'").fetchone()
        if not row or not row[0]:
            return payload
        patched = self.patch(payload, int(row[0]))
        with self._db:
            self._db.execute("UPDATE outbox SET payload = ? WHERE id = ?", (patched, rowid))
            self._db.execute("UPDATE meta SET value = 0 WHERE key = 'dropped'")
        return patched

    def close(self) -> None:
        self._db.close()
