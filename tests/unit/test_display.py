"""Device-supplied text is shown with its control characters visibly escaped."""

from __future__ import annotations

import io
import logging

from hypothesis import given
from hypothesis import strategies as st

from runtime.display import PrintableFormatter, printable

ATTACK = "ok\x1b]0;pwned\x07\x1b[2J\r\nd9  ACTIVE  m@9\u202egnp.exe\x9b31m"


def test_controls_escapes_and_bidi_overrides_are_escaped_visibly() -> None:
    shown = printable(ATTACK)
    assert shown == ("ok\\x1b]0;pwned\\x07\\x1b[2J\\x0d\\x0ad9  ACTIVE  m@9\\u202egnp.exe\\x9b31m")
    assert shown.isprintable()


def test_printable_text_is_left_alone() -> None:
    for text in ("", "write-failed: disk full", "modèle über 日本 ✓", "a\\x1b literal"):
        assert printable(text) == text


@given(st.text())
def test_anything_becomes_one_printable_line(text: str) -> None:
    shown = printable(text)
    assert shown.isprintable()
    assert "\n" not in shown and "\r" not in shown and "\x1b" not in shown


def test_log_messages_are_escaped_but_tracebacks_keep_their_lines() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(PrintableFormatter("%(levelname)s %(message)s"))
    log = logging.getLogger("test_display")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("device %s: %s", "d1", ATTACK)
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("failed on %s", "x\x1b[2J")
    finally:
        log.removeHandler(handler)
    lines = out.getvalue().splitlines()
    assert lines[0] == "WARNING device d1: " + printable(ATTACK)
    assert lines[1] == "ERROR failed on x\\x1b[2J"
    assert lines[2].startswith("Traceback") and "RuntimeError: boom" in lines[-1]
