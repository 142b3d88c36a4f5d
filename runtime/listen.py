"""Opening a listening socket, with an error an operator can act on.

``[Errno 98] Address already in use`` says neither which address nor what to do. Every listener
the project opens (the edge's local inference endpoint, ``modelcast broker``, the dashboard)
turns a failed bind into a ``ListenError`` that names the address, the cause, and the flags that
choose another address.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from typing import TypeVar

from .errors import ListenError

T = TypeVar("T")

_CAUSES = {
    errno.EADDRINUSE: "the address is already in use (another process listens there)",
    errno.EACCES: "permission denied (ports below 1024 need root)",
    errno.EADDRNOTAVAIL: "no interface of this host has that address",
}


def show_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen_error(what: str, host: str, port: int, exc: OSError, remedy: str) -> ListenError:
    """``what`` cannot listen on ``host:port``: the cause, then ``remedy`` (the flags)."""
    if isinstance(exc, socket.gaierror):
        cause = f"the host name does not resolve ({exc.strerror or exc})"
    else:
        cause = _CAUSES.get(exc.errno or 0, exc.strerror or str(exc))
    return ListenError(
        f"{what} cannot listen on {show_address(host, port)}: {cause}. {remedy}",
        address=(host, port),
        errno=exc.errno,
    )


def bind_or_explain(what: str, host: str, port: int, remedy: str, bind: Callable[[], T]) -> T:
    """``bind()`` (whatever opens the socket), its ``OSError`` turned into a ``ListenError``."""
    try:
        return bind()
    except OSError as exc:
        raise listen_error(what, host, port, exc, remedy) from exc


def check_free(what: str, host: str, port: int, remedy: str) -> None:
    """Bind ``host:port`` for a moment, as a server that reuses addresses would (so a port in
    TIME_WAIT counts as free), to fail early with a clear error before starting a program whose
    own message would be less helpful. A free port can still be taken before that program binds
    it: this is a courtesy check, not a reservation."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise listen_error(what, host, port, exc, remedy) from exc
    family, kind, proto, _name, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        bind_or_explain(what, host, port, remedy, lambda: sock.bind(address))
