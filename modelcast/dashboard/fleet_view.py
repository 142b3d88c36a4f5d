"""The fleet page's logic, pure: a device's health in one word, the filters of the page, the
counts per state and per version, and one page of rows (usable at thousands of devices: filter
and sort over the snapshot, render only the page shown).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from coordinator.clock_skew import describe_skew

OK, WARN, BAD, OFF = "ok", "warn", "bad", "off"
#: worse than this share of failed inferences over the window is a warning
ERROR_RATE_WARN = 0.05
CLOCK_WARN_S = 300.0
DISK_WARN_MB = 500.0
PER_PAGE = 200
#: rows a page may show (``?per=``): the whole of a 1,000-device fleet fits on one
PAGE_SIZES = (50, 200, 500, 1000)
SORTS = ("device", "state", "last-seen", "health")
_RANK = {BAD: 0, WARN: 1, OFF: 2, OK: 3}


def health(device: Mapping[str, Any], figures: Mapping[str, Any] | None) -> tuple[str, str]:
    """The device's health: a level (ok, warn, bad, off) and what it is about."""
    if device.get("state") in ("failed", "rejected"):
        return BAD, f"{device['state']}: {device.get('reason') or 'no reason given'}"
    if device.get("online") is False:
        return OFF, "offline"
    problems = []
    inferences = (figures or {}).get("inferences") or 0
    errors = (figures or {}).get("errors") or 0
    if inferences and errors / inferences > ERROR_RATE_WARN:
        problems.append(f"errors {errors / inferences:.1%}")
    skew = device.get("clock_skew")
    if skew is not None and abs(skew) > CLOCK_WARN_S:
        problems.append(f"clock {describe_skew(skew, device.get('clock_checked'))}")
    disk = (device.get("metrics") or {}).get("disk_free_mb")
    if disk is not None and disk < DISK_WARN_MB:
        problems.append(f"disk {disk:.0f} MB free")
    if (device.get("rate_limited") or {}).get("reports"):
        problems.append("rate-limited")
    drifted = [f"{d['model']}@{d['version']}" for d in device.get("drift") or [] if d["drifted"]]
    if drifted:  # its inputs moved away from the release's reference (docs/DRIFT.md)
        problems.append(f"input drift {', '.join(drifted)}")
    if problems:
        return WARN, ", ".join(problems)
    if device.get("online") is None:
        return OK, "no status yet"
    return OK, f"{inferences} inferences" if inferences else "ok"


def versions(device: Mapping[str, Any]) -> list[str]:
    """``m@3`` for each active model, with `` (int8)`` when it runs a variant."""
    variants = device.get("variants") or {}
    return [
        f"{name}@{version}" + (f" ({variants[name]})" if name in variants else "")
        for name, version in sorted((device.get("active") or {}).items())
    ]


def state_of(device: Mapping[str, Any]) -> str:
    return device.get("state") or "unknown"


@dataclass(frozen=True)
class FleetQuery:
    """The page's filters, from its query string (unknown values are ignored, not errors)."""

    text: str = ""  # a part of the device id
    state: str = ""
    version: str = ""  # "m@3": devices whose active set includes it
    online: str = ""  # "yes", "no" or ""
    tag: str = ""  # "KEY=VALUE"
    problems: bool = False  # only devices whose health is not ok
    sort: str = "device"
    page: int = 1
    per: int = PER_PAGE

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> FleetQuery:
        try:
            page = max(1, int(params.get("page", "1")))
        except ValueError:
            page = 1
        sort = params.get("sort", "device")
        per = params.get("per", "")
        return cls(
            text=params.get("q", "").strip(),
            state=params.get("state", ""),
            version=params.get("version", ""),
            online=params.get("online", "") if params.get("online") in ("yes", "no") else "",
            tag=params.get("tag", "").strip(),
            problems=params.get("problems") == "1",
            sort=sort if sort in SORTS else "device",
            page=page,
            per=int(per) if per.isdigit() and int(per) in PAGE_SIZES else PER_PAGE,
        )

    def params(self, **changes: Any) -> dict[str, str]:
        """The query string of this view with ``changes`` (what links to other views carry)."""
        values = {
            "q": self.text,
            "state": self.state,
            "version": self.version,
            "online": self.online,
            "tag": self.tag,
            "problems": "1" if self.problems else "",
            "sort": "" if self.sort == "device" else self.sort,
            "page": "" if self.page == 1 else str(self.page),
            "per": "" if self.per == PER_PAGE else str(self.per),
        }
        values.update({k: "" if v is None else str(v) for k, v in changes.items()})
        return {k: v for k, v in values.items() if v}

    def matches(self, device: Mapping[str, Any], level: str) -> bool:
        if self.text and self.text.lower() not in device["device_id"].lower():
            return False
        if self.state and state_of(device) != self.state:
            return False
        if self.version and not _runs(device, self.version):
            return False
        if self.online and bool(device.get("online")) != (self.online == "yes"):
            return False
        if self.tag:
            key, _, value = self.tag.partition("=")
            if (device.get("tags") or {}).get(key) != value:
                return False
        return not (self.problems and level == OK)


def _runs(device: Mapping[str, Any], release: str) -> bool:
    name, _, version = release.partition("@")
    return str((device.get("active") or {}).get(name)) == version


@dataclass(frozen=True)
class FleetRow:
    device: Mapping[str, Any]
    level: str
    health: str


@dataclass(frozen=True)
class FleetView:
    rows: list[FleetRow]  # the page shown
    matching: int  # devices the filters let through
    pages: int
    by_state: dict[str, int]  # over the whole fleet
    by_version: dict[str, int]
    online: int
    total: int


def fleet_view(
    devices: Iterable[Mapping[str, Any]],
    figures: Mapping[str, Mapping[str, Any]],
    query: FleetQuery,
) -> FleetView:
    every = list(devices)
    rows = []
    for d in every:
        level, text = health(d, figures.get(d["device_id"]))
        if query.matches(d, level):
            rows.append(FleetRow(d, level, text))
    rows.sort(key=_sort_key(query.sort))
    per_page = query.per
    pages = max(1, -(-len(rows) // per_page))
    page = min(query.page, pages)
    return FleetView(
        rows=rows[(page - 1) * per_page : page * per_page],
        matching=len(rows),
        pages=pages,
        by_state=dict(sorted(Counter(state_of(d) for d in every).items())),
        by_version=dict(
            sorted(Counter(v.split(" ")[0] for d in every for v in versions(d)).items())
        ),
        online=sum(1 for d in every if d.get("online")),
        total=len(every),
    )


def _sort_key(sort: str) -> Any:
    if sort == "state":
        return lambda r: (state_of(r.device), r.device["device_id"])
    if sort == "last-seen":  # most recently seen first, never seen last
        return lambda r: (-(r.device.get("last_seen") or 0.0), r.device["device_id"])
    if sort == "health":
        return lambda r: (_RANK[r.level], r.device["device_id"])
    return lambda r: r.device["device_id"]
