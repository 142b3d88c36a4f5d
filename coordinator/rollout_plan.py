"""The staged-rollout state machine: pure logic driven by time and by what devices report.

``step(rollout, now, observation)`` returns the rollout's next state; nothing here touches
SQLite or MQTT (``coordinator.rollouts`` does), so every transition is unit-tested on plain data.

A rollout goes through its stages (percentages of the devices its selector matches). A stage:

1. *admits* devices: the membership threshold ``ppm`` rises to the stage's, at most ``rate``
   known devices per minute when a rate is set (the rest of a large fleet does not download at
   once). The stage's threshold is the percentage's, raised if needed so that at least
   ``ceil(percent * known devices)`` are in (a 5% stage of six devices is one device, not none);
2. *settles*: every online member has activated the release or failed to; any activation
   failure beyond ``max_failure_rate`` halts at once;
3. *soaks* for ``soak`` seconds, then the gates are read from telemetry since the soak began:
   the error rate of the new version may exceed the base version's by at most
   ``max_error_rate``, and its p95 latency may not exceed ``max_p95_ms`` nor ``max_p95_ratio``
   times the base version's (over the same window), and its input drift score (the devices'
   drift samples pooled, ``coordinator.drift``) may exceed the base version's by at most
   ``max_drift`` (with no drift figures for the base, its score is taken as 1, the drifted
   line); while those gates are set and the new version has served no inference yet, the soak
   goes on (up to the stage timeout). Pass: the next stage (or ``completed``); fail:
   ``halted``, with the reason.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from protocol import PPM_ALL, Selector, membership_point, stage_ppm

from .errors import RolloutError

RUNNING = "running"
PAUSED = "paused"
HALTED = "halted"
COMPLETED = "completed"
ABORTED = "aborted"
ACTIVE_STATES = frozenset({RUNNING, PAUSED})
STATES = frozenset({RUNNING, PAUSED, HALTED, COMPLETED, ABORTED})
#: a stage whose members have not all settled by then is gated with what was reported
DEFAULT_STAGE_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class Gates:
    max_failure_rate: float = 0.0
    max_error_rate: float | None = None
    max_p95_ms: float | None = None
    max_p95_ratio: float | None = None
    max_drift: float | None = None

    def describe(self) -> str:
        parts = [f"activation failures <= {self.max_failure_rate:.0%}"]
        if self.max_error_rate is not None:
            parts.append(f"error rate <= base + {self.max_error_rate:.2%}")
        if self.max_p95_ms is not None:
            parts.append(f"p95 <= {self.max_p95_ms:g} ms")
        if self.max_p95_ratio is not None:
            parts.append(f"p95 <= {self.max_p95_ratio:g} x base")
        if self.max_drift is not None:
            parts.append(f"drift score <= base + {self.max_drift:g}")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, float | None]:
        return {
            "max_failure_rate": self.max_failure_rate,
            "max_error_rate": self.max_error_rate,
            "max_p95_ms": self.max_p95_ms,
            "max_p95_ratio": self.max_p95_ratio,
            "max_drift": self.max_drift,
        }


@dataclass(frozen=True)
class Rollout:
    fleet: str
    name: str
    version: int
    base: int | None  # the version the others keep, and that a halt goes back to
    select: Selector
    stages: tuple[float, ...]  # percentages, increasing, the last one 100
    soak: float
    gates: Gates = field(default_factory=Gates)
    rate: float | None = None  # devices admitted per minute within a stage
    stage_timeout: float = DEFAULT_STAGE_TIMEOUT_S
    state: str = RUNNING
    stage: int = 0  # index into stages
    ppm: int = 0  # the threshold in the signed index now
    stage_ppms: tuple[int, ...] = ()  # the threshold of each stage entered so far
    stage_started: float | None = None
    soak_started: float | None = None
    reason: str | None = None
    created: float = 0.0
    updated: float = 0.0
    gate_report: Mapping[str, Any] | None = None  # the last gate reading

    @property
    def id(self) -> str:
        """The rollout id in the index: membership is hashed from it and the device id."""
        return f"{self.name}@{self.version}"

    @property
    def release(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def stage_number(self) -> int:
        """The stage as operators count it (1-based; the last one once completed)."""
        return self.stage + 1 if self.state != COMPLETED else len(self.stages)

    def point(self, device: str) -> int:
        return membership_point(self.id, device)

    def stage_of(self, device: str) -> int | None:
        """The stage (0-based) a device was admitted in, or None if not (yet) in."""
        point = self.point(device)
        for i, threshold in enumerate(self.stage_ppms):
            if point < min(threshold, self.ppm):  # the current stage may be partly admitted
                return i
        return None


@dataclass(frozen=True)
class DeviceView:
    """What the registry knows of one device, as far as this rollout is concerned."""

    device: str
    tags: Mapping[str, str]
    online: bool
    active: int | None  # the version of the rollout's model it runs
    failed: bool  # it failed to activate the rollout's release
    rolled_back: bool = False  # it went back to the base by a signed rollback


@dataclass(frozen=True)
class Health:
    """Telemetry of one model version over the soak: None where nothing was reported."""

    inferences: int = 0
    errors: int = 0
    error_rate: float | None = None
    latency_p95_ms: float | None = None
    #: the pooled drift score of the version's devices (None: no drift samples)
    drift_score: float | None = None


@dataclass(frozen=True)
class Observation:
    devices: tuple[DeviceView, ...]
    #: health of (new version, base version) since the given time; called once per soak end
    health: Callable[[float], tuple[Health, Health]]


def validate_stages(stages: tuple[float, ...]) -> tuple[float, ...]:
    if not stages:
        raise RolloutError("at least one stage is needed")
    if any(not 0 < s <= 100 for s in stages):
        raise RolloutError(f"stages are percentages in (0, 100], got {list(stages)}")
    if any(b <= a for a, b in itertools.pairwise(stages)):
        raise RolloutError(f"stages must increase, got {list(stages)}")
    if stages[-1] != 100:
        stages = (*stages, 100.0)
    return stages


def matching(rollout: Rollout, devices: tuple[DeviceView, ...]) -> list[DeviceView]:
    """The known devices the rollout's selector matches, in membership order."""
    found = [d for d in devices if rollout.select.matches(d.device, d.tags)]
    return sorted(found, key=lambda d: (rollout.point(d.device), d.device))


