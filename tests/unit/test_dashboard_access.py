"""Who may use the dashboard: the Host check on loopback, the token (query, cookie, bearer),
and the CSRF token and origin of every POST."""

from __future__ import annotations

import pytest

from modelcast.dashboard.access import COOKIE, Access, is_loopback
from modelcast.dashboard.web import Request

TOKEN = "s3cret-token-0123456789"


def get(path: str, **headers: str) -> Request:
    return Request.parse("GET", path, headers)


def post(path: str, body: str, **headers: str) -> Request:
    return Request.parse("POST", path, headers, body.encode())


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.0.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("192.168.1.4", False),
        ("example.org", False),
    ],
)
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_open_on_loopback_answers_to_its_own_host_names_only() -> None:
    access = Access.make(None, "127.0.0.1", 8471)
    assert access.check(get("/", Host="127.0.0.1:8471")).allowed
    assert access.check(get("/", Host="localhost:8471")).allowed
    rebound = access.check(get("/", Host="evil.example:8471"))  # DNS rebinding
    assert rebound.status == 421
    assert access.check(get("/")).status == 421


def test_the_token_once_then_a_cookie_that_is_not_the_token() -> None:
    access = Access.make(TOKEN, "0.0.0.0", 8471)
    assert access.check(get("/releases")).status == 401
    assert access.check(get("/releases?token=wrong")).status == 401
    verdict = access.check(get(f"/?state=active&token={TOKEN}"))
    assert verdict.status == 303 and verdict.redirect == "/?state=active"  # token dropped
    assert verdict.cookie == access.session and TOKEN not in access.session
    header = access.cookie_header()
    assert header.startswith(f"{COOKIE}={access.session};")
    assert "HttpOnly" in header and "SameSite=Strict" in header
    assert access.check(get("/", Cookie=f"{COOKIE}={access.session}")).allowed
    assert access.check(get("/", Cookie=f"{COOKIE}=forged")).status == 401
    assert access.check(get("/metrics", Authorization=f"Bearer {TOKEN}")).allowed
    assert access.check(get("/metrics", Authorization="Bearer nope")).status == 401


def test_the_cookie_survives_a_restart_and_dies_with_the_token() -> None:
    first, again = Access.make(TOKEN, "0.0.0.0", 1), Access.make(TOKEN, "0.0.0.0", 2)
    assert first.session == again.session and first.csrf == again.csrf
    assert Access.make(TOKEN + "x", "0.0.0.0", 1).session != first.session


def test_a_post_needs_the_csrf_token_and_no_foreign_origin() -> None:
    access = Access.make(None, "127.0.0.1", 8471)
    host = {"Host": "127.0.0.1:8471"}
    assert access.check_post(post("/rollouts/m@2/pause", f"csrf={access.csrf}", **host)).allowed
    assert access.check_post(post("/rollouts/m@2/pause", "", **host)).status == 403
    assert access.check_post(post("/rollouts/m@2/pause", "csrf=guess", **host)).status == 403
    foreign = post(
        "/rollouts/m@2/pause", f"csrf={access.csrf}", Origin="http://evil.example", **host
    )
    assert access.check_post(foreign).status == 403
    cross = post(
        "/rollouts/m@2/pause", f"csrf={access.csrf}", **{"Sec-Fetch-Site": "cross-site"}, **host
    )
    assert access.check_post(cross).status == 403
    ours = post(
        "/rollouts/m@2/pause", f"csrf={access.csrf}", Origin="http://127.0.0.1:8471", **host
    )
    assert access.check_post(ours).allowed
    # another dashboard process (no token): another key, so its pages' tokens are refused
    assert Access.make(None, "127.0.0.1", 8471).csrf != access.csrf
