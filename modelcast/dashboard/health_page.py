"""Health per model version: activation failures, error rate and latency, the versions of each
model side by side (the figures ``modelcast status`` shows and rollouts gate on, over the
dashboard's ``--window``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .charts import bar_chart
from .layout import PageContext, pct, table
from .markup import Html, el, join

ROWS = (
    ("devices", "devices", str),
    ("inferences", "inferences", str),
    ("errors", "errors", str),
    ("error rate", "error_rate", lambda v: pct(v, 2)),
    ("p95 latency", "latency_p95_ms", lambda v: "-" if v is None else f"{v:.1f} ms"),
    ("activation failures", "activation_failures", str),
)


def live(ctx: PageContext) -> Html:
    data = ctx.snapshot.fleet
    if data is None:
        return el("p", "No data read from the database yet.", class_="empty")
    health = data.status.get("health") or []
    window = el(
        "p", f"Over the telemetry of the last {data.window:g} s (device clock).", class_="note"
    )
    if not health:
        return join(
            [
                window,
                el("p", "No inference statistics or activation failures reported.", class_="empty"),
            ]
        )
    deployed = data.status.get("deployments") or {}
    sections = [
        _model(model, [h for h in health if h["model"] == model], deployed.get(model))
        for model in sorted({h["model"] for h in health})
    ]
    return join([window, *sections])


def _model(model: str, versions: list[Mapping[str, Any]], deployed: int | None) -> Html:
    head = [
        "",
        *(
            f"v{h['version']}" + (" (deployed)" if h["version"] == deployed else "")
            for h in versions
        ),
    ]
    rows: list[list[Html | str]] = [
        [label, *(shown(h[key]) for h in versions)] for label, key, shown in ROWS
    ]
    labels = [f"v{h['version']}" for h in versions]
    charts = el(
        "div",
        bar_chart("error rate", "%", _bars(labels, versions, "error_rate", 100.0)),
        bar_chart("p95 latency", "ms", _bars(labels, versions, "latency_p95_ms", 1.0)),
        bar_chart("activation failures", "", _bars(labels, versions, "activation_failures", 1.0)),
        class_="side",
    )
    return el(
        "section", el("h2", model), table(head, rows, class_="health"), charts, class_="model"
    )


def _bars(
    labels: list[str], versions: list[Mapping[str, Any]], key: str, scale: float
) -> list[tuple[str, float | None]]:
    return [
        (label, None if h[key] is None else float(h[key]) * scale)
        for label, h in zip(labels, versions, strict=True)
    ]
