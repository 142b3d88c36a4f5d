"""Text from devices, made safe to show: control characters rendered visibly escaped.

A device may publish any string in its state (``reason``), events (``detail``) or profile. Shown
raw, ``\\x1b]0;...\\x07\\x1b[2J`` rewrites an operator's terminal title and screen, ``\\r`` and
``\\n`` forge table rows, and Unicode bidi overrides reorder what a line appears to say. Every
output that carries device-supplied text (status tables, rollout status, telemetry tail, the
demo, log lines) passes it through ``printable``; the data itself is stored as received.
"""

from __future__ import annotations

import logging


def _escaped(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: str) -> str:
    """``text`` with every character that is not printable (C0 and C1 controls, DEL, tabs and
    newlines, format characters such as bidi overrides, separators other than the space)
    replaced by its ``\\xNN``/``\\uNNNN`` escape. Printable text comes back unchanged."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escaped(ch) for ch in text)


def printable_or_none(text: str | None) -> str | None:
    return None if text is None else printable(text)


class PrintableFormatter(logging.Formatter):
    """A log formatter that escapes the message (its arguments may come from devices); the
    traceback of a logged exception is ours and keeps its lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message)
        return super().formatMessage(record)
