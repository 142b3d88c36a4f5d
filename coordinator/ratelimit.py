"""Per-device token buckets: one for chunk requests, one for reports (telemetry, state, status).

Chunk requests. A chunk request is the one device message that makes the coordinator *work* (decode,
schedule, publish chunks), and the broker's ACL only stops a device from speaking for another, not
from speaking fast. Each device gets a bucket of ``burst`` tokens refilled at ``rate`` per second; a
request takes one token or is dropped before it is even decoded, so a flooding device neither takes
the coordinator's time from the others nor keeps the sender busy with its chunks.

The defaults are far above what an honest edge sends: one request per half window of chunks
(16 chunks with the default window of 32), so the rate grows as chunks shrink. Measured on
loopback (2 shared cores) with a window of 16, i.e. twice the requests the default sends: 120
requests/s at most with 64 KiB chunks (33 MB/s), 244 with the smallest, 4 KiB (6 MB/s); with
256 KiB chunks about 70 at 143 MB/s. A stalled edge's repair is one request per stall
timeout. The burst alone covers a download of 64,000 chunks.

Reports (metrics samples, events, state and status messages). Each is decoded and written (a
telemetry row, a device row), and a flood of them would fill the telemetry buffer, the worker's
inbox and the database, so each device has a second bucket, checked on the network thread before
decoding too. An honest edge sends, live: a metrics sample per telemetry interval (at least 0.5 s,
60 s by default), its state at most every 0.5 s while downloading and at once on a change, a few
events at each change of state (and rejections reported one by one only 20 at once then one a
second per reason), and its status on each (re)connect and configuration change: well under 10
messages a second. But after an outage it flushes its store-and-forward outbox, up to 10,000
messages by default (``modelcast edge --telemetry-queue``), as fast as the broker acknowledges
them: measured on loopback, 315 messages/s when idle (32 in flight per 0.1 s worker turn), 5,800/s
while a download keeps the worker busy (10,000 in 1.7 s). The burst, 20,000, covers two full
backlogs and the live messages around them whatever the flush speed; the rate, 100/s, is ten times
the busiest live edge and refills a whole backlog's tokens in 100 s, while an edge needs at least
5,000 s (10,000 samples at 2 a second) offline to queue one. The trade-off: a flooding device may
still store 20,000 rows at once and 100 a second after; an edge with a larger ``--telemetry-queue``
Q needs ``--report-burst`` of about 2Q, or part of a full backlog is dropped (and counted).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_REQUEST_RATE = 2000.0
DEFAULT_REQUEST_BURST = 4000.0
DEFAULT_REPORT_RATE = 100.0
DEFAULT_REPORT_BURST = 20_000.0
#: Buckets kept at most; beyond it full (idle) buckets are forgotten, which changes nothing
#: (a full bucket is a fresh one). On the dev broker anyone can make up device ids.
MAX_BUCKETS = 10_000
#: Where drops are counted once MAX_BUCKETS devices have been counted already.
OTHERS = "(others)"
#: Seconds between two "still limited" log lines of one device.
LOG_INTERVAL_S = 10.0


def check_rate(rate: float, burst: float) -> None:
    if rate <= 0 or burst < 1:
        raise ValueError(f"need rate > 0 and burst >= 1, got rate {rate}, burst {burst}")


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class DeviceRateLimiter:
    """``allow(device)`` is called on paho's network thread; the counters are read elsewhere.

    ``what`` names the messages it limits, for the log."""

    def __init__(
        self,
        rate: float = DEFAULT_REQUEST_RATE,
        burst: float = DEFAULT_REQUEST_BURST,
        *,
        what: str = "chunk requests",
        clock: Callable[[], float] = time.monotonic,
        max_buckets: int = MAX_BUCKETS,
    ) -> None:
        check_rate(rate, burst)
        self.rate = rate
        self.burst = burst
        self.what = what
        self._clock = clock
        self._max_buckets = max_buckets
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()
        self._limited: Counter[str] = Counter()
        self._unsaved: Counter[str] = Counter()  # drops not yet taken by ``take_unsaved``
        self._logged_at: dict[str, float] = {}

    def allow(self, device: str) -> bool:
        """Take a token from ``device``'s bucket; False (and counted) when it is empty."""
        now = self._clock()
        bucket = self._buckets.get(device)
        if bucket is None:
            if len(self._buckets) >= self._max_buckets:
                self._forget_idle(now)
            bucket = self._buckets[device] = _Bucket(self.burst, now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        with self._lock:
            if device not in self._limited and len(self._limited) >= self._max_buckets:
                device = OTHERS
            self._limited[device] += 1
            if device != OTHERS:
                self._unsaved[device] += 1
        return False

    def should_log(self, device: str) -> bool:
        """True for a device's first dropped request, then at most once per LOG_INTERVAL_S."""
        now = self._clock()
        last = self._logged_at.get(device)
        if last is not None and now - last < LOG_INTERVAL_S:
            return False
        if last is None and len(self._logged_at) >= self._max_buckets:
            self._logged_at.clear()
        self._logged_at[device] = now
        return True

    def limited(self) -> dict[str, int]:
        """Messages dropped so far, per device."""
        with self._lock:
            return dict(self._limited)

    def has_unsaved(self) -> bool:
        with self._lock:
            return bool(self._unsaved)

    def take_unsaved(self) -> dict[str, int]:
        """Messages dropped since the last call, per device (to be persisted). Drops counted
        under ``OTHERS`` name no device and are only in ``limited()``."""
        with self._lock:
            unsaved, self._unsaved = self._unsaved, Counter()
        return dict(unsaved)

    def _forget_idle(self, now: float) -> None:
        full = [
            d
            for d, b in self._buckets.items()
            if b.tokens + (now - b.stamp) * self.rate >= self.burst
        ]
        for device in full:
            del self._buckets[device]
        if len(self._buckets) >= self._max_buckets:  # all busy: forget the longest quiet
            oldest = sorted(self._buckets, key=lambda d: self._buckets[d].stamp)
            for device in oldest[: len(oldest) // 2]:
                del self._buckets[device]


@dataclass(frozen=True)
class DeviceLimits:
    """Both limits of the coordinator: chunk requests, and reports (telemetry, state, status)."""

    requests: DeviceRateLimiter
    reports: DeviceRateLimiter

    @classmethod
    def make(
        cls,
        request_rate: float = DEFAULT_REQUEST_RATE,
        request_burst: float = DEFAULT_REQUEST_BURST,
        report_rate: float = DEFAULT_REPORT_RATE,
        report_burst: float = DEFAULT_REPORT_BURST,
    ) -> DeviceLimits:
        """Full buckets, for a coordinator that starts."""
        return cls(
            DeviceRateLimiter(request_rate, request_burst, what="chunk requests"),
            DeviceRateLimiter(report_rate, report_burst, what="reports"),
        )

    def has_unsaved(self) -> bool:
        return self.requests.has_unsaved() or self.reports.has_unsaved()

    def take_unsaved(self) -> dict[str, tuple[int, int]]:
        """Drops since the last call, per device: (chunk requests, reports)."""
        requests, reports = self.requests.take_unsaved(), self.reports.take_unsaved()
        return {d: (requests.get(d, 0), reports.get(d, 0)) for d in requests.keys() | reports}
