"""Who may use the dashboard: the token, its cookie, CSRF tokens and the Host check, as pure
functions of a request (``web.Request``), so that each rule is unit-tested without a socket.

* On loopback without ``--token-file`` the dashboard is open to this host's users, like
  ``modelcast status``. Two attacks remain from a web page the operator visits: a form posted to
  ``127.0.0.1`` (refused: every POST carries a CSRF token that page cannot read) and DNS
  rebinding (a hostile name resolved to 127.0.0.1 to read the pages: refused, the Host header
  must name this dashboard).
* With ``--token-file`` every request needs the token: ``?token=T`` once (answered with a cookie
  and a redirect to the same page without the token, so it stays out of the address bar, the
  history and Referer headers), then the cookie (HttpOnly, SameSite=Strict); scripts and
  Prometheus send ``Authorization: Bearer T``. The cookie is an HMAC of the token, not the token,
  and survives a restart of the dashboard; a new token in the file ends every session.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass
from urllib.parse import urlencode

from .web import Request

COOKIE = "modelcast_dashboard"
CSRF_FIELD = "csrf"
TOKEN_PARAM = "token"


@dataclass(frozen=True)
class Verdict:
    """What to do with a request: serve it (``status`` 0), or answer ``status`` with
    ``message``; ``redirect`` with ``cookie`` after a valid ``?token=``."""

    status: int = 0
    message: str = ""
    redirect: str | None = None
    cookie: str | None = None

    @property
    def allowed(self) -> bool:
        return self.status == 0


ALLOW = Verdict()


def is_loopback(host: str) -> bool:
    """``host`` is a loopback address or ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _mac(key: bytes, what: str) -> str:
    return hmac.new(key, what.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Access:
    """The rules of one dashboard: its token (None: open, loopback only), the Host values it
    answers to when open, and the key of its CSRF tokens."""

    token: str | None
    hosts: frozenset[str]
    key: bytes

    @classmethod
    def make(cls, token: str | None, bind: str, port: int) -> Access:
        """The rules for a dashboard listening on ``bind:port``: ``token`` keys its cookie and
        CSRF tokens (they survive restarts); without one, a random key per process."""
        names = {"127.0.0.1", "localhost", "[::1]", bind if ":" not in bind else f"[{bind}]"}
        key = token.encode() if token is not None else secrets.token_bytes(32)
        return cls(token, frozenset(f"{name}:{port}" for name in names), key)

    @property
    def session(self) -> str:
        """The cookie's value: proves the token was given, without being it."""
        return _mac(self.key, "session")

    @property
    def csrf(self) -> str:
        """The token every POST must carry (in the form field ``csrf``)."""
        return _mac(self.key, "csrf")

    def check(self, request: Request) -> Verdict:
        """Whether ``request`` may be served (then, for a POST, ``check_post`` too)."""
        if self.token is None:
            if request.headers.get("host", "").lower() not in self.hosts:
                return Verdict(421, "this dashboard answers to its own address only")
            return ALLOW
        given = request.query.get(TOKEN_PARAM)
        if given is not None:
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                return Verdict(401, "wrong token")
            rest = {k: v for k, v in request.query.items() if k != TOKEN_PARAM}
            target = request.path + ("?" + urlencode(rest) if rest else "")
            return Verdict(303, "signed in", redirect=target, cookie=self.session)
        if hmac.compare_digest(request.cookies.get(COOKIE, "").encode(), self.session.encode()):
            return ALLOW
        bearer = request.headers.get("authorization", "")
        if bearer.startswith("Bearer ") and hmac.compare_digest(
            bearer[len("Bearer ") :].strip().encode(), self.token.encode()
        ):
            return ALLOW
        return Verdict(401, "this dashboard needs its token: open it with ?token=TOKEN")

    def check_post(self, request: Request) -> Verdict:
        """A POST must come from one of our pages: its CSRF token, and no foreign Origin."""
        site = request.headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            return Verdict(403, f"refused a {site} request")
        origin = request.headers.get("origin")
        if origin is not None and origin != f"http://{request.headers.get('host', '')}":
            return Verdict(403, "refused a request from another origin")
        if not hmac.compare_digest(request.form.get(CSRF_FIELD, "").encode(), self.csrf.encode()):
            return Verdict(403, "the form's CSRF token is missing or stale: reload the page")
        return ALLOW

    def cookie_header(self) -> str:
        return f"{COOKIE}={self.session}; HttpOnly; SameSite=Strict; Path=/"
