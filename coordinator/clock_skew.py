"""How far each device's clock is from the coordinator's, as ``modelcast status`` shows it.

Edge devices without a real-time clock boot at 1970 until NTP answers, and some drift by hours;
the operator should see it before it bites (certificates and manifests that look expired or not
yet valid, telemetry filed under the wrong day). The coordinator sees the device's time in every
message that carries a ``ts`` (state, status, metrics samples, events) and its own receive time.

Skew = device ``ts`` - receive time: negative when the device is behind. Each observation also
holds the message's time in transit (the MQTT hops; a live sample that waited in the edge's
outbox behind others), which only ever makes the device look further behind; so the estimate is
the *largest* of the device's last ``WINDOW`` observations, the least delayed one (as NTP's clock
filter keeps the sample of least delay). A clock that jumps forward (NTP answering a board that
booted at 1970) shows at the next message; one set back shows after ``WINDOW`` messages.
Retained messages (replayed by the broker, maybe weeks old) and store-and-forward history
(``hist``: made while offline, sent later) are old by design and are not observed.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

WINDOW = 5
#: Devices whose recent observations are kept; beyond it the longest quiet is forgotten (on the
#: development broker anyone can make up device ids).
MAX_DEVICES = 100_000
#: A device clock before 2001-01-01 UTC has never been set: a board without a real-time clock
#: that has not heard from NTP since it booted (at 1970).
CLOCK_SET_AFTER = 978_307_200.0
#: A device clock further off than this is logged (``DeviceTracker``) when it gets there, and
#: when it is set right.
WARN_SKEW_S = 300.0
#: Units from the largest: name, seconds, and half a step of the next smaller one as shown (a
#: skew that would round to 24h is shown as 1d, to 60m as 1h, to 60.0s as 1m)
_UNITS = (
    ("y", 365.25 * 86400, 43200.0),
    ("d", 86400.0, 1800.0),
    ("h", 3600.0, 30.0),
    ("m", 60.0, 0.05),
)


@dataclass(frozen=True)
class ClockReading:
    """A device's estimated skew (seconds, device minus coordinator) and the coordinator's time
    of the latest observation it rests on."""

    skew: float
    checked: float


class ClockSkews:
    """The recent observations of each device. Not thread-safe: ``DeviceTracker`` calls it
    under its lock (from the network thread for telemetry, the worker for state and status)."""

    def __init__(self, *, window: int = WINDOW, max_devices: int = MAX_DEVICES) -> None:
        self._window = window
        self._max_devices = max_devices
        # insertion order is recency: observe() moves a device to the end
        self._recent: dict[str, deque[float]] = {}
        self._checked: dict[str, float] = {}  # observed since the last take(): when, last

    def observe(self, device: str, ts: float, received_at: float) -> None:
        """A live message of ``device`` stamped ``ts`` by the device, received at
        ``received_at`` by the coordinator."""
        recent = self._recent.pop(device, None)
        if recent is None:
            recent = deque(maxlen=self._window)
            if len(self._recent) >= self._max_devices:
                del self._recent[next(iter(self._recent))]
        recent.append(ts - received_at)
        self._recent[device] = recent
        self._checked[device] = received_at

    def take(self) -> dict[str, ClockReading]:
        """The estimates of the devices observed since the last call."""
        checked, self._checked = self._checked, {}
        return {
            device: ClockReading(max(self._recent[device]), at)
            for device, at in checked.items()
            if device in self._recent
        }

    def __len__(self) -> int:
        """Devices observed since the last ``take``."""
        return len(self._checked)


def describe_skew(skew: float | None, checked: float | None) -> str:
    """``?`` (no message with a time yet), ``1970?`` (the device's clock has never been set: it
    said a time before 2001; the year it said), else the skew in its largest unit: ``+0.3s``,
    ``-42s``, ``+5m``, ``-3h``, ``-1d``, ``+2y``."""
    if skew is None or checked is None:
        return "?"
    device_time = checked + skew
    if device_time < CLOCK_SET_AFTER:
        return f"{time.gmtime(max(0.0, device_time)).tm_year}?"
    sign = "-" if skew < 0 else "+"
    size = abs(skew)
    for unit, seconds, half_step in _UNITS:
        if size >= seconds - half_step:
            count = size / seconds
            return f"{sign}{round(count)}{unit}" if count < 1000 else f"{sign}>999{unit}"
    return f"{sign}{size:.1f}s"
