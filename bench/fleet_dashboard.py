"""The dashboard's fleet page over the simulated fleet's database (issue 17: under 1 s of
server time at 1,000 devices): a real ``modelcast dashboard`` in this process, its fleet page
with every device on one page fetched over HTTP, the server time read from the response's
``Server-Timing`` header, as a browser's developer tools show it."""

from __future__ import annotations

import os
import statistics
import urllib.request
from pathlib import Path

from modelcast.dashboard.service import Dashboard, DashboardConfig

#: fetches of the page; the median is reported
FETCHES = 5


def dashboard_fleet_ms(db: os.PathLike[str], fleet: str, broker_url: str) -> dict[str, float]:
    """Server time (ms) of the fleet page listing every device (``/?per=1000``), the median of
    FETCHES, and the dashboard's one read of the database behind it (ms)."""
    config = DashboardConfig(db=Path(db), broker_url=broker_url, fleet=fleet, port=0)
    with Dashboard(config) as dashboard:
        snapshot = dashboard.reader.wait_for_generation(0, 60.0)
        times = [_server_ms(dashboard.url.rstrip("/") + "/?per=1000") for _ in range(FETCHES)]
        read_ms = snapshot.fleet.read_seconds * 1000 if snapshot.fleet is not None else -1.0
    return {"page_ms": round(statistics.median(times), 1), "read_ms": round(read_ms, 1)}


def _server_ms(url: str) -> float:
    with urllib.request.urlopen(url, timeout=30) as reply:
        reply.read()
        timing = reply.headers.get("Server-Timing", "")
    return float(timing.split("dur=")[1]) if "dur=" in timing else float("nan")
