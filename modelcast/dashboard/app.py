"""The dashboard's routes: every request passes the access rules, then is answered from the
latest snapshot (pages, their live fragments, ``/api``, ``/metrics``) or, for the rollout
buttons, writes the database the way ``modelcast rollout pause|resume|abort`` does.

    GET  /                        fleet (filters in the query string)
    GET  /devices/ID              a device (?window=1h|6h|24h|7d)
    GET  /releases  /rollouts  /health
    POST /rollouts/NAME@V/ACTION  pause, resume, abort (abort asks first: confirm=yes)
    GET  /metrics                 Prometheus
    GET  /api...                  JSON (``api``)
    GET  /static/...              the page's script and stylesheet

A page's script asks for its live fragment with the header ``X-Live: TOKEN`` (what its fragment
was made from, ``layout.live_token``): the answer waits up to one interval for a newer snapshot,
then is the fragment (with its token in ``X-Live-Generation``) or 204 when nothing changed, so an
open page costs no database read at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from coordinator.errors import RolloutError
from coordinator.rollout_store import RolloutStore
from coordinator.rollouts import change_rollout

from ..cli.parsing import parse_release
from ..errors import CommandError
from . import api, device_page, fleet_page, health_page, releases_page, rollouts_page
from .access import Access
from .broker_watch import BrokerState
from .exposition import CONTENT_TYPE, Scrape, exposition
from .fleet_view import FleetQuery
from .layout import PageContext, document, generation_of, live_region, live_token
from .markup import Html, el
from .snapshot import SnapshotReader
from .web import Request, Response

STATIC = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}


@dataclass(frozen=True)
class Page:
    section: str
    title: str
    live: Html
    top: Html | None = None
    status: int = 200


class DashboardApp:
    def __init__(
        self,
        *,
        db: Path,
        fleet: str,
        access: Access,
        reader: SnapshotReader,
        broker: Callable[[], BrokerState],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.fleet = fleet
        self.access = access
        self.reader = reader
        self._broker = broker
        self._clock = clock
        folder = resources.files(__package__) / "static"
        self._static = {name: (folder / name).read_bytes() for name in STATIC}

    def context(self) -> PageContext:
        return PageContext(
            fleet=self.fleet,
            interval=self.reader.interval,
            csrf=self.access.csrf,
            snapshot=self.reader.snapshot(),
            broker=self._broker(),
            now=self._clock(),
        )

    def handle(self, request: Request) -> Response:
        static = request.path.startswith("/static/")
        name = request.path.removeprefix("/static/")
        if request.method == "GET" and static and name in STATIC:  # our own code: no secret in it
            return Response(200, self._static[name], f"{STATIC[name]}; charset=utf-8")
        verdict = self.access.check(request)
        if verdict.redirect is not None:
            return Response.redirect(verdict.redirect, ("Set-Cookie", self.access.cookie_header()))
        if not verdict.allowed:
            return _refused(verdict.status, verdict.message)
        if request.method == "POST":
            verdict = self.access.check_post(request)
            if not verdict.allowed:
                return _refused(verdict.status, verdict.message)
            return self._post(request)
        if request.method != "GET":
            return _refused(405, f"{request.method} is not served here")
        return self._get(request)

    def _get(self, request: Request) -> Response:
        path = request.path
        if path == "/favicon.ico":
            return Response(204, b"", "text/plain")
        live = request.headers.get("x-live")
        seen = generation_of(live) if live is not None else None
        if seen is not None:  # a page's script: wait a while for something newer
            self.reader.wait_for_generation(seen, self.reader.interval)
        ctx = self.context()
        if path == "/metrics":
            scrape = Scrape(ctx.snapshot, ctx.broker, ctx.now)
            return Response(200, exposition(lambda: scrape), CONTENT_TYPE)
        if path == "/api" or path.startswith("/api/"):
            return api.handle_api(request, ctx, self.reader)
        page = self._page(request, ctx)
        if page is None:
            return _refused(404, f"no page {path}")
        if live is not None:
            token = live_token(ctx)
            if token == live:
                return Response(204, b"", "text/plain")
            body = live_region(ctx, page.live)
            return Response.html(body, page.status, headers=(("X-Live-Generation", token),))
        return Response.html(
            document(ctx, page.section, page.title, live_region(ctx, page.live), page.top),
            page.status,
        )

    def _page(self, request: Request, ctx: PageContext) -> Page | None:
        path = request.path
        if path == "/":
            query = FleetQuery.from_params(request.query)
            return Page("fleet", "Fleet", fleet_page.live(ctx, query), fleet_page.filters(query))
        if path.startswith("/devices/"):
            device = path.removeprefix("/devices/")
            window = device_page.window_of(request.query)
            detail = self.reader.device(device, window)
            ctx = self.context()  # the read may have brought a newer snapshot
            return Page(
                "fleet",
                f"Device {device}",
                device_page.live(ctx, device, detail),
                device_page.window_links(device, window),
            )
        if path == "/releases":
            return Page("releases", "Releases", releases_page.live(ctx))
        if path == "/rollouts":
            return Page("rollouts", "Rollouts", rollouts_page.live(ctx, _notice(request, ctx)))
        if path == "/health":
            return Page("health", "Health per model version", health_page.live(ctx))
        return None

    def _post(self, request: Request) -> Response:
        parts = request.path.strip("/").split("/")
        if len(parts) != 3 or parts[0] != "rollouts" or parts[2] not in rollouts_page.DONE:
            return _refused(404, f"no action {request.path}")
        release, action = parts[1], parts[2]
        ctx = self.context()
        if action == "abort" and request.form.get("confirm") != "yes":
            report = _find_rollout(ctx, release)
            if report is None:
                return _refused(404, f"no rollout {release}")
            question = rollouts_page.confirm_abort(ctx, report)
            return Response.html(
                document(ctx, "rollouts", f"Abort {release}?", question, refreshed=False)
            )
        try:
            name, version = parse_release(release)
            store = RolloutStore(self.db)
            try:
                change_rollout(store, fleet=self.fleet, name=name, version=version, action=action)
            finally:
                store.close()
        except (RolloutError, CommandError) as exc:
            live = rollouts_page.live(ctx, f"Could not {action} {release}: {exc}")
            said = document(ctx, "rollouts", "Rollouts", live_region(ctx, live), refreshed=False)
            return Response.html(said, 409)
        self.reader.refresh()
        return Response.redirect(f"/rollouts?done={action}&rollout={release}")


def _find_rollout(ctx: PageContext, release: str) -> dict[str, Any] | None:
    data = ctx.snapshot.fleet
    return next((r for r in data.rollouts if r["rollout"] == release), None) if data else None


def _notice(request: Request, ctx: PageContext) -> str | None:
    """After a button: what was done (only for a known action and rollout: never echoed)."""
    done, release = request.query.get("done"), request.query.get("rollout", "")
    if done not in rollouts_page.DONE or _find_rollout(ctx, release) is None:
        return None
    return (
        f"Rollout {release} {rollouts_page.DONE[done]}; a running coordinator acts on it "
        "within its poll interval."
    )


def _refused(status: int, message: str) -> Response:
    body = Html("<!doctype html>\n") + el(
        "html",
        el(
            "head",
            el("title", f"{status}"),
            el("link", rel="stylesheet", href="/static/dashboard.css"),
        ),
        el("body", el("main", el("h1", f"{status}"), el("p", message))),
        lang="en",
    )
    return Response.html(body, status)
