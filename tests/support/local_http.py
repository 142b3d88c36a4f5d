"""An edge's local inference endpoint, from a test: its port (from the device's retained
status) and requests to it, answered with the status code and the JSON body."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Collection
from typing import Any

from protocol import DeviceStatus
from testkit.fleet_watch import FleetWatch


def http_port(watch: FleetWatch, device: str, *, not_boots: Collection[str] = ()) -> int:
    """The endpoint's port the device reports in its status (the first status that has one,
    of an agent start not in ``not_boots``: a restarted edge listens on another port)."""
    topic = watch.topics.status(device)

    def reports_port(payload: bytes) -> bool:
        status = DeviceStatus.decode(payload)
        return "http_port" in status.profile and status.boot not in not_boots

    item = watch.recorder.wait_for(
        lambda m: m.topic == topic and reports_port(m.payload), timeout=30
    )
    return int(DeviceStatus.decode(item.payload).profile["http_port"])


def _answer(request: urllib.request.Request | str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def post(port: int, model: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """``POST /v1/models/MODEL/infer`` with ``body``."""
    url = f"http://127.0.0.1:{port}/v1/models/{model}/infer"
    return _answer(urllib.request.Request(url, data=json.dumps(body).encode()))


def get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    """``GET path`` (``/v1/models``, ``/v1/health``)."""
    return _answer(f"http://127.0.0.1:{port}{path}")
