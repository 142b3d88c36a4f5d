"""What devices report (state, status, events): batched into the registry, changes logged.

Only the latest report of each kind per device is kept between flushes, so a chatty device costs
one row write per flush, not one per message. The same flush records when each device was heard
from by telemetry, how far its clock is off (``clock_skew``), and the messages the rate limits
dropped since the last (``DeviceLimits``), so that ``modelcast status``, another process, can
show them.
"""

from __future__ import annotations

import logging
import threading
import time

from protocol import DeviceEvent, DeviceState, DeviceStatus, UpdateState, is_valid_name

from .clock_skew import WARN_SKEW_S, ClockReading, ClockSkews, describe_skew
from .device_rows import DeviceStore, DeviceUpdate, Sightings
from .ratelimit import DeviceLimits
from .release_askers import ReleaseAskers

log = logging.getLogger(__name__)

_WARN_EVENTS = frozenset({"rejected", "activation-failed", "model-corrupt"})
_INFO_EVENTS = frozenset({"verified", "activated", "model-repaired", "reused"})


def describe_state(state: DeviceState) -> str:
    """``m@3 downloading 40/48``, ``m@3 downloading 46/48 (reused 11534336 of 12582912
    bytes)`` (chunks copied from another release on the device), ``m@3 active``, ``failed
    (hash-mismatch)``."""
    parts = []
    if state.model is not None:
        parts.append(f"{state.model}@{state.version}" if state.version is not None else state.model)
    parts.append(state.state.value)
    if state.state is UpdateState.DOWNLOADING and state.chunks_total:
        parts.append(f"{state.chunks_held}/{state.chunks_total}")
        if state.bytes_reused:
            parts.append(f"(reused {state.bytes_reused} of {state.size} bytes)")
    if state.reason and state.state in (UpdateState.FAILED, UpdateState.REJECTED):
        parts.append(f"({state.reason})")
    return " ".join(parts)


