"""A device's page: its state now, telemetry over time as charts (CPU, RSS, inference latency
p50/p95, errors), its event history, rejections by reason, and its config, tags and profile.
Everything in it came from the device: all of it is text (``markup``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from coordinator.clock_skew import describe_skew
from coordinator.status import format_age

from .charts import Series, line_chart
from .fleet_view import health, state_of, versions
from .layout import PageContext, clock, table, yes_no
from .markup import Html, el, href, join
from .source import DeviceDetail

WINDOWS = (("1h", 3600.0), ("6h", 21600.0), ("24h", 86400.0), ("7d", 604800.0))


def window_of(params: Mapping[str, str]) -> float:
    chosen = params.get("window", "1h")
    return dict(WINDOWS).get(chosen, 3600.0)


def window_links(device: str, window: float) -> Html:
    return el(
        "nav",
        el("span", "telemetry over ", class_="what"),
        [
            el(
                "a",
                label,
                href=href(f"/devices/{device}", window=label),
                class_="on" if seconds == window else None,
            )
            for label, seconds in WINDOWS
        ],
        class_="windows",
    )


def find_device(ctx: PageContext, device: str) -> Mapping[str, Any] | None:
    data = ctx.snapshot.fleet
    if data is None:
        return None
    found: Mapping[str, Any] | None = next(
        (d for d in data.status["devices"] if d["device_id"] == device), None
    )
    return found


def live(ctx: PageContext, device: str, detail: DeviceDetail | None) -> Html:
    row = find_device(ctx, device)
    if row is None:
        return el("p", f"No device {device} in fleet {ctx.fleet} (yet).", class_="empty")
    figures = ctx.snapshot.fleet.figures.get(device) if ctx.snapshot.fleet else None
    parts = [el("section", el("h2", "Now"), _now(ctx, row, figures), class_="now")]
    if detail is None:
        parts.append(el("p", "The device's history could not be read yet.", class_="empty"))
    else:
        parts += [
            el("section", el("h2", "Telemetry"), _charts(detail), class_="charts"),
            el("section", el("h2", "Events"), _events(detail), class_="events"),
            el("section", el("h2", "Rejections by reason"), _rejections(detail)),
            el("section", el("h2", "Config, tags and profile"), _about(row, detail)),
        ]
    return join(parts)


def _pairs(items: list[tuple[str, Html | str]]) -> Html:
    return el("dl", [join([el("dt", k), el("dd", v)]) for k, v in items], class_="pairs")


def _now(ctx: PageContext, d: Mapping[str, Any], figures: Mapping[str, Any] | None) -> Html:
    level, said = health(d, figures)
    metrics = d.get("metrics") or {}
    state = state_of(d)
    if d.get("model") is not None and state not in ("idle", "active"):
        state += f" {d['model']}@{d['version']} ({d['progress']:.0%})"
    limited = d.get("rate_limited") or {}
    cpu = metrics.get("cpu_pct")
    return _pairs(
        [
            ("health", el("span", said, class_=f"health {level}")),
            ("online", yes_no(d.get("online"))),
            ("state", el("span", state, class_=f"st-{state_of(d)}")),
            ("reason", d.get("reason") or "-"),
            ("active", ", ".join(versions(d)) or "-"),
            (
                "last seen",
                "never"
                if d.get("last_seen") is None
                else f"{clock(d['last_seen'])} ({format_age(ctx.now - d['last_seen'])})",
            ),
            ("clock", describe_skew(d.get("clock_skew"), d.get("clock_checked"))),
            ("CPU", "-" if cpu is None else f"{cpu:.0f}%"),
            ("RSS", "-" if metrics.get("rss_mb") is None else f"{metrics['rss_mb']:.0f} MB"),
            (
                "disk free",
                "-" if metrics.get("disk_free_mb") is None else f"{metrics['disk_free_mb']:.0f} MB",
            ),
            ("rejections", str(d.get("rejections") or 0)),
            (
                "rate-limited",
                f"{limited.get('reports', 0)} reports, "
                f"{limited.get('requests', 0)} chunk requests dropped",
            ),
        ]
    )


def _series(rows: list[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    return [(r["ts"], float(r[key])) for r in rows if r.get(key) is not None]


def _charts(detail: DeviceDetail) -> Html:
    rows = detail.series
    return join(
        [
            line_chart("CPU", "% of one core", [Series("cpu", _series(rows, "cpu_pct"))]),
            line_chart("RSS", "MB", [Series("rss", _series(rows, "rss_mb"))]),
            line_chart(
                "Inference latency",
                "ms",
                [
                    Series("p50", _series(rows, "latency_p50_ms")),
                    Series("p95", _series(rows, "latency_p95_ms")),
                ],
            ),
            line_chart(
                "Inferences and errors",
                "calls per sample",
                [
                    Series("inferences", _series(rows, "inferences")),
                    Series("errors", _series(rows, "errors")),
                ],
            ),
        ]
    )


def _events(detail: DeviceDetail) -> Html:
    if not detail.events:
        return el("p", "No events reported (or none retained).", class_="empty")
    rows: list[list[Html | str]] = []
    for e in detail.events:
        release = f"{e['model']}@{e['version']}" if e.get("model") else "-"
        when = clock(e["ts"]) + (" (replayed)" if e.get("hist") else "")
        rows.append(
            [
                when,
                e["event"],
                release,
                e.get("reason") or "",
                e.get("detail") or "",
                e.get("topic") or "",
            ]
        )
    return table(["time (device)", "event", "release", "reason", "detail", "topic"], rows)


def _rejections(detail: DeviceDetail) -> Html:
    if not detail.rejections:
        return el("p", "No message rejected.", class_="empty")
    return table(["reason", "rejections"], [[r, str(n)] for r, n in detail.rejections.items()])


def _about(d: Mapping[str, Any], detail: DeviceDetail) -> Html:
    about = detail.about or {}
    profile = dict(about.get("profile") or {})
    config = profile.pop("config", None) or d.get("config") or {}
    tags = profile.pop("tags", None) or {}
    variants = profile.pop("variants", None) or {}
    listed = [("agent", about.get("agent") or "-"), ("boot", about.get("boot") or "-")]
    listed += [(k, _value(v)) for k, v in sorted(profile.items())]
    return join(
        [
            el("h3", "Config (effective policy, and what the fleet pushed)"),
            _pairs([(k, _value(v)) for k, v in sorted(config.items())]) if config else "-",
            el("h3", "Tags"),
            _pairs([(k, _value(v)) for k, v in sorted(tags.items())]) if tags else "-",
            el("h3", "Variants"),
            _pairs([(k, _value(v)) for k, v in sorted(variants.items())]) if variants else "-",
            el("h3", "Profile"),
            _pairs(listed),
        ]
    )


def _value(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "-"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True) if value else "-"
    return "-" if value is None else str(value)
