"""Charts as inline SVG, drawn on the server: no script, no library, nothing to load.

``line_chart`` draws one or more series over time with the y range, the time span and a legend
as text; ``bar_chart`` compares a figure across model versions. Colours come from CSS classes
(``s0``, ``s1``, ...), so the page's stylesheet decides them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .markup import Html, el

WIDTH, HEIGHT = 640, 150
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 56, 8, 10, 20


@dataclass(frozen=True)
class Series:
    label: str
    points: Sequence[tuple[float, float]]  # (unix time, value), time increasing


def _fmt(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def line_chart(title: str, unit: str, series: Sequence[Series], now_label: str = "") -> Html:
    """``series`` on one time axis (their common span), y from 0 (or the lowest value, if
    negative) to the highest; an empty chart says there is no data."""
    drawn = [s for s in series if s.points]
    caption = el("figcaption", title, " ", el("span", f"({unit})", class_="unit"))
    if not drawn:
        return el("figure", caption, el("p", "no samples in this window", class_="empty"))
    xs = [x for s in drawn for x, _ in s.points]
    ys = [y for s in drawn for _, y in s.points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(0.0, min(ys)), max(ys)
    if y1 <= y0:
        y1 = y0 + 1.0
    if x1 <= x0:
        x1 = x0 + 1.0
    box = _Box(x0, x1, y0, y1)
    lines = [
        el("polyline", points=" ".join(box.at(x, y) for x, y in s.points), class_=f"line s{i}")
        if len(s.points) > 1
        else _dot(box.at(*s.points[0]), f"dot s{i}")  # one sample: a line would not show
        for i, s in enumerate(drawn)
    ]
    axes = _axes(box, now_label)
    svg = el(
        "svg",
        el("title", title),
        axes,
        lines,
        viewBox=f"0 0 {WIDTH} {HEIGHT}",
        role="img",
        class_="chart",
    )
    legend = el(
        "ul",
        [el("li", el("span", class_=f"key s{i}"), s.label) for i, s in enumerate(drawn)],
        class_="legend",
    )
    return el("figure", caption, svg, legend)


def _dot(at: str, css: str) -> Html:
    x, y = at.split(",")
    return el("circle", cx=x, cy=y, r=3, class_=css)


@dataclass(frozen=True)
class _Box:
    """The chart's ranges, and where a point falls in the drawing."""

    x0: float
    x1: float
    y0: float
    y1: float

    def at(self, x: float, y: float) -> str:
        inner_w, inner_h = WIDTH - PAD_LEFT - PAD_RIGHT, HEIGHT - PAD_TOP - PAD_BOTTOM
        px = PAD_LEFT + (x - self.x0) / (self.x1 - self.x0) * inner_w
        py = PAD_TOP + (1 - (y - self.y0) / (self.y1 - self.y0)) * inner_h
        return f"{px:.1f},{py:.1f}"


def _axes(box: _Box, now_label: str) -> list[Html]:
    bottom = HEIGHT - PAD_BOTTOM
    return [
        el("line", x1=PAD_LEFT, y1=PAD_TOP, x2=PAD_LEFT, y2=bottom, class_="axis"),
        el("line", x1=PAD_LEFT, y1=bottom, x2=WIDTH - PAD_RIGHT, y2=bottom, class_="axis"),
        el("text", _fmt(box.y1), x=PAD_LEFT - 4, y=PAD_TOP + 8, class_="tick end"),
        el("text", _fmt(box.y0), x=PAD_LEFT - 4, y=bottom, class_="tick end"),
        el("text", f"-{_span(box.x1 - box.x0)}", x=PAD_LEFT, y=HEIGHT - 4, class_="tick"),
        el("text", now_label or "latest", x=WIDTH - PAD_RIGHT, y=HEIGHT - 4, class_="tick end"),
    ]


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g}{unit}"
    return f"{seconds:.0f}s"


def bar_chart(title: str, unit: str, bars: Sequence[tuple[str, float | None]]) -> Html:
    """Horizontal bars, one a label (e.g. a model version); None is drawn as "no data"."""
    top = max([v for _, v in bars if v is not None] or [0.0]) or 1.0
    row_h, label_w, bar_w = 22, 150, 360
    rows = []
    for i, (label, value) in enumerate(bars):
        y = i * row_h
        width = 0.0 if value is None else value / top * bar_w
        shown = "no data" if value is None else f"{_fmt(value)} {unit}"
        rows += [
            el("text", label, x=0, y=y + 15, class_="tick"),
            el("rect", x=label_w, y=y + 4, width=f"{width:.1f}", height=14, class_=f"bar s{i}"),
            el("text", shown, x=label_w + width + 6, y=y + 15, class_="tick"),
        ]
    height = max(1, len(bars)) * row_h
    svg = el(
        "svg", el("title", title), rows, viewBox=f"0 0 {WIDTH} {height}", role="img", class_="bars"
    )
    return el("figure", el("figcaption", title), svg)
