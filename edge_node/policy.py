"""The edge's local policy: maintenance window, pins, telemetry interval.

Set by ``modelcast edge`` flags and overridden key by key by the fleet configuration pushed in
the signed index (``protocol.fleet_config``). What was pushed is persisted (``config.json``,
written atomically), so a restarted edge applies it before it hears from the broker; the
effective policy is reported in the device profile.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol import MaintenanceWindow, ProtocolError, parse_pins
from protocol.fleet_config import check_setting
from runtime.files import read_json, write_json_atomic

CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class Policy:
    telemetry_interval: float
    maintenance_window: MaintenanceWindow | None = None
    pins: dict[str, int] = field(default_factory=dict)

    def may_activate(self, now: float) -> bool:
        return self.maintenance_window is None or self.maintenance_window.contains(now)

    def report(self, pushed: dict[str, Any]) -> dict[str, Any]:
        """For the profile: the effective policy and what the fleet configuration set."""
        return {
            "telemetry_interval": self.telemetry_interval,
            "maintenance_window": str(self.maintenance_window) if self.maintenance_window else None,
            "pins": dict(sorted(self.pins.items())),
            "pushed": dict(sorted(pushed.items())),
        }


def effective_policy(local: Policy, pushed: dict[str, Any]) -> Policy:
    """``local`` with every pushed setting applied (``""`` clears a window or the pins)."""
    policy = local
    if "telemetry_interval" in pushed:
        policy = Policy(float(pushed["telemetry_interval"]), policy.maintenance_window, policy.pins)
    if "maintenance_window" in pushed:
        text = pushed["maintenance_window"]
        window = MaintenanceWindow.parse(text) if text else None
        policy = Policy(policy.telemetry_interval, window, policy.pins)
    if "pin" in pushed:
        policy = Policy(
            policy.telemetry_interval, policy.maintenance_window, parse_pins(pushed["pin"])
        )
    return policy


def load_pushed(data: Path) -> dict[str, Any]:
    """The persisted fleet configuration; anything unreadable or invalid is dropped."""
    raw = read_json(data / CONFIG_FILE, {})
    pushed: dict[str, Any] = {}
    if isinstance(raw, dict):
        for key, value in raw.items():
            try:
                pushed[key] = check_setting(key, value)
            except ProtocolError:
                continue
    return pushed


def save_pushed(data: Path, pushed: dict[str, Any]) -> None:
    write_json_atomic(data / CONFIG_FILE, pushed)
