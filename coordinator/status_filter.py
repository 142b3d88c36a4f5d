"""Which devices ``modelcast status`` lists (``--state``, ``--model``, ``--device-prefix``,
``--limit``), and the summary of the whole fleet it puts on top: counts per state and per active
version, online out of total. Pure: device rows in, rows and counts out."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: The state of a device that has not reported one yet (``--state unknown``).
UNKNOWN_STATE = "unknown"


@dataclass(frozen=True)
class DeviceFilter:
    """All given conditions must hold; ``limit``: at most this many rows (by device id)."""

    states: frozenset[str] = frozenset()
    model: str | None = None
    version: int | None = None  # with ``model``: that version only
    prefix: str = ""
    limit: int | None = None

    @property
    def narrows(self) -> bool:
        return bool(self.states or self.model or self.prefix) or self.limit is not None

    def matches(self, row: Mapping[str, Any]) -> bool:
        """``row``: a device row of the registry (``active`` decoded)."""
        if self.prefix and not str(row["device_id"]).startswith(self.prefix):
            return False
        if self.states and (row.get("state") or UNKNOWN_STATE) not in self.states:
            return False
        return self.model is None or self._concerns_model(row)

    def _concerns_model(self, row: Mapping[str, Any]) -> bool:
        """The device runs the model (that version), or its state is about it (downloading,
        failed...)."""
        active = (row.get("active") or {}).get(self.model)
        if active is not None and (self.version is None or active == self.version):
            return True
        return row.get("model") == self.model and (
            self.version is None or row.get("version") == self.version
        )

    def apply(self, rows: Iterable[Mapping[str, Any]]) -> tuple[list[Mapping[str, Any]], int]:
        """The rows to show (sorted as given, at most ``limit``) and how many matched."""
        matched = [row for row in rows if self.matches(row)]
        shown = matched if self.limit is None else matched[: self.limit]
        return shown, len(matched)

    def to_dict(self) -> dict[str, Any]:
        """The conditions given (for ``--json``)."""
        out: dict[str, Any] = {}
        if self.states:
            out["states"] = sorted(self.states)
        if self.model is not None:
            out["model"] = self.model if self.version is None else f"{self.model}@{self.version}"
        if self.prefix:
            out["device_prefix"] = self.prefix
        if self.limit is not None:
            out["limit"] = self.limit
        return out

    def describe(self) -> str:
        return describe_filters(self.to_dict())


def describe_filters(filters: Mapping[str, Any]) -> str:
    """``state failed, model m@2, device prefix cam-, limit 50`` from ``DeviceFilter.to_dict``."""
    names = {"states": "state", "device_prefix": "device prefix"}
    return ", ".join(
        f"{names.get(key, key)} {','.join(value) if isinstance(value, list) else value}"
        for key, value in filters.items()
    )


def summarize(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts over every device row: ``devices``, ``online``, ``states`` (state -> devices,
    ``unknown`` for none reported yet) and ``versions`` (``name@version`` -> devices running
    it)."""
    total = online = 0
    states: Counter[str] = Counter()
    versions: Counter[str] = Counter()
    for row in rows:
        total += 1
        online += bool(row.get("online"))
        states[row.get("state") or UNKNOWN_STATE] += 1
        for name, version in (row.get("active") or {}).items():
            versions[f"{name}@{version}"] += 1
    return {
        "devices": total,
        "online": online,
        "states": dict(sorted(states.items())),
        "versions": dict(sorted(versions.items(), key=lambda kv: _release_order(kv[0]))),
    }


def _release_order(release: str) -> tuple[str, int]:
    name, _, version = release.rpartition("@")
    return name, int(version) if version.isdigit() else -1


def format_summary(summary: Mapping[str, Any]) -> str:
    """``10000 devices, 9512 online; active 9000, downloading 500, failed 300; running m@1
    1000, m@2 9000``."""
    parts = [f"{summary['devices']} device(s), {summary['online']} online"]
    if summary["states"]:
        parts.append(", ".join(f"{state} {n}" for state, n in summary["states"].items()))
    if summary["versions"]:
        parts.append(
            "running " + ", ".join(f"{release} {n}" for release, n in summary["versions"].items())
        )
    return "; ".join(parts)
