"""One connection through ``testkit.faultproxy.FaultProxy``: its two sockets and when it is to be
cut, and the pacing of the virtual link the connections share."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

N = TypeVar("N", int, float)

ABORT_AFTER_CLOSE_S = 1.0  # a cut socket whose peer will not read is aborted after this


def draw(spec: tuple[N, N] | Callable[[], N] | None, pick: Callable[[N, N], N]) -> N | None:
    """A new connection's cut point: none, ``pick`` (the proxy's seeded random) within the
    range, or what the function says."""
    if spec is None:
        return None
    if isinstance(spec, tuple):
        return pick(*spec)
    return spec()


class Pacer:
    """Serialises bytes onto a virtual link: each write waits until it has 'left'."""

    def __init__(self) -> None:
        self._next_free = 0.0

    async def pace(self, nbytes: int, rate: float) -> None:
        now = time.monotonic()
        self._next_free = max(now, self._next_free) + nbytes / rate
        await asyncio.sleep(self._next_free - now)


@dataclass(eq=False)
class Link:
    """One client connection through the proxy: its two sockets, the tasks forwarding between
    them, and when it is to be cut (after ``cut_at_bytes`` bytes, or by ``timer``)."""

    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    cut_at_bytes: int | None
    forwarded: int = 0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None
    closed: bool = False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
        for task in self.tasks:
            task.cancel()
        for writer in (self.client, self.server):
            # close() flushes what was already forwarded (so counters stay true);
            # abort later in case the peer never reads.
            writer.close()
            asyncio.get_running_loop().call_later(ABORT_AFTER_CLOSE_S, writer.transport.abort)
