"""``modelcast demo --dashboard`` starts the dashboard, prints its URL, and keeps the fleet and
the dashboard up after the story until Ctrl-C."""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from tests.support.browser import wait_for
from tests.support.fleet import REPO


def test_the_demo_serves_the_dashboard_until_ctrl_c(tmp_path: Path) -> None:
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "modelcast.cli",
            "demo",
            "--dashboard",
            "--dashboard-port",
            "0",
            "--edges",
            "1",
            "--model",
            "synthetic",
            "--size-mb",
            "1",
            "--workdir",
            str(tmp_path),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    said: list[str] = []
    threading.Thread(
        target=lambda: [lines.put(line) for line in demo.stdout or []], daemon=True
    ).start()

    def until(pattern: str, timeout: float = 120.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            said.append(line)
            found = re.search(pattern, line)
            if found:
                return found
        raise AssertionError(f"the demo never said {pattern!r}:\n{''.join(said)[-4000:]}")

    try:
        url = until(r"dashboard: (http://127\.0\.0\.1:\d+/)").group(1)
        until("the fleet and the dashboard stay up at")

        def page() -> str:
            with urllib.request.urlopen(url, timeout=10) as reply:
                return str(reply.read().decode())

        shown = wait_for(lambda: "edge-late" in (p := page()) and p, "the late joiner shown")
        assert "edge-1" in shown and "fleet demo" in shown and "demo-model@2 2" in shown
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=60) == 0, "".join(said)[-4000:]
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
