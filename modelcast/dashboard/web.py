"""The dashboard's HTTP layer: a request and a response as plain values, and the standard
library's threading server that turns sockets into them (``handle`` does the rest).

The server binds through ``runtime.listen`` (a taken port is a clear error naming the flags),
runs one thread per request, and sends the headers every page needs: no caching, no framing,
no sniffing, no referrer, and a Content-Security-Policy that allows our own scripts and styles
only (an injected ``<script>`` would not run even if escaping failed).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from runtime.listen import bind_or_explain

log = logging.getLogger("modelcast.dashboard")

#: a form is a few fields; anything larger is not one of ours
MAX_BODY = 64 << 10

SECURITY_HEADERS = (
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    # same-origin, not no-referrer: with no-referrer a browser sends "Origin: null" with our own
    # forms, and the origin check of a POST could not tell them from a foreign page's
    ("Referrer-Policy", "same-origin"),
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
)

REMEDY = "Choose another with --port PORT (or --bind ADDRESS)"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)  # names in lower case
    cookies: Mapping[str, str] = field(default_factory=dict)
    form: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(
        cls, method: str, target: str, headers: Mapping[str, str], body: bytes = b""
    ) -> Request:
        """From the request line's target (path and query), headers and a form body."""
        parts = urlsplit(target)
        lowered = {k.lower(): v for k, v in headers.items()}
        form = dict(parse_qsl(body.decode("utf-8", "replace"))) if body else {}
        return cls(
            method=method,
            path=parts.path or "/",
            query=dict(parse_qsl(parts.query)),
            headers=lowered,
            cookies=_cookies(lowered.get("cookie", "")),
            form=form,
        )


def _cookies(header: str) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return {}
    return {name: morsel.value for name, morsel in jar.items()}


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def html(cls, markup: str, status: int = 200, **kw: Any) -> Response:
        return cls(status, markup.encode(), **kw)

    @classmethod
    def json(cls, value: Any, status: int = 200) -> Response:
        body = json.dumps(value, indent=1, sort_keys=True).encode()
        return cls(status, body, "application/json")

    @classmethod
    def redirect(cls, location: str, *headers: tuple[str, str]) -> Response:
        return cls(303, b"", "text/plain", (("Location", location), *headers))


Handle = Callable[[Request], Response]


class DashboardServer:
    """A threading HTTP server on ``host:port`` that answers every request with ``handle``."""

    def __init__(self, host: str, port: int, handle: Handle) -> None:
        handler = _handler_class(handle)
        self._server = bind_or_explain(
            "the dashboard", host, port, REMEDY, lambda: ThreadingHTTPServer((host, port), handler)
        )
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="dashboard-http", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler_class(handle: Handle) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "modelcast-dashboard"
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("http %s", format % args)

        def do_GET(self) -> None:
            self._serve(b"")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._send(Response(413, b"request body too large", "text/plain"), 0.0)
                self.close_connection = True
                return
            self._serve(self.rfile.read(length))

        def _serve(self, body: bytes) -> None:
            started = time.perf_counter()
            request = Request.parse(self.command, self.path, dict(self.headers.items()), body)
            try:
                response = handle(request)
            except Exception:  # a bug in one page must not take the server down
                log.exception("dashboard: %s %s failed", self.command, request.path)
                response = Response(500, b"internal error: see the dashboard's log", "text/plain")
            self._send(response, time.perf_counter() - started)

        def _send(self, response: Response, seconds: float) -> None:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            # the server's own time for this response, shown by browsers' developer tools
            self.send_header("Server-Timing", f"app;dur={seconds * 1000:.1f}")
            for name, value in (*SECURITY_HEADERS, *response.headers):
                self.send_header(name, value)
            self.end_headers()
            try:
                self.wfile.write(response.body)
            except (BrokenPipeError, ConnectionResetError):  # the page went away meanwhile
                self.close_connection = True

    return Handler
