"""The dashboard's HTML: text is escaped unless it was built as markup, control characters are
shown escaped, and charts are SVG drawn from numbers only."""

from __future__ import annotations

from modelcast.dashboard.charts import Series, bar_chart, line_chart
from modelcast.dashboard.markup import Html, el, href, join, text

HOSTILE = '<img src=x onerror="alert(1)">\x1b]0;owned\x07\u202eevil & "quoted"'


def test_text_escapes_markup_and_shows_control_characters() -> None:
    shown = text(HOSTILE)
    assert "<" not in shown and ">" not in shown and '"' not in shown
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in shown
    assert "\\x1b]0;owned\\x07" in shown and "\\u202e" in shown
    assert "&amp;" in shown


def test_el_escapes_children_and_attributes_but_not_markup() -> None:
    page = el("p", HOSTILE, el("b", "bold"), title=HOSTILE, class_="x", hidden=True, id=None)
    assert page.startswith('<p title="&lt;img src=x onerror=&quot;alert(1)&quot;&gt;')
    assert ' class="x" hidden>' in page and "id=" not in page
    assert "<b>bold</b>" in page  # markup we built stays markup
    assert "<img" not in page


def test_a_plain_string_is_never_markup() -> None:
    assert join(["<b>", Html("<i>"), None, 3]) == "&lt;b&gt;<i>3"
    assert el("br") == "<br>"
    assert el("td", ["a", ["b", None]], data_gen=2) == '<td data-gen="2">ab</td>'


def test_links_quote_paths_and_queries() -> None:
    assert href("/devices/a b", window="1h", q=None) == "/devices/a%20b?window=1h"
    assert href("/", version="m@2", state="") == "/?version=m%402"


def test_line_chart_draws_each_series_and_says_when_empty() -> None:
    svg = line_chart(
        "CPU <now>", "%", [Series("cpu", [(0.0, 1.0), (60.0, 3.0)]), Series("none", [])]
    )
    assert svg.count("<polyline") == 1 and "CPU &lt;now&gt;" in svg
    assert 'points="56.0,' in svg  # the first point at the left edge
    assert "no samples" in line_chart("RSS", "MB", [Series("rss", [])])
    one = line_chart("RSS", "MB", [Series("rss", [(5.0, 80.0)])])
    assert "<circle" in one and "<polyline" not in one  # a single sample still shows


def test_bar_chart_scales_to_the_largest_value() -> None:
    svg = bar_chart("p95", "ms", [("v1", 10.0), ("v2", 20.0), ("v3", None)])
    assert 'width="180.0"' in svg and 'width="360.0"' in svg and "no data" in svg
