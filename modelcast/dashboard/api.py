"""``/api/...``: the snapshot as JSON, in the shapes of the command line's ``--json``.

GET /api                      the endpoints, and the snapshot's generation and age
GET /api/status               ``modelcast status --json`` (devices filtered by
                              ?state=, ?model=, ?device_prefix=, ?limit=)
GET /api/rollouts             ``modelcast rollout status --json`` (every rollout, a list)
GET /api/rollouts/NAME@V      one of them
GET /api/releases             every release, with the devices running it
GET /api/devices/ID           the device's status entry and its detail (events, series)
GET /api/health               the ``health`` list of ``modelcast status --json``
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .layout import PageContext
from .releases_page import release_rows
from .snapshot import SnapshotReader
from .web import Request, Response

ENDPOINTS = {
    "/api/status": "modelcast status --json; ?state=, ?model=, ?device_prefix=, ?limit=",
    "/api/rollouts": "modelcast rollout status --json (a list); /api/rollouts/NAME@VERSION: one",
    "/api/releases": "every release, its kind, size, chunks and the devices running it",
    "/api/devices/ID": "a device: its status entry, events, telemetry series, rejections",
    "/api/health": "health per model version (as in modelcast status --json)",
    "/metrics": "Prometheus exposition format",
}


def _unavailable(ctx: PageContext) -> Response:
    return Response.json({"error": ctx.snapshot.error or "no data read yet"}, 503)


def filter_devices(
    devices: list[dict[str, Any]], params: Mapping[str, str]
) -> list[dict[str, Any]]:
    """``?state=``, ``?model=`` (runs it, any version), ``?device_prefix=``, ``?limit=``."""
    state, model = params.get("state"), params.get("model")
    prefix = params.get("device_prefix", "")
    out = [
        d
        for d in devices
        if (not state or d.get("state") == state)
        and (not model or model in (d.get("active") or {}))
        and d["device_id"].startswith(prefix)
    ]
    limit = params.get("limit", "")
    return out[: int(limit)] if limit.isdigit() else out


def handle_api(request: Request, ctx: PageContext, reader: SnapshotReader) -> Response:
    path = request.path.rstrip("/")
    snap = ctx.snapshot
    if path == "/api":
        age = None if snap.taken_at is None else round(ctx.now - snap.taken_at, 3)
        return Response.json(
            {
                "endpoints": ENDPOINTS,
                "generation": snap.generation,
                "age_s": age,
                "error": snap.error,
                "broker_connected": ctx.broker.connected,
            }
        )
    data = snap.fleet
    if data is None:
        return _unavailable(ctx)
    if path == "/api/status":
        status = dict(data.status)
        status["devices"] = filter_devices(list(status["devices"]), request.query)
        return Response.json(status)
    if path == "/api/health":
        return Response.json(data.status.get("health") or [])
    if path == "/api/releases":
        rows = release_rows(data.releases, data.status["devices"], ctx.broker.bytes)
        return Response.json(rows)
    if path == "/api/rollouts":
        return Response.json([_report(r) for r in data.rollouts])
    if path.startswith("/api/rollouts/"):
        wanted = path.removeprefix("/api/rollouts/")
        for r in data.rollouts:
            if r["rollout"] == wanted:
                return Response.json(_report(r))
        return Response.json({"error": f"no rollout {wanted}"}, 404)
    if path.startswith("/api/devices/"):
        return _device(
            path.removeprefix("/api/devices/"), data.status["devices"], reader, data.window
        )
    return Response.json({"error": f"no endpoint {path}", "endpoints": ENDPOINTS}, 404)


def _report(r: Mapping[str, Any]) -> dict[str, Any]:
    """A rollout report as ``modelcast rollout status --json`` has it (without our live gates)."""
    return {k: v for k, v in r.items() if k != "live_gates"}


def _device(
    device: str, devices: list[dict[str, Any]], reader: SnapshotReader, window: float
) -> Response:
    entry = next((d for d in devices if d["device_id"] == device), None)
    if entry is None:
        return Response.json({"error": f"no device {device}"}, 404)
    detail = reader.device(device, window)
    body: dict[str, Any] = {"device": entry}
    if detail is not None:
        body.update(
            events=detail.events,
            series=detail.series,
            rejections=dict(detail.rejections),
            about=detail.about,
        )
    return Response.json(body)
