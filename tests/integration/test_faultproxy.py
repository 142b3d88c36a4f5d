"""The fault proxy itself, in front of a plain TCP echo server."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from testkit.faultproxy import FaultProxy

TIMEOUT = 10.0


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        try:
            while data := self.request.recv(65536):
                self.request.sendall(data)
        except (ConnectionResetError, BrokenPipeError):
            pass  # the proxy cut this connection: expected in these tests


class _EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = _EchoServer(("127.0.0.1", 0), _Echo)
    # A short poll interval only makes shutdown() quick; serving is event driven.
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def proxy(echo_port: int) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", echo_port, seed=1) as running:
        yield running


def _connect(proxy: FaultProxy) -> socket.socket:
    sock = socket.create_connection((proxy.host, proxy.port), timeout=TIMEOUT)
    sock.settimeout(TIMEOUT)
    return sock


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        data = sock.recv(n - len(buf))
        if not data:
            raise AssertionError(f"connection closed after {len(buf)} of {n} bytes")
        buf += data
    return bytes(buf)


def _closed_by_peer(sock: socket.socket) -> bool:
    """True if the next recv reports EOF or a reset (within the socket timeout)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_forwards_bytes_and_counts_them(proxy: FaultProxy) -> None:
    with _connect(proxy) as sock:
        sock.sendall(b"hello proxy")
        assert _recv_exactly(sock, 11) == b"hello proxy"
    assert proxy.bytes_to_server == 11
    assert proxy.bytes_to_client == 11
    assert proxy.connections == 1
    assert proxy.url == f"mqtt://127.0.0.1:{proxy.port}"


def test_rate_cap_forwards_everything_and_not_faster(proxy: FaultProxy) -> None:
    rate = 100_000
    proxy.rate_bytes_per_s = rate
    payload = bytes(range(256)) * 100  # 25_600 bytes each way
    started = time.monotonic()
    with _connect(proxy) as sock:
        sock.sendall(payload)
        assert _recv_exactly(sock, len(payload)) == payload
    elapsed = time.monotonic() - started
    assert proxy.bytes_to_server == len(payload)
    assert proxy.bytes_to_client == len(payload)
    # Pacing only ever delays, so this lower bound holds however slow the machine is.
    assert elapsed >= 0.8 * len(payload) / rate


def test_rate_cap_rejects_nonsense(proxy: FaultProxy) -> None:
    with pytest.raises(ValueError):
        proxy.rate_bytes_per_s = 0
    with pytest.raises(ValueError):
        proxy.latency_s = -1


def test_latency_delays_each_direction(proxy: FaultProxy) -> None:
    proxy.latency_s = 0.15
    with _connect(proxy) as sock:
        started = time.monotonic()
        sock.sendall(b"ping")
        assert _recv_exactly(sock, 4) == b"ping"
        assert time.monotonic() - started >= 0.3


def test_cut_all_closes_client_side(proxy: FaultProxy) -> None:
    with _connect(proxy) as sock:
        sock.sendall(b"x")
        _recv_exactly(sock, 1)
        assert proxy.cut_all() == 1
        assert _closed_by_peer(sock)
    assert proxy.cuts == 1
    assert proxy.wait_until(lambda p: p.active_connections == 0, TIMEOUT)


def test_stall_holds_data_until_unstall(proxy: FaultProxy) -> None:
    with _connect(proxy) as sock:
        sock.sendall(b"a")
        assert _recv_exactly(sock, 1) == b"a"
        proxy.stall()
        assert proxy.stalled
        sock.sendall(b"held")
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(16)
        assert proxy.bytes_to_server == 1  # nothing new forwarded, socket still open
        proxy.unstall()
        sock.settimeout(TIMEOUT)
        assert _recv_exactly(sock, 4) == b"held"
    assert proxy.cuts == 0


def test_refuse_for_closes_new_connections(proxy: FaultProxy) -> None:
    proxy.refuse_for(60)
    with _connect(proxy) as sock:
        # The refusal may race our send: either write or read sees the close.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(b"x")
        assert _closed_by_peer(sock)
    assert proxy.refused == 1
    assert proxy.bytes_to_server == 0
    proxy.refuse_for(0)  # outage over
    with _connect(proxy) as sock:
        sock.sendall(b"ok")
        assert _recv_exactly(sock, 2) == b"ok"


def test_cut_after_bytes_cuts_mid_stream(proxy: FaultProxy) -> None:
    proxy.cut_after_bytes = (10, 10)
    with _connect(proxy) as sock:
        sock.sendall(b"0123456789abcdefghij")
        assert proxy.wait_until(lambda p: p.cuts == 1, TIMEOUT)
        received = b""
        try:
            while chunk := sock.recv(64):
                received += chunk
        except ConnectionResetError:
            pass
    assert proxy.bytes_to_server + proxy.bytes_to_client == 10
    # An RST may drop some of what was forwarded, never add to it.
    assert len(received) <= proxy.bytes_to_client


def test_cut_after_seconds_is_seeded(proxy: FaultProxy) -> None:
    proxy.cut_after = (0.05, 0.2)
    with _connect(proxy) as sock:
        sock.sendall(b"x")
        assert _recv_exactly(sock, 1) == b"x"
        assert _closed_by_peer(sock)  # within the socket timeout, no sleeping
    assert proxy.cuts == 1


def test_upstream_down_closes_client() -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        dead_port = placeholder.getsockname()[1]  # bound, never listening
        with FaultProxy("127.0.0.1", dead_port) as proxy, _connect(proxy) as sock:
            assert _closed_by_peer(sock)
            assert proxy.active_connections == 0
