"""What a simulation says about its devices: each worker's ``WorkerReport`` (sent to the parent
every ``report_interval``), and their sum, the ``FleetSnapshot`` (the progress line, the summary,
``--json``)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class WorkerReport:
    worker: int
    pid: int
    devices: int
    online: int = 0
    #: devices that connected at least once
    ever_online: int = 0
    #: ``NAME@VERSION`` -> devices running it
    active: Mapping[str, int] = field(default_factory=dict)
    #: update state -> devices in it
    states: Mapping[str, int] = field(default_factory=dict)
    #: ``NAME@VERSION`` -> devices that verified it, and when the last of them did (wall clock)
    verified: Mapping[str, int] = field(default_factory=dict)
    verified_at: Mapping[str, float] = field(default_factory=dict)
    #: ``NAME@VERSION`` -> milestone (``began``, ``first_chunk``, ``verified``) -> when the
    #: first and the last device reached it (wall clock)
    timeline: Mapping[str, Mapping[str, tuple[float, float]]] = field(default_factory=dict)
    bytes_received: int = 0
    chunks: int = 0
    duplicates: int = 0
    #: messages (and their bytes) that arrived but served nothing (``VirtualDevice.unwanted``)
    unwanted: int = 0
    unwanted_bytes: int = 0
    requests: int = 0
    stalls: int = 0
    #: messages refused (by reason), and chunks a sink could not take
    failures: Mapping[str, int] = field(default_factory=dict)
    #: failed connects, by reason; and those of devices that never connected after
    #: ``config.REFUSED_AFTER`` attempts (the broker refuses them)
    connect_failures: Mapping[str, int] = field(default_factory=dict)
    refused: Mapping[str, int] = field(default_factory=dict)
    refused_devices: int = 0
    telemetry_made: int = 0
    telemetry_acked: int = 0
    telemetry_refused: int = 0
    #: ``verified.VerifyCounts`` of the process (chunks compared or hashed, files hashed or
    #: shared); empty with ``--verify-each``
    verification: Mapping[str, int] = field(default_factory=dict)
    final: bool = False


def _sum(maps: Iterable[Mapping[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for m in maps:
        total.update(m)
    return dict(sorted(total.items()))


@dataclass(frozen=True)
class FleetSnapshot:
    devices: int
    elapsed_s: float
    workers: tuple[WorkerReport, ...]

    @classmethod
    def of(cls, devices: int, started: float, reports: Iterable[WorkerReport]) -> FleetSnapshot:
        ordered = tuple(sorted(reports, key=lambda r: r.worker))
        return cls(devices, round(time.monotonic() - started, 1), ordered)

    def _total(self, name: str) -> int:
        return sum(int(getattr(r, name)) for r in self.workers)

    @property
    def online(self) -> int:
        return self._total("online")

    @property
    def ever_online(self) -> int:
        return self._total("ever_online")

    @property
    def active(self) -> dict[str, int]:
        return _sum(r.active for r in self.workers)

    @property
    def verified(self) -> dict[str, int]:
        return _sum(r.verified for r in self.workers)

    def verified_at(self, release: str) -> float | None:
        """When the last device verified ``release`` (wall clock)."""
        times = [r.verified_at[release] for r in self.workers if release in r.verified_at]
        return max(times) if times else None

    def timeline(self, release: str, since: float) -> dict[str, tuple[float, float]]:
        """Milestone -> seconds after ``since`` when the first and the last device reached it."""
        spans: dict[str, tuple[float, float]] = {}
        for r in self.workers:
            for name, span in r.timeline.get(release, {}).items():
                spans[name] = merge_span(spans.get(name), span)
        return {k: (round(a - since, 3), round(b - since, 3)) for k, (a, b) in spans.items()}

    @property
    def failures(self) -> dict[str, int]:
        return _sum(r.failures for r in self.workers)

    @property
    def refused(self) -> dict[str, int]:
        return _sum(r.refused for r in self.workers)

    def all_active(self, release: str) -> bool:
        return self.active.get(release, 0) >= self.devices

    def progress_line(self) -> str:
        states = _sum(r.states for r in self.workers)
        active = ", ".join(f"{k} {v}" for k, v in self.active.items()) or "none"
        busy = ", ".join(f"{k} {v}" for k, v in states.items() if k not in ("active", "idle") and v)
        failures = sum(self.failures.values())
        return (
            f"[{self.elapsed_s:7.1f}s] online {self.online}/{self.devices}; active: {active}"
            f"{'; ' + busy if busy else ''}; received {_mb(self._total('bytes_received'))}"
            f"{f'; {failures} failures' if failures else ''}"
        )

    def summary(self) -> str:
        lines = [
            f"{self.devices} simulated devices over {len(self.workers)} processes, "
            f"{self.elapsed_s:.1f} s",
            f"  online at the end:  {self.online} (ever connected: {self.ever_online})",
        ]
        active = self.active
        lines.append("  active:            " + (_counts(active) if active else "nothing"))
        lines.append(
            f"  received:          {_mb(self._total('bytes_received'))} "
            f"({self._total('chunks')} chunks, {self._total('duplicates')} duplicates, "
            f"{self._total('unwanted')} unwanted ({_mb(self._total('unwanted_bytes'))}), "
            f"{self._total('requests')} requests, {self._total('stalls')} stall repairs)"
        )
        lines.append(
            f"  telemetry:         {self._total('telemetry_made')} messages made, "
            f"{self._total('telemetry_acked')} acknowledged by the broker, "
            f"{self._total('telemetry_refused')} refused (queue full)"
        )
        check = self.verification
        lines.append(
            "  verification:      "
            + (_counts(check) + " (shared per process)" if check else "every device hashes")
        )
        failures = self.failures
        lines.append("  failures:          " + (_counts(failures) if failures else "none"))
        connects = _sum(r.connect_failures for r in self.workers)
        if connects:
            lines.append("  failed connects:   " + _counts(connects))
        return "\n".join(lines)

    @property
    def verification(self) -> dict[str, int]:
        return _sum(r.verification for r in self.workers)

    def to_dict(self) -> dict[str, Any]:
        return {
            "devices": self.devices,
            "processes": len(self.workers),
            "elapsed_s": self.elapsed_s,
            "online": self.online,
            "ever_online": self.ever_online,
            "active": self.active,
            "verified": self.verified,
            "bytes_received": self._total("bytes_received"),
            "chunks": self._total("chunks"),
            "duplicates": self._total("duplicates"),
            "unwanted": self._total("unwanted"),
            "unwanted_bytes": self._total("unwanted_bytes"),
            "requests": self._total("requests"),
            "stalls": self._total("stalls"),
            "telemetry": {
                "made": self._total("telemetry_made"),
                "acked": self._total("telemetry_acked"),
                "refused": self._total("telemetry_refused"),
            },
            "failures": self.failures,
            "verification": self.verification,
            "connect_failures": _sum(r.connect_failures for r in self.workers),
            "workers": [asdict(r) for r in self.workers],
        }


def merge_span(span: tuple[float, float] | None, other: tuple[float, float]) -> tuple[float, float]:
    """The earliest start and latest end of two (first, last) spans."""
    return other if span is None else (min(span[0], other[0]), max(span[1], other[1]))


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in counts.items())


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"