class DeviceTracker:
    def __init__(
        self,
        registry: DeviceStore,
        fleet: str,
        *,
        limits: DeviceLimits | None = None,
        askers: ReleaseAskers | None = None,
        flush_interval: float = 0.5,
    ) -> None:
        self._registry = registry
        self._fleet = fleet
        self._limits = limits
        self._askers = askers
        self._flush_interval = flush_interval
        self._drops_taken = time.monotonic()  # the worker's own
        self._batch: dict[tuple[str, type], DeviceUpdate] = {}
        self._batch_since: float | None = None
        self._last_state: dict[str, tuple[UpdateState, str | None, int | None]] = {}
        self._online: dict[str, bool] = {}  # the worker's own: as last logged
        self._clock_off: dict[str, bool] = {}  # the worker's own: as last logged
        self._heard: dict[str, float] = {}  # devices heard from by telemetry: latest time
        self._clocks = ClockSkews()
        # on_seen runs on the MQTT network thread (telemetry is handled there), the rest on the
        # worker: this guards _heard, _clocks and _batch_since between them; _batch,
        # _last_state and _online are the worker's own
        self._lock = threading.Lock()

    @staticmethod
    def _seen(ts: float | None, *, retained: bool, received_at: float) -> float | None:
        """When the device was last heard from. A retained message may be weeks old: trust its
        own timestamp (never later than now) rather than the time it was replayed to us."""
        if not retained:
            return received_at
        return None if ts is None else min(ts, received_at)

    def on_state(self, state: DeviceState, *, retained: bool, received_at: float) -> None:
        seen = self._seen(state.ts, retained=retained, received_at=received_at)
        self._add(DeviceUpdate(state, seen), None if retained else state.ts, received_at)
        if self._askers is not None:
            self._askers.on_active(state.device, state.active)
        key = (state.state, state.model, state.version)
        if self._last_state.get(state.device) != key:
            self._last_state[state.device] = key
            level = logging.WARNING if state.state is UpdateState.FAILED else logging.INFO
            log.log(
                level,
                "device %s: %s%s",
                state.device,
                describe_state(state),
                " (retained)" if retained else "",
            )
        else:
            log.debug("device %s: %s", state.device, describe_state(state))

    def on_status(self, status: DeviceStatus, *, retained: bool, received_at: float) -> None:
        # An offline status is the broker speaking (the will, made when the device connected),
        # not the device: it says nothing about when the device was last heard from, nor about
        # its clock.
        live = status.online and not retained
        seen = (
            self._seen(status.ts, retained=retained, received_at=received_at)
            if status.online
            else None
        )
        self._add(DeviceUpdate(status, seen), status.ts if live else None, received_at)
        if self._askers is not None:
            self._askers.on_status(
                status.device, online=status.online, profile=status.profile, active=status.active
            )
        if self._online.get(status.device) != status.online:
            self._online[status.device] = status.online
            active = ", ".join(f"{n}@{v}" for n, v in sorted(status.active.items()))
            log.info(
                "device %s %s%s%s",
                status.device,
                "online" if status.online else "offline",
                f" running {active}" if active else "",
                " (retained)" if retained else "",
            )

    def on_event(self, event: DeviceEvent) -> None:
        release = f" {event.model}@{event.version}" if event.model is not None else ""
        detail = "".join(
            f" {k}={v}"
            for k, v in (("reason", event.reason), ("topic", event.topic), ("detail", event.detail))
            if v is not None
        )
        if event.event in _WARN_EVENTS:
            level = logging.WARNING
        elif event.event in _INFO_EVENTS:
            level = logging.INFO
        else:
            level = logging.DEBUG
        log.log(
            level,
            "device %s: event %s%s%s%s",
            event.device,
            event.event,
            release,
            detail,
            " (replayed)" if event.hist else "",
        )

    def on_seen(self, device: str, received_at: float, ts: float | None = None) -> None:
        """A live (never retained) telemetry message: the device is there now. ``ts``: the time
        the device put in it, if that is its clock now (not store-and-forward history)."""
        with self._lock:
            if received_at > self._heard.get(device, 0.0):
                self._heard[device] = received_at
            if ts is not None:
                self._clocks.observe(device, ts, received_at)
            if self._batch_since is None:
                # when the batch started *here*: with the receive time, a worker running behind
                # its inbox would find every batch overdue and commit once per message, falling
                # further behind (measured: 1,700 samples/s instead of 20,000)
                self._batch_since = time.time()

    def _add(self, update: DeviceUpdate, ts: float | None, received_at: float) -> None:
        """A state or status report to write; ``ts``: the device's time in it, if live."""
        self._batch[(update.message.device, type(update.message))] = update
        with self._lock:
            if ts is not None:
                self._clocks.observe(update.message.device, ts, received_at)
            if self._batch_since is None:
                self._batch_since = time.time()  # not the receive time: see on_seen

    def due(self, now: float) -> bool:
        with self._lock:
            return self._due_locked(now)

    def _due_locked(self, now: float) -> bool:
        return self._batch_since is not None and now - self._batch_since >= self._flush_interval

    @property
    def pending(self) -> int:
        """Reports to write now. Times devices were heard from by telemetry count only once
        due: they change with every sample, and flushing them whenever the inbox is momentarily
        empty would commit (and fsync) once every few messages under a telemetry flood. Drop
        counts likewise, once per flush interval."""
        with self._lock:
            heard = len(self._heard) if self._due_locked(time.time()) else 0
        return len(self._batch) + heard + self._drops_due()

    def _drops_due(self) -> int:
        if self._limits is None or time.monotonic() - self._drops_taken < self._flush_interval:
            return 0
        return int(self._limits.has_unsaved())

    def flush(self) -> int:
        """Write the batch to the registry; returns how many reports and sightings it held."""
        limited = self._take_drops()
        updates = list(self._batch.values())
        self._batch.clear()
        with self._lock:
            seen, self._heard = self._heard, {}
            clocks = self._clocks.take()
            self._batch_since = None
        sightings = Sightings(seen, clocks, limited)
        if not updates and not sightings:
            return 0
        self._log_clocks(clocks)
        started = time.monotonic()
        self._registry.record_devices(self._fleet, updates)
        # After the reports, whose last_seen it may only move forward.
        self._registry.record_sightings(self._fleet, sightings)
        log.debug(
            "recorded %d device reports and %d sightings of fleet %s in %.1f ms",
            len(updates),
            len(sightings),
            self._fleet,
            (time.monotonic() - started) * 1000,
        )
        return len(updates) + len(sightings)

    def _log_clocks(self, clocks: dict[str, ClockReading]) -> None:
        for device, reading in sorted(clocks.items()):
            off = abs(reading.skew) > WARN_SKEW_S
            if self._clock_off.get(device, False) != off:
                self._clock_off[device] = off
                log.log(
                    logging.WARNING if off else logging.INFO,
                    "device %s: clock %s (%s)",
                    device,
                    "off" if off else "set right",
                    describe_skew(reading.skew, reading.checked),
                )

    def _take_drops(self) -> dict[str, tuple[int, int]]:
        """Drops since the last flush, of the device ids that can be (ids made up on the
        development broker that no device may have stay in the coordinator's counters)."""
        if self._limits is None:
            return {}
        self._drops_taken = time.monotonic()
        return {d: n for d, n in self._limits.take_unsaved().items() if is_valid_name(d)}