def members(rollout: Rollout, devices: tuple[DeviceView, ...]) -> list[DeviceView]:
    """The known devices in the rollout at its current threshold."""
    return [d for d in matching(rollout, devices) if rollout.point(d.device) < rollout.ppm]


def _stage_threshold(rollout: Rollout, fleet: list[DeviceView]) -> int:
    percent = rollout.stages[rollout.stage]
    threshold = stage_ppm(percent)
    want = math.ceil(percent / 100 * len(fleet) - 1e-9)
    if 0 < want <= len(fleet):
        threshold = max(threshold, rollout.point(fleet[want - 1].device) + 1)
    if rollout.stage_ppms:
        threshold = max(threshold, rollout.stage_ppms[-1])
    return min(PPM_ALL, threshold)


def _admit(rollout: Rollout, now: float, fleet: list[DeviceView], target: int) -> int:
    """The threshold now: the stage's, or less while the rate limit holds devices back."""
    if rollout.rate is None or rollout.stage_started is None:
        return target
    before = rollout.stage_ppms[-2] if len(rollout.stage_ppms) > 1 else 0
    in_stage = [p for p in (rollout.point(d.device) for d in fleet) if before <= p < target]
    budget = max(1, math.floor(rollout.rate * (now - rollout.stage_started) / 60.0))
    if budget >= len(in_stage):
        return target
    return max(rollout.ppm, in_stage[budget])  # exactly ``budget`` of them are below it


def step(rollout: Rollout, now: float, obs: Observation) -> Rollout:
    """The rollout's state after looking at ``obs`` at time ``now`` (itself if nothing moved)."""
    if rollout.state != RUNNING:
        return rollout
    fleet = matching(rollout, obs.devices)
    r = _admitted(rollout, now, fleet)
    target = r.stage_ppms[r.stage]
    in_rollout = [d for d in fleet if r.point(d.device) < r.ppm]
    failed = [d.device for d in in_rollout if d.failed and d.active != r.version]
    if in_rollout and len(failed) / len(in_rollout) > r.gates.max_failure_rate:
        return _halt(
            r,
            now,
            f"activation failed on {len(failed)} of {len(in_rollout)} device(s) in stage "
            f"{r.stage + 1} ({', '.join(sorted(failed)[:10])})",
            {"activation_failures": len(failed), "devices": len(in_rollout)},
        )
    if r.ppm < target:
        return r  # still admitting
    unsettled = [
        d.device for d in in_rollout if d.online and d.active != r.version and not d.failed
    ]
    assert r.stage_started is not None
    if unsettled and now - r.stage_started < r.stage_timeout:
        return r
    if r.soak_started is None:
        return replace(r, soak_started=now, updated=now)
    if now - r.soak_started < r.soak:
        return r
    report: dict[str, Any] = {
        "stage": r.stage + 1,
        "devices": len(in_rollout),
        "activation_failures": len(failed),
        "unsettled": sorted(unsettled),
    }
    return _gated(r, now, obs, report)


