"""The fleet page: counts per state and per version, the filters, and one row per device
(online, state, download progress, active versions and variants, last seen, health)."""

from __future__ import annotations

from typing import Any

from coordinator.status import format_age
from protocol import UpdateState

from .fleet_view import PAGE_SIZES, FleetQuery, FleetRow, FleetView, fleet_view, state_of, versions
from .layout import PageContext, table, yes_no
from .markup import Html, el, href

STATES = tuple(state.value for state in UpdateState)


def filters(query: FleetQuery) -> Html:
    """The filter form (GET: every view has its own address, to bookmark or share)."""
    return el(
        "form",
        el("label", "device ", el("input", name="q", value=query.text, placeholder="id contains")),
        el("label", "state ", _select("state", query.state, ["", *STATES])),
        el("label", "runs ", el("input", name="version", value=query.version, placeholder="m@3")),
        el("label", "online ", _select("online", query.online, ["", "yes", "no"])),
        el("label", "tag ", el("input", name="tag", value=query.tag, placeholder="site=plant-3")),
        el(
            "label",
            el("input", type="checkbox", name="problems", value="1", checked=query.problems),
            " problems only",
        ),
        el(
            "label",
            "sort ",
            _select("sort", query.sort, ["device", "state", "last-seen", "health"]),
        ),
        el("label", "rows ", _select("per", str(query.per), [str(n) for n in PAGE_SIZES])),
        el("button", "Filter", type="submit"),
        el("a", "clear", href="/"),
        method="get",
        action="/",
        class_="filters",
    )


def _select(name: str, chosen: str, options: list[str]) -> Html:
    return el(
        "select",
        [el("option", o or "any", value=o, selected=o == chosen) for o in options],
        name=name,
    )


def live(ctx: PageContext, query: FleetQuery) -> Html:
    data = ctx.snapshot.fleet
    if data is None:
        return el("p", "No data read from the database yet.", class_="empty")
    view = fleet_view(data.status["devices"], data.figures, query)
    return Html(_summary(view, query) + _table(ctx, view) + _pager(view, query))


def _summary(view: FleetView, query: FleetQuery) -> Html:
    states = [
        el(
            "a",
            f"{state} {n}",
            href=href("/", **query.params(state=state, page=None)),
            class_=f"count st-{state}",
        )
        for state, n in view.by_state.items()
    ]
    runs = [
        el(
            "a",
            f"{release} {n}",
            href=href("/", **query.params(version=release, page=None)),
            class_="count",
        )
        for release, n in view.by_version.items()
    ]
    return el(
        "section",
        el(
            "p",
            el("strong", f"{view.total} devices"),
            f", {view.online} online; ",
            f"{view.matching} shown by the filters" if view.matching != view.total else "all shown",
        ),
        el("div", el("span", "by state", class_="what"), states or "-", class_="counts"),
        el("div", el("span", "by version", class_="what"), runs or "-", class_="counts"),
        class_="summary",
    )


def _table(ctx: PageContext, view: FleetView) -> Html:
    if not view.rows:
        return el("p", "No device matches.", class_="empty")
    head = ["device", "online", "state", "progress", "active", "last seen", "health"]
    return table(head, [_cells(ctx, row) for row in view.rows], id="devices", class_="devices")


def _cells(ctx: PageContext, row: FleetRow) -> list[Html | str]:
    d: dict[str, Any] = dict(row.device)
    online = yes_no(d.get("online"))
    state = state_of(d)
    if d.get("model") is not None and state not in ("idle", "active", "unknown"):
        state = f"{state} {d['model']}@{d['version']}"
    progress: Html | str = "-"
    if d.get("state") not in (None, "idle"):
        progress = el(
            "progress",
            f"{d['progress']:.0%}",
            value=f"{d['progress']:.3f}",
            max="1",
            title=f"{d['progress']:.0%}",
        )
    seen = "never" if d.get("last_seen") is None else format_age(ctx.now - d["last_seen"])
    return [
        el("a", d["device_id"], href=href(f"/devices/{d['device_id']}")),
        el("span", online, class_=f"online-{online}"),
        el("span", state, class_=f"st-{state_of(d)}"),
        progress,
        ", ".join(versions(d)) or "-",
        seen,
        el("span", row.health, class_=f"health {row.level}"),
    ]


def _pager(view: FleetView, query: FleetQuery) -> Html:
    if view.pages <= 1:
        return Html("")
    page = min(query.page, view.pages)
    links = [
        el("a", "previous", href=href("/", **query.params(page=page - 1))) if page > 1 else None,
        el("span", f"page {page} of {view.pages}"),
        el("a", "next", href=href("/", **query.params(page=page + 1)))
        if page < view.pages
        else None,
    ]
    return el("nav", links, class_="pager")
