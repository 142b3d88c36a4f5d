"""A fault-injecting TCP proxy for tests and the demo.

Put it between MQTT clients and the broker to emulate a bad edge link: limited
bandwidth, latency, connections cut at random times or after random byte counts,
a stalled (half-open) link, or an outage. It runs an asyncio loop in its own
thread, so blocking test code can drive it; every knob may change at runtime.

Semantics worth knowing:
- The rate cap models ONE link per direction, shared by all connections.
- A cut closes both sockets of a connection (peers see EOF/reset promptly); a
  stall keeps them open and silently stops forwarding, like a dead NAT.
- cut_after (seconds) and cut_after_bytes (bytes forwarded on the connection, both
  directions together) are drawn per connection, when it is accepted, from
  ``random.Random(seed)`` (or by calling the given function), so a seeded scenario
  is repeatable. Changing them affects only later connections.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Literal

from .proxy_link import Link, Pacer, draw

Direction = Literal["to_server", "to_client"]
SecondsSpec = tuple[float, float] | Callable[[], float] | None
BytesSpec = tuple[int, int] | Callable[[], int] | None

_CHUNK = 65536
_QUEUE_CHUNKS = 64  # per direction: at most ~4 MiB buffered inside the proxy
_PACE_SLICE_S = 0.02  # a rate-capped direction writes ~20 ms worth of bytes at a time


class FaultProxy:
    """TCP proxy ``127.0.0.1:<port>`` -> ``target_host:target_port`` with faults."""

    _rate: float | None
    _latency: float

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        listen_port: int = 0,
        seed: int | None = 0,
        rate_bytes_per_s: float | None = None,
        latency_s: float = 0.0,
        cut_after: SecondsSpec = None,
        cut_after_bytes: BytesSpec = None,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.host = "127.0.0.1"
        self.port = listen_port
        self.rate_bytes_per_s = rate_bytes_per_s
        self.latency_s = latency_s
        self.cut_after = cut_after
        self.cut_after_bytes = cut_after_bytes
        # Counters (written by the proxy thread only).
        self.bytes_to_server = 0
        self.bytes_to_client = 0
        self.connections = 0
        self.cuts = 0
        self.refused = 0
        self._rng = random.Random(seed)
        self._pacers: dict[Direction, Pacer] = {"to_server": Pacer(), "to_client": Pacer()}
        self._links: set[Link] = set()
        self._stalled = False
        self._unstalled = asyncio.Event()  # replaced, bound to the loop, by _run()
        self._refuse_until = 0.0
        self._changed = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None

    # -- knobs (any thread) -------------------------------------------------
    @property
    def rate_bytes_per_s(self) -> float | None:
        return self._rate

    @rate_bytes_per_s.setter
    def rate_bytes_per_s(self, value: float | None) -> None:
        if value is not None and value <= 0:
            raise ValueError("rate_bytes_per_s must be > 0, or None for unlimited")
        self._rate = value

    @property
    def latency_s(self) -> float:
        return self._latency

    @latency_s.setter
    def latency_s(self, value: float) -> None:
        if value < 0:
            raise ValueError("latency_s must be >= 0")
        self._latency = value

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def active_connections(self) -> int:
        return len(self._links)

    @property
    def stalled(self) -> bool:
        return self._stalled

    def stall(self) -> None:
        """Stop forwarding both ways, keeping sockets open. Synchronous: once this
        returns, no further byte is forwarded until unstall()."""
        self._in_loop(lambda: self._set_stalled(True))

    def unstall(self) -> None:
        self._in_loop(lambda: self._set_stalled(False))

    def refuse_for(self, seconds: float, *, cut_existing: bool = False) -> None:
        """Outage: for `seconds`, accept new connections and close them at once.
        ``refuse_for(0)`` ends an outage early. Optionally cut open connections too."""
        self._refuse_until = time.monotonic() + seconds
        if cut_existing:
            self.cut_all()

    def cut_all(self) -> int:
        """Close every current connection now; returns how many were cut."""
        cut: list[int] = []
        self._in_loop(lambda: cut.append(self._cut_all()))
        return cut[0] if cut else 0

    def wait_until(self, predicate: Callable[[FaultProxy], bool], timeout: float) -> bool:
        """Wait (on a condition, no polling) until predicate(self) holds."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self), timeout)

    # -- lifecycle ----------------------------------------------------------
    def start(self) -> FaultProxy:
        if self._thread is not None:
            raise RuntimeError("proxy already started")
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name=f"faultproxy->{self.target_port}", daemon=True
        )
        self._thread.start()
        try:
            ready.result(timeout=10)
        except BaseException:
            self._thread = None
            raise
        return self

    def stop(self) -> None:
        """Close everything. start() again listens on the same port (an outage whose
        clients get 'connection refused', unlike refuse_for())."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=10)
        # Stopping from inside _shutdown() would stop the loop before it delivers
        # that coroutine's result to this thread.
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- proxy thread -------------------------------------------------------
    def _run(self, ready: concurrent.futures.Future[None]) -> None:
        loop = asyncio.new_event_loop()
        self._unstalled = asyncio.Event()
        if not self._stalled:
            self._unstalled.set()
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self._handle, self.host, self.port)
            )
        except BaseException as exc:
            loop.close()
            ready.set_exception(exc)
            return
        self.port = self._server.sockets[0].getsockname()[1]
        self._loop = loop
        ready.set_result(None)
        try:
            loop.run_forever()
        finally:
            self._loop = None
            loop.close()

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        for link in list(self._links):
            link.close()
            for writer in (link.client, link.server):
                writer.transport.abort()
        # Closing the links ends their handlers normally; cancel only stragglers
        # (e.g. a handler still connecting upstream), so the loop closes cleanly.
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if others:
            _, pending = await asyncio.wait(others, timeout=2)
            for task in pending:
                task.cancel()
        await self._server.wait_closed()

    def _in_loop(self, fn: Callable[[], None]) -> None:
        loop = self._loop
        if loop is None or self._thread is threading.current_thread():
            fn()  # not running yet (nothing to race with), or already on the loop
            return

        async def call() -> None:
            fn()

        asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=10)

    def _set_stalled(self, stalled: bool) -> None:
        self._stalled = stalled
        if stalled:
            self._unstalled.clear()
        else:
            self._unstalled.set()

    def _cut_all(self) -> int:
        links = list(self._links)
        for link in links:
            self._cut(link)
        return len(links)

    def _cut(self, link: Link) -> None:
        if not link.closed:
            self.cuts += 1
            link.close()
            self._notify()

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    async def _handle(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if time.monotonic() < self._refuse_until:
            self.refused += 1
            c_writer.transport.abort()
            self._notify()
            return
        try:
            s_reader, s_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            c_writer.transport.abort()
            self._notify()
            return
        link = Link(c_writer, s_writer, cut_at_bytes=draw(self.cut_after_bytes, self._rng.randint))
        self._links.add(link)
        self._notify()
        up: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(_QUEUE_CHUNKS)
        down: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(_QUEUE_CHUNKS)
        link.tasks = [
            asyncio.create_task(self._read(c_reader, up)),
            asyncio.create_task(self._forward(link, up, s_writer, "to_server")),
            asyncio.create_task(self._read(s_reader, down)),
            asyncio.create_task(self._forward(link, down, c_writer, "to_client")),
        ]
        cut_s = draw(self.cut_after, self._rng.uniform)
        if cut_s is not None:
            link.timer = asyncio.get_running_loop().call_later(cut_s, self._cut, link)
        try:
            # Ends when both directions finished (EOF each way), a task failed (reset),
            # or the link was cut (tasks cancelled).
            done, _ = await asyncio.wait(link.tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if not task.cancelled():
                    task.exception()  # mark retrieved: a reset is an expected outcome
        finally:
            self._links.discard(link)
            link.close()
            self._notify()

    async def _read(
        self, reader: asyncio.StreamReader, queue: asyncio.Queue[tuple[float, bytes] | None]
    ) -> None:
        while True:
            await self._unstalled.wait()  # a stalled link reads nothing: TCP backpressure
            data = await reader.read(_CHUNK)
            await queue.put((time.monotonic(), data) if data else None)
            if not data:
                return

    async def _forward(
        self,
        link: Link,
        queue: asyncio.Queue[tuple[float, bytes] | None],
        writer: asyncio.StreamWriter,
        direction: Direction,
    ) -> None:
        while True:
            item = await queue.get()
            if item is None:
                if writer.can_write_eof():
                    writer.write_eof()  # pass the half-close on
                return
            arrived, data = item
            delay = arrived + self._latency - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            pos = 0
            while pos < len(data):
                rate = self._rate
                size = len(data) if rate is None else max(1, int(rate * _PACE_SLICE_S))
                piece = data[pos : pos + size]
                if rate is not None:
                    await self._pacers[direction].pace(len(piece), rate)
                await self._unstalled.wait()
                # No await between the stall check and the write: stall() is exact.
                budget = None if link.cut_at_bytes is None else link.cut_at_bytes - link.forwarded
                if budget is not None and len(piece) >= budget:
                    self._write(link, writer, piece[:budget], direction)
                    self._cut(link)  # cancels this task too
                    return
                self._write(link, writer, piece, direction)
                pos += len(piece)
                await writer.drain()

    def _write(
        self, link: Link, writer: asyncio.StreamWriter, data: bytes, direction: Direction
    ) -> None:
        if not data:
            return
        # Count first: write() may hand the bytes to the peer at once, and a test
        # that has received them must find them counted.
        link.forwarded += len(data)
        if direction == "to_server":
            self.bytes_to_server += len(data)
        else:
            self.bytes_to_client += len(data)
        writer.write(data)
        self._notify()
