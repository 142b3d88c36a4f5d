"""Many paho clients driven by one thread: one selector (epoll), one socket per client.

paho's threaded loop (``loop_start``) gives every client a thread, and a ``select()`` over its
socket and a socket pair: three descriptors per client, and ``select()`` fails (silently, in the
loop thread) once a descriptor is above 1024, so about 300 clients fit in a process. Here no
client has a thread or a socket pair: paho's external-loop API is used instead.

- ``on_socket_open`` / ``on_socket_close``: the client's socket joins or leaves the selector;
- ``on_socket_register_write``: the client has bytes to send. They are written once the
  callback that queued them returns (after the client's read, a timer, or at the end of the
  turn: ``loop_write``), so that what one device answers leaves when it answers, as it would
  from a device of its own, not bunched with its process's others at the end of a turn; only
  what the socket did not take waits for the selector to say it is writable, so a publish
  costs no selector change on loopback;
- readable: ``loop_read``; writable: ``loop_write``;
- ``loop_misc`` (keepalive pings, a broker that stopped answering) for every client once per
  ``misc_interval``;
- timers (``call_at``) for what the owner schedules: connection waves, reconnects, ticks.

Everything runs on the thread that calls ``run_once``, paho's callbacks included: the code they
call needs no lock. Nothing here knows modelcast's protocol.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import selectors
import socket
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho

Timer = Callable[[], None]


class ClientMux:
    def __init__(
        self, *, misc_interval: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._selector = selectors.DefaultSelector()
        self._clock = clock
        self._misc_interval = misc_interval
        self._misc_at = clock() + misc_interval
        self._timers: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()
        self._clients: dict[int, paho.Client] = {}  # by socket descriptor
        self._to_write: dict[paho.Client, None] = {}  # an ordered set
        self._waiting_write: set[int] = set()  # descriptors registered for EVENT_WRITE

    # --- clients -------------------------------------------------------------------------
    def attach(self, client: paho.Client) -> None:
        """Drive ``client`` from this loop (before its first connect)."""
        client.on_socket_open = self._socket_open
        client.on_socket_close = self._socket_close
        client.on_socket_register_write = self._register_write
        client.on_socket_unregister_write = self._unregister_write

    @property
    def sockets(self) -> int:
        return len(self._clients)

    def _socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        with contextlib.suppress(OSError, AttributeError):  # small packets leave at once
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        fd = sock.fileno()
        self._clients[fd] = client
        self._selector.register(fd, selectors.EVENT_READ, client)

    def _socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        fd = sock.fileno()
        if self._clients.get(fd) is client:
            del self._clients[fd]
            self._waiting_write.discard(fd)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(fd)
        self._to_write.pop(client, None)

    def _register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._to_write[client] = None

    def _unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        fd = sock.fileno()
        if fd in self._waiting_write:
            self._waiting_write.discard(fd)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.modify(fd, selectors.EVENT_READ, client)

    # --- timers --------------------------------------------------------------------------
    def call_at(self, when: float, fn: Timer) -> None:
        """Run ``fn`` on this loop at ``when`` (the loop's clock), or as soon after as it can."""
        heapq.heappush(self._timers, (when, next(self._order), fn))

    def call_later(self, delay: float, fn: Timer) -> None:
        self.call_at(self._clock() + delay, fn)

    def now(self) -> float:
        return self._clock()

    # --- the loop ------------------------------------------------------------------------
    def run_once(self, max_wait: float) -> None:
        """One turn: wait (at most ``max_wait``) for sockets, serve them, run the timers due,
        keep the connections alive, and write what the turn queued."""
        now = self._clock()
        wake = min(now + max_wait, self._misc_at)
        if self._timers:
            wake = min(wake, self._timers[0][0])
        if self._to_write:
            wake = now
        for key, mask in self._selector.select(max(0.0, wake - now)):
            client: paho.Client = key.data
            if mask & selectors.EVENT_WRITE:
                client.loop_write()
            if mask & selectors.EVENT_READ:
                client.loop_read()
                self._flush_writes()  # what a device answers leaves now, not after the turn
        self._run_timers()
        if self._clock() >= self._misc_at:
            self._misc()
        self._flush_writes()

    def _run_timers(self) -> None:
        now = self._clock()
        while self._timers and self._timers[0][0] <= now:
            _, _, fn = heapq.heappop(self._timers)
            fn()
            self._flush_writes()

    def _misc(self) -> None:
        self._misc_at = self._clock() + self._misc_interval
        for client in list(self._clients.values()):
            client.loop_misc()

    def _flush_writes(self) -> None:
        """Write what clients queued this turn; what a socket does not take now waits for the
        selector to say it is writable."""
        while self._to_write:
            client = next(iter(self._to_write))
            del self._to_write[client]
            client.loop_write()
            sock = client.socket()
            if sock is not None and client.want_write():
                fd = sock.fileno()
                if fd in self._clients and fd not in self._waiting_write:
                    self._waiting_write.add(fd)
                    self._selector.modify(fd, selectors.EVENT_READ | selectors.EVENT_WRITE, client)

    def close(self) -> None:
        self._selector.close()
