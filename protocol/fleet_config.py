"""Fleet configuration pushed in the signed deployment index: settings for selected devices.

The index carries an ordered list of entries ``{"select": SELECTOR, "settings": {key: value}}``;
a device applies, in order, every entry whose selector it matches (a later entry overrides an
earlier one key by key). Being in the index, the configuration is signed, ``seq``-monotonic
(no replay) and retained, so a device that was offline when it was pushed gets it when it
reconnects. Known keys (anything else is refused):

* ``telemetry_interval``: seconds between metrics samples (0.5 - 86400);
* ``maintenance_window``: ``HH:MM-HH:MM`` (UTC; may wrap midnight): new versions are activated
  only inside it (downloads go on; signed rollbacks are instant regardless); ``""`` clears it;
* ``pin``: ``NAME@VERSION[,NAME@VERSION...]``: hold those versions (no other version of those
  models is downloaded or activated) until unpinned with ``""``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import MalformedMessage, OversizedMessage
from .limits import DEFAULT_LIMITS, Limits
from .names import check_name
from .rollout import Selector

KEYS = ("telemetry_interval", "maintenance_window", "pin")
_WINDOW = re.compile(r"([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)")


@dataclass(frozen=True)
class MaintenanceWindow:
    """A daily UTC window ``start <= t < end`` in minutes of the day; wraps when end < start."""

    start: int
    end: int

    @classmethod
    def parse(cls, text: str) -> MaintenanceWindow:
        m = _WINDOW.fullmatch(text)
        if m is None:
            raise MalformedMessage(f"maintenance window {text!r} is not HH:MM-HH:MM")
        h1, m1, h2, m2 = (int(g) for g in m.groups())
        window = cls(h1 * 60 + m1, h2 * 60 + m2)
        if window.start == window.end:
            raise MalformedMessage(f"maintenance window {text!r} is empty")
        return window

    def contains(self, ts: float) -> bool:
        minute = int(ts // 60) % 1440
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end

    def __str__(self) -> str:
        return (
            f"{self.start // 60:02d}:{self.start % 60:02d}-{self.end // 60:02d}:{self.end % 60:02d}"
        )


def parse_pins(text: str) -> dict[str, int]:
    """``m@3,n@1`` -> ``{"m": 3, "n": 1}``; ``""`` -> no pins."""
    pins: dict[str, int] = {}
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        name, sep, version = item.partition("@")
        if not sep or not version.isdigit():
            raise MalformedMessage(f"pin {item!r} is not NAME@VERSION")
        pins[check_name(name, "model name")] = int(version)
    return pins


def check_setting(key: str, value: object) -> Any:
    """The value of a known setting, validated; ``MalformedMessage`` otherwise."""
    if key == "telemetry_interval":
        if type(value) not in (int, float) or not 0.5 <= float(value) <= 86400:  # type: ignore[arg-type]
            raise MalformedMessage("telemetry_interval must be a number of seconds in 0.5-86400")
        return float(value)  # type: ignore[arg-type]
    if key == "maintenance_window":
        if not isinstance(value, str):
            raise MalformedMessage("maintenance_window must be a string")
        if value:
            MaintenanceWindow.parse(value)
        return value
    if key == "pin":
        if not isinstance(value, str):
            raise MalformedMessage("pin must be a string")
        parse_pins(value)
        return value
    raise MalformedMessage(f"unknown setting {key!r} (known: {', '.join(KEYS)})")


@dataclass(frozen=True)
class ConfigEntry:
    select: Selector
    settings: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"settings": dict(sorted(self.settings.items()))}
        if not self.select.is_all:
            obj["select"] = self.select.to_dict()
        return obj

    @classmethod
    def from_dict(cls, raw: object, what: str, limits: Limits = DEFAULT_LIMITS) -> ConfigEntry:
        if not isinstance(raw, dict) or not isinstance(raw.get("settings"), dict):
            raise MalformedMessage(f"{what}: a config entry must be a map with 'settings'")
        settings = {str(k): check_setting(k, v) for k, v in raw["settings"].items()}
        select = raw.get("select")
        return cls(
            Selector() if select is None else Selector.from_dict(select, what, limits), settings
        )


def config_from_list(
    raw: object, what: str, limits: Limits = DEFAULT_LIMITS
) -> tuple[ConfigEntry, ...]:
    if not isinstance(raw, list):
        raise MalformedMessage(f"{what}: config must be a list")
    most = limits.max_config_entries
    if len(raw) > most:
        raise OversizedMessage(f"{what}: {len(raw)} config entries exceeds {most}")
    return tuple(ConfigEntry.from_dict(e, what, limits) for e in raw)


def settings_for(
    entries: tuple[ConfigEntry, ...], device: str, tags: Mapping[str, str]
) -> dict[str, Any]:
    """The settings that apply to ``device``: every matching entry, in order."""
    out: dict[str, Any] = {}
    for entry in entries:
        if entry.select.matches(device, tags):
            out.update(entry.settings)
    return out
