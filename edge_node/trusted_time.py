"""The time an edge checks expiry against, when its own clock may be wrong.

Edge devices without a battery-backed clock boot at 1970 until NTP answers, and some drift by
hours. Expiry (of the deployment index, manifests, release-key certificates, revocation lists,
commands) is what stops a broker from feeding a device stale signed data forever, so the check
must hold with a bad clock without bricking the device:

* A clock **behind** (a day, or at 1970) never makes valid data look expired, but on its own it
  would make truly expired data look valid. So the edge never checks against a time earlier than
  the newest signed time it has verified (the ``issued`` time of the last deployment index it
  accepted, persisted in ``agent.json``) or than ``BUILD_FLOOR`` (nothing this build accepts can
  be older than the build): data that expired before either is refused whatever the clock says.
* A clock **ahead** makes data expire early by as much. The coordinator re-signs the index at
  half its lifetime (15 of 30 days), so an edge a day ahead keeps taking indexes; manifests
  (90 days) and certificates (365 days) lose a day of their life on such a device.
* Once the clock is right, the clock rules again (it is above the floor).

Nothing here is a "not yet valid" check: a signed time in the device's future only means the
device's clock is behind.
"""

from __future__ import annotations

import calendar
import logging
import time
from collections.abc import Callable

from .active import AgentRecord

log = logging.getLogger("modelcast.edge")

#: 2026-12-01 UTC: no signed data made before this build can still be valid for it to take.
BUILD_FLOOR = float(calendar.timegm((2026, 12, 1, 0, 0, 0)))


class TrustedTime:
    """``now()`` for expiry checks: the clock, or the floor when the clock is below it."""

    def __init__(self, clock: Callable[[], float], record: AgentRecord, device: str) -> None:
        self._clock = clock
        self._record = record
        self._device = device
        self._warned_at: float | None = None

    @property
    def floor(self) -> float:
        return max(BUILD_FLOOR, self._record.time_floor)

    def now(self) -> float:
        wall = self._clock()
        floor = self.floor
        if wall >= floor:
            return wall
        if self._warned_at != floor:  # once per floor, not once per message
            self._warned_at = floor
            log.warning(
                "edge %s: the clock (%s) is behind the newest signed data (%s): expiry is "
                "checked against that until the clock is set",
                self._device,
                _utc(wall),
                _utc(floor),
            )
        return floor


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))
