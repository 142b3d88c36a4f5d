"""The simulator's event loop with stand-ins for paho clients on real socket pairs: reads when
readable, writes what a turn queued (and waits for writability only when a socket is full),
timers in order, keepalive work once per interval, sockets forgotten when closed."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from modelcast.simulate.link import WavePacer
from modelcast.simulate.mux import ClientMux


@dataclass
class Clock:
    now: float = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeClient:
    """What the mux calls on a paho client, and the callbacks paho would call on it."""

    sock: socket.socket
    calls: list[str] = field(default_factory=list)
    pending: int = 0  # bytes it still has to write

    # set by ClientMux.attach
    on_socket_open: Any = None
    on_socket_close: Any = None
    on_socket_register_write: Any = None
    on_socket_unregister_write: Any = None

    def open(self) -> None:
        self.on_socket_open(self, None, self.sock)

    def queue(self, pending: int) -> None:
        self.pending = pending
        self.on_socket_register_write(self, None, self.sock)

    def loop_read(self) -> int:
        self.calls.append("read")
        self.sock.recv(4096)
        return 0

    def loop_write(self) -> int:
        self.calls.append("write")
        self.pending = max(0, self.pending - 1)  # each call drains one piece
        if not self.pending:
            self.on_socket_unregister_write(self, None, self.sock)
        return 0

    def want_write(self) -> bool:
        return self.pending > 0

    def socket(self) -> socket.socket:
        return self.sock

    def loop_misc(self) -> int:
        self.calls.append("misc")
        return 0

    def __hash__(self) -> int:
        return id(self)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def attached(mux: ClientMux, sock: socket.socket) -> FakeClient:
    client = FakeClient(sock)
    mux.attach(client)  # type: ignore[arg-type]
    client.open()
    return client


def test_a_readable_socket_is_read(pair: tuple[socket.socket, socket.socket]) -> None:
    mux = ClientMux()
    client = attached(mux, pair[0])
    mux.run_once(0.0)
    assert client.calls == []
    pair[1].send(b"x")
    mux.run_once(1.0)
    assert client.calls == ["read"]


def test_what_a_turn_queued_is_written_at_its_end(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    mux = ClientMux()
    client = attached(mux, pair[0])
    client.queue(1)
    mux.run_once(5.0)  # returns at once: there is something to write
    assert client.calls == ["write"]
    client.queue(3)  # the socket takes one piece per turn: the rest waits for writability
    mux.run_once(0.0)
    assert client.calls == ["write", "write"]
    mux.run_once(1.0)
    mux.run_once(1.0)
    assert client.calls == ["write"] * 4 and not client.want_write()


def test_timers_run_in_order_once_due() -> None:
    clock = Clock()
    mux = ClientMux(clock=clock)
    ran: list[str] = []
    mux.call_at(102.0, lambda: ran.append("b"))
    mux.call_later(1.0, lambda: ran.append("a"))
    mux.run_once(0.0)
    assert ran == []
    clock.now = 102.5
    mux.run_once(0.0)
    assert ran == ["a", "b"]


def test_keepalive_work_runs_once_per_interval(pair: tuple[socket.socket, socket.socket]) -> None:
    clock = Clock()
    mux = ClientMux(misc_interval=1.0, clock=clock)
    client = attached(mux, pair[0])
    mux.run_once(0.0)
    clock.now += 1.0
    mux.run_once(0.0)
    mux.run_once(0.0)
    assert client.calls == ["misc"]


def test_a_closed_socket_leaves_the_loop(pair: tuple[socket.socket, socket.socket]) -> None:
    mux = ClientMux()
    client = attached(mux, pair[0])
    assert mux.sockets == 1
    client.on_socket_close(client, None, pair[0])
    assert mux.sockets == 0
    pair[1].send(b"x")
    mux.run_once(0.0)
    assert client.calls == []


def test_connects_are_paced_at_the_rate_with_jitter_inside_each_slot() -> None:
    import random

    clock = Clock()
    pacer = WavePacer(100.0, clock, random.Random(1))
    slots = [pacer.slot() for _ in range(300)]
    assert slots[-1] - clock.now < 3.0  # 300 at 100 a second
    for i, at in enumerate(slots):
        assert clock.now + i / 100 <= at < clock.now + (i + 1) / 100
    assert pacer.slot(not_before=200.0) >= 200.0