def _admitted(r: Rollout, now: float, fleet: list[DeviceView]) -> Rollout:
    """``r`` with its stage entered (its threshold fixed) and its devices admitted so far."""
    if len(r.stage_ppms) <= r.stage:  # entering a stage
        r = replace(
            r,
            stage_ppms=(*r.stage_ppms, _stage_threshold(r, fleet)),
            stage_started=now,
            soak_started=None,
            updated=now,
        )
    target = r.stage_ppms[r.stage]
    if r.ppm < target:
        ppm = _admit(r, now, fleet, target)
        if ppm != r.ppm:
            r = replace(r, ppm=ppm, updated=now)
    return r


def _gated(r: Rollout, now: float, obs: Observation, report: dict[str, Any]) -> Rollout:
    """The soak is over: read the gates, then the next stage, completed, or halted."""
    assert r.soak_started is not None and r.stage_started is not None
    new, base = obs.health(r.soak_started)
    g = r.gates
    gated = any(
        v is not None for v in (g.max_error_rate, g.max_p95_ms, g.max_p95_ratio, g.max_drift)
    )
    if gated and new.inferences == 0 and now - r.stage_started < r.stage_timeout:
        return r  # no traffic is not the same as no errors: soak on until there is some
    report = {**report, "new": _health_dict(new), "base": _health_dict(base)}
    reason = _gate_failure(r, new, base)
    if reason is not None:
        return _halt(r, now, f"stage {r.stage + 1}: {reason}", report)
    if r.stage + 1 >= len(r.stages):
        return replace(
            r, state=COMPLETED, ppm=PPM_ALL, reason=None, updated=now, gate_report=report
        )
    return replace(
        r, stage=r.stage + 1, soak_started=None, stage_started=None, updated=now, gate_report=report
    )


def _gate_failure(r: Rollout, new: Health, base: Health) -> str | None:
    g = r.gates
    if g.max_error_rate is not None and new.error_rate is not None:
        allowed = (base.error_rate or 0.0) + g.max_error_rate
        if new.error_rate > allowed:
            return (
                f"error rate {new.error_rate:.2%} of {r.release} over {new.inferences} "
                f"inferences exceeds {allowed:.2%} (base {_pct(base.error_rate)} + "
                f"{g.max_error_rate:.2%})"
            )
    p95 = new.latency_p95_ms
    base_p95 = base.latency_p95_ms
    shown_base = "-" if base_p95 is None else f"{base_p95:.1f} ms"
    if g.max_p95_ms is not None and p95 is not None and p95 > g.max_p95_ms:
        return (
            f"p95 latency {p95:.1f} ms of {r.release} exceeds {g.max_p95_ms:g} ms "
            f"(base {shown_base})"
        )
    if (
        g.max_p95_ratio is not None
        and p95 is not None
        and base_p95 is not None
        and p95 > g.max_p95_ratio * base_p95
    ):
        return (
            f"p95 latency {p95:.1f} ms of {r.release} exceeds {g.max_p95_ratio:g} x the base "
            f"version's {base_p95:.1f} ms"
        )
    return _drift_failure(r, new, base)


def _drift_failure(r: Rollout, new: Health, base: Health) -> str | None:
    if r.gates.max_drift is None or new.drift_score is None:
        return None
    base_score = 1.0 if base.drift_score is None else base.drift_score
    allowed = base_score + r.gates.max_drift
    if new.drift_score <= allowed:
        return None
    shown = "no figures: 1" if base.drift_score is None else f"{base.drift_score:.2f}"
    return (
        f"input drift score {new.drift_score:.2f} of {r.release} exceeds {allowed:.2f} (base "
        f"{shown} + {r.gates.max_drift:g}): its devices' inputs are further from its reference"
    )


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.2%}"


def _health_dict(h: Health) -> dict[str, Any]:
    return {
        "inferences": h.inferences,
        "errors": h.errors,
        "error_rate": h.error_rate,
        "latency_p95_ms": h.latency_p95_ms,
        "drift_score": h.drift_score,
    }


def _halt(r: Rollout, now: float, reason: str, report: Mapping[str, Any]) -> Rollout:
    return replace(r, state=HALTED, reason=reason, updated=now, gate_report=dict(report))
