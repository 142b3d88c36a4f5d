"""HTML built so that escaping is the default: a ``str`` is always text, only ``Html`` is markup.

Devices choose their own state reasons, event details, tags and profile strings, so every value
that reaches a page passes through ``text``: control characters are shown escaped
(``runtime.display.printable``: a bidi override cannot reorder a line) and ``<>&"'`` become
entities. ``el`` escapes every ``str`` child and attribute value it is given; the only way to put
markup on a page is to build it with ``el`` (or ``raw``, kept for the few fixed fragments of our
own, never for data).
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import TypeAlias
from urllib.parse import quote, urlencode

from runtime.display import printable

Child: TypeAlias = "Html | str | int | float | Iterable[Html | str | int | float | None] | None"
Attr: TypeAlias = "str | int | float | bool | None"

#: elements without an end tag
_VOID = frozenset({"br", "hr", "img", "input", "meta", "link"})


class Html(str):
    """Markup that is safe to send as it is (built by ``el``, ``text`` or ``raw``)."""

    __slots__ = ()


def text(value: object) -> Html:
    """``value`` as page text: control characters escaped visibly, then HTML-escaped."""
    if isinstance(value, Html):
        return value
    return Html(html.escape(printable(str(value)), quote=True))


def raw(markup: str) -> Html:
    """Our own fixed markup (never data): passed through unchanged."""
    return Html(markup)


def join(children: Iterable[Child], sep: str = "") -> Html:
    return Html(text(sep).join(_flatten(children)))


def _flatten(children: Iterable[Child]) -> Iterable[Html]:
    for child in children:
        if child is None:
            continue
        if isinstance(child, str | int | float):
            yield text(child)
        else:
            yield from _flatten(child)


def _attributes(attrs: dict[str, Attr]) -> str:
    parts = []
    for name, value in attrs.items():
        if value is None or value is False:
            continue
        name = name.rstrip("_").replace("_", "-")  # class_ -> class, data_gen -> data-gen
        parts.append(f" {name}" if value is True else f' {name}="{text(value)}"')
    return "".join(parts)


def el(tag: str, *children: Child, **attrs: Attr) -> Html:
    """``<tag attrs>children</tag>``; ``class_="x"`` for ``class``, ``data_x`` for ``data-x``."""
    opening = f"<{tag}{_attributes(attrs)}>"
    if tag in _VOID:
        return Html(opening)
    return Html(f"{opening}{join(children)}</{tag}>")


def href(path: str, **query: str | int | float | None) -> str:
    """A link to ``path`` with ``query`` (None values left out), each part URL-quoted."""
    params = {k: str(v) for k, v in query.items() if v is not None and v != ""}
    return quote(path) + ("?" + urlencode(params) if params else "")
