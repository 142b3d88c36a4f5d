"""The edge's effective policy, and the fleet configuration pushed in the index that overrides
its own.

The edge starts from its flags (maintenance window, pins, telemetry interval); the signed index
may push settings for the devices it selects, which override them key by key (``policy``). What
was pushed is persisted, so a restarted edge applies it before it hears from the broker, and the
effective policy is reported in the device profile. Owned by the agent's worker thread.
"""

from __future__ import annotations

import logging
from typing import Any

from protocol import MaintenanceWindow, ProtocolError

from .config import EdgeConfig
from .policy import Policy, effective_policy, load_pushed, save_pushed
from .reporter import Reporter
from .telemetry import Telemetry

log = logging.getLogger("modelcast.edge")


class PushedConfig:
    def __init__(
        self,
        config: EdgeConfig,
        *,
        telemetry: Telemetry,
        profile: dict[str, Any],
        reporter: Reporter,
    ) -> None:
        self.device = config.device_id
        self._data = config.data_dir
        self._telemetry = telemetry
        self._profile = profile
        self._reporter = reporter
        window = config.maintenance_window
        self._local = Policy(
            config.telemetry_interval,
            MaintenanceWindow.parse(window) if window else None,
            dict(config.pins),
        )
        self._pushed = load_pushed(self._data)
        self.policy = self._local
        self._apply()

    def update(self, pushed: dict[str, Any]) -> None:
        """Apply, persist and report the fleet configuration that selects this device."""
        if pushed == self._pushed:
            return
        try:
            save_pushed(self._data, pushed)
        except OSError as exc:
            log.error("edge %s: cannot save the fleet configuration: %s", self.device, exc)
        self._pushed = dict(pushed)
        self._apply()
        log.info("edge %s: fleet configuration applied: %s", self.device, pushed or "none")
        self._reporter.event("config-applied", detail=str(dict(sorted(pushed.items())))[:500])
        self._reporter.publish_status()

    def _apply(self) -> None:
        try:
            self.policy = effective_policy(self._local, self._pushed)
        except ProtocolError as exc:  # validated when decoded; a hand-edited config.json
            log.error("edge %s: fleet configuration ignored: %s", self.device, exc)
            self.policy = self._local
        self._telemetry.interval = self.policy.telemetry_interval
        self._profile["config"] = self.policy.report(self._pushed)
