"""The releases page: every version and variant of every model (kind, size, chunks, digest),
which one is deployed, who runs what, and what its delivery cost on the wire.

The wire cost is what the coordinator published for the release (chunk frames, block topics
and per-device resends) as the dashboard saw it since it started: a release delivered to many
devices at once costs about its size, thanks to the broker's fan-out; resends and late joiners
add to it (a delta travels as a chunk stream of its own, not counted there). What each update
cost a device is what the device said (its latest ``verified`` event, ``last_update`` in
``modelcast status --json``): ``5.0 KB of 86.6 MB (delta from m@1)``, or the whole release.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from .fleet_view import versions
from .layout import PageContext, clock, size, table
from .markup import Html, el, href, join


def runners(devices: list[Mapping[str, Any]]) -> Counter[str]:
    """Devices per ``m@3`` and per ``m@3 (int8)`` (each device counts once in each)."""
    counts: Counter[str] = Counter()
    for d in devices:
        for shown in versions(d):
            counts[shown] += 1
            if " " in shown:
                counts[shown.split(" ")[0]] += 1
    return counts


def update_costs(devices: list[Mapping[str, Any]]) -> dict[str, Counter[str]]:
    """What the devices' last updates cost, counted by cost, per release they updated to
    (``m@3``, or ``m@3 (int8)`` for a device running that variant)."""
    out: dict[str, Counter[str]] = {}
    for d in devices:
        last = d.get("last_update") or {}
        if not last.get("cost"):
            continue
        model = last.get("model")
        variant = (d.get("variants") or {}).get(model)
        key = f"{model}@{last.get('version')}" + (f" ({variant})" if variant else "")
        out.setdefault(key, Counter())[str(last["cost"])] += 1
    return out


def release_rows(
    releases: list[dict[str, Any]],
    devices: list[Mapping[str, Any]],
    published: Mapping[str, int],
) -> list[dict[str, Any]]:
    """Each release with ``devices`` (running it: that variant, or the version when it has no
    variant) and ``published`` (bytes seen on the wire since the dashboard started), and
    ``updates``: what the devices' updates to it cost, as they said (``update_costs``)."""
    counts, costs = runners(devices), update_costs(devices)
    out = []
    for r in releases:
        key = f"{r['model']}@{r['version']}" + (f" ({r['variant']})" if r["variant"] else "")
        updates = [{"cost": c, "devices": n} for c, n in costs.get(key, Counter()).most_common()]
        out.append(
            {
                **r,
                "devices": counts.get(key, 0),
                "published": published.get(r["release_id"], 0),
                "updates": updates,
            }
        )
    return out


def live(ctx: PageContext) -> Html:
    data = ctx.snapshot.fleet
    if data is None:
        return el("p", "No data read from the database yet.", class_="empty")
    if not data.releases:
        return el(
            "p", f"No release in fleet {ctx.fleet} yet ('modelcast release').", class_="empty"
        )
    rows = release_rows(data.releases, data.status["devices"], ctx.broker.bytes)
    deployed = data.status["deployments"]
    sections = []
    for model in sorted({r["model"] for r in rows}):
        mine = [r for r in rows if r["model"] == model]
        current = deployed.get(model)
        sections.append(
            el(
                "section",
                el(
                    "h2",
                    model,
                    " ",
                    el(
                        "span",
                        f"deployed: {model}@{current}" if current else "not deployed",
                        class_="what",
                    ),
                ),
                _table(mine, current),
                class_="model",
            )
        )
    note = el(
        "p",
        "On the wire: chunk bytes the coordinator published for the release since this "
        "dashboard started (block topics and resends). Devices: how many run it now. Last "
        "updates: what updating to it cost each device, as the device said (a delta, or the "
        "whole release; chunks it already held are not fetched).",
        class_="note",
    )
    return join([*sections, note])


def _table(rows: list[dict[str, Any]], deployed: int | None) -> Html:
    body: list[list[Html | str]] = []
    for r in rows:
        release = f"{r['model']}@{r['version']}"
        on_wire = (
            "-"
            if not r["published"]
            else (
                f"{size(r['published'])} ({r['published'] / r['size']:.2f} x size)"
                if r["size"]
                else size(r["published"])
            )
        )
        body.append(
            [
                el(
                    "span",
                    f"v{r['version']}",
                    class_="deployed" if r["version"] == deployed else None,
                ),
                r["variant"] or "-",
                r["kind"] or "?",
                size(r["size"]),
                f"{r['chunks']} x {size(r['chunk_size'])}",
                el("code", r["sha256"][:16], title=r["sha256"]),
                clock(r["created"]),
                el("a", str(r["devices"]), href=href("/", version=release)),
                on_wire,
                "; ".join(f"{u['devices']} x {u['cost']}" for u in r["updates"]) or "-",
            ]
        )
    head = [
        "version",
        "variant",
        "kind",
        "size",
        "chunks",
        "sha256",
        "released",
        "devices",
        "on the wire",
        "last updates",
    ]
    return table(head, body, class_="releases")
