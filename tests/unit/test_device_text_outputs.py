"""Every output that shows device-supplied text escapes its control characters (issue 13): the
status table, rollout status, telemetry tail, the demo's progress lines and the log. What is
stored stays as the device sent it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from coordinator.registry import Registry
from coordinator.rollout_status import format_rollout
from coordinator.status import fleet_status, format_status
from coordinator.telemetry_tail import decode_message, format_line
from modelcast.progress import render_line
from protocol import DeviceEvent, DeviceState, DeviceStatus, Topics, UpdateState
from runtime.display import printable

#: sets the terminal's title, clears the screen, starts a forged table row, reverses text
ATTACK = "disk\x1b]0;pwned\x07\x1b[2J\r\nd9  yes  active  m@9\u202eexe.txt"
RAW_MARKS = ("\x1b", "\x07", "\r", "\u202e")


def _clean(text: str) -> None:
    for mark in RAW_MARKS:
        assert mark not in text, repr(text)


def test_status_shows_escaped_text_and_stores_it_as_received(tmp_path: Path) -> None:
    db = tmp_path / "coord.db"
    registry = Registry(db)
    registry.record_state(
        "f", DeviceState("d1", UpdateState.FAILED, ts=1.0, reason=ATTACK), seen=1.0
    )
    registry.record_status(
        "f",
        DeviceStatus("d1", online=True, ts=1.0, agent=ATTACK, profile={"tags": {"x": ATTACK}}),
        seen=1.0,
    )
    assert registry.devices("f")[0]["reason"] == ATTACK  # stored as received
    registry.close()
    shown = format_status(fleet_status(db, "f"), now=2.0)
    _clean(shown)
    assert printable(ATTACK) in shown
    assert "d9  yes" not in shown.splitlines()[2:]  # no forged row of its own


def test_rollout_status_escapes_reasons() -> None:
    report = {
        "rollout": "m@2",
        "model": "m",
        "base": 1,
        "fleet": "f",
        "state": "halted",
        "stage": 1,
        "stages": [5.0, 100.0],
        "ppm": 50_000,
        "reason": ATTACK,
        "counts": {"failed": 1},
        "devices": {"d1": {"stage": 1, "state": "failed", "active": 1, "online": True}},
    }
    shown = format_rollout(report)
    _clean(shown)
    assert f"reason: {printable(ATTACK)}" in shown


def test_telemetry_tail_lines_escape_event_details() -> None:
    topics = Topics("f")
    event = DeviceEvent("d1", "rejected", ts=1.0, seq=3, boot="b", reason="bad", detail=ATTACK)
    record = decode_message(topics, topics.telemetry("d1", "events"), event.encode())
    assert record["message"]["detail"] == ATTACK
    line = format_line(record)
    _clean(line)
    assert "\n" not in line and printable(ATTACK) in line


def test_demo_progress_lines_escape_reasons() -> None:
    line = render_line(DeviceState("d1", UpdateState.FAILED, ts=1.0, reason=ATTACK[:40]))
    _clean(line)
    assert printable(ATTACK[:40]) in line


def test_the_command_lines_log_escapes_messages() -> None:
    code = (
        "import logging, sys\n"
        "from modelcast.cli.entry import _configure_logging\n"
        "_configure_logging('INFO')\n"
        "logging.getLogger('modelcast.test').warning('device d1 says %s', sys.argv[1])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, ATTACK], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    _clean(result.stderr)
    assert f"device d1 says {printable(ATTACK)}" in result.stderr
