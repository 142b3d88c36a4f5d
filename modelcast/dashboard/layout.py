"""What every page has: the document around its content, the navigation, the banners that say
what is wrong with the data (a failing broker, a locked database), and the small formatters the
pages share.

A page's changing part is ``<div id="live">``: ``static/dashboard.js`` asks for it again with
``X-Live: TOKEN`` (``live_token``: what it was made from; the answer is 204 while that has not
changed, after waiting up to an interval for a newer snapshot) and swaps it in, so pages
update without a reload and forms outside it keep what is being typed. When the data cannot be
refreshed, the last data stays on the page under a banner: it never goes blank.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass

from .broker_watch import BrokerState
from .markup import Html, el, join, raw
from .snapshot import Snapshot

NAV = (
    ("fleet", "/", "Fleet"),
    ("releases", "/releases", "Releases"),
    ("rollouts", "/rollouts", "Rollouts"),
    ("health", "/health", "Health"),
)


@dataclass(frozen=True)
class PageContext:
    """What a page needs besides its data: the fleet's name, the refresh interval, the CSRF
    token of its forms, the snapshot, what the broker says, and the time it is rendered."""

    fleet: str
    interval: float
    csrf: str
    snapshot: Snapshot
    broker: BrokerState
    now: float


def banners(ctx: PageContext) -> list[str]:
    """What is wrong with the data on the page, one sentence each (empty when all is well)."""
    snap, now, out = ctx.snapshot, ctx.now, []
    as_of = f"showing data from {clock(snap.taken_at)}" if snap.taken_at else "no data read yet"
    if snap.error is not None:
        since = clock(snap.failing_since) if snap.failing_since else "?"
        out.append(f"The database cannot be read since {since}: {snap.error}; {as_of}.")
    elif snap.reading_since is not None and now - snap.reading_since > max(5.0, 2 * ctx.interval):
        out.append(
            f"The database has not answered for {now - snap.reading_since:.0f} s (locked by "
            f"another process?); {as_of}."
        )
    if not ctx.broker.connected:
        out.append(
            f"The broker {ctx.broker.url} cannot be reached (since {clock(ctx.broker.since)}): "
            "chunk traffic is not counted; the fleet's state still comes from the database."
        )
    return out


def live_token(ctx: PageContext) -> str:
    """What a page's live region was made from: the snapshot's generation, and the banners
    (which change without a new snapshot: a read that hangs, a broker lost)."""
    said = zlib.crc32("\n".join(banners(ctx)).encode())
    return f"{ctx.snapshot.generation}-{said:08x}"


def generation_of(token: str) -> int | None:
    """The generation in a page's ``live_token`` (None: not one of ours)."""
    head = token.partition("-")[0]
    return int(head) if head.isdigit() else None


def live_region(ctx: PageContext, content: Html) -> Html:
    """The inside of ``#live``: banners, then the page's changing content."""
    notes = [el("div", text, class_="banner", role="alert") for text in banners(ctx)]
    stamp = el("p", f"as of {clock(ctx.snapshot.taken_at)}", class_="stamp")
    return join([*notes, content, stamp])


def document(
    ctx: PageContext,
    section: str,
    title: str,
    live: Html,
    top: Html | None = None,
    *,
    refreshed: bool = True,
) -> Html:
    """The whole page: ``top`` (forms) stays put, ``live`` is refreshed (unless not
    ``refreshed``: a question the page asks must not change under the operator's eyes)."""
    nav = el(
        "nav",
        [
            el("a", label, href=path, class_="on" if key == section else None)
            for key, path, label in NAV
        ],
        el("a", "/metrics", href="/metrics", class_="aside"),
        el("a", "API", href="/api", class_="aside"),
    )
    head = el(
        "head",
        raw('<meta charset="utf-8">'),
        raw('<meta name="viewport" content="width=device-width, initial-scale=1">'),
        el("title", f"{title} - modelcast {ctx.fleet}"),
        el("link", rel="stylesheet", href="/static/dashboard.css"),
        el("script", src="/static/dashboard.js", defer=True),
    )
    body = el(
        "body",
        el(
            "header",
            el("strong", "modelcast"),
            el("span", f"fleet {ctx.fleet}", class_="fleet"),
            nav,
        ),
        el(
            "main",
            el("h1", title),
            top,
            el("div", live, id="live" if refreshed else "fixed", data_gen=live_token(ctx)),
        ),
        data_interval=ctx.interval,
    )
    return Html("<!doctype html>\n" + el("html", head, body, lang="en"))


# --- formatters ------------------------------------------------------------------------------
def clock(ts: float | None) -> str:
    """``14:03:12`` today, else ``2026-05-01 14:03``; ``-`` for None."""
    if ts is None:
        return "-"
    if time.strftime("%Y-%m-%d", time.localtime(ts)) == time.strftime("%Y-%m-%d"):
        return time.strftime("%H:%M:%S", time.localtime(ts))
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def size(n: float | None) -> str:
    """Bytes as ``812 B``, ``4.2 KB``, ``86.6 MB``, ``1.2 GB``."""
    if n is None:
        return "-"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def yes_no(value: bool | None) -> str:
    """``yes``, ``no``, or ``?`` (not known)."""
    return "?" if value is None else ("yes" if value else "no")


def pct(rate: float | None, digits: int = 1) -> str:
    return "-" if rate is None else f"{rate * 100:.{digits}f}%"


def table(head: list[str], rows: list[list[Html | str]], **attrs: str) -> Html:
    return el(
        "table",
        el("thead", el("tr", [el("th", h) for h in head])),
        el("tbody", [el("tr", [el("td", c) for c in row]) for row in rows]),
        **attrs,
    )
