"""``SimConfig``: a simulation's settings, checked when it is made, and how its devices are
spread over its worker processes (``WorkerPlan``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from protocol import DEFAULT_WINDOW, ProtocolError, VerifyKey, check_name
from runtime.errors import SetupError
from runtime.urls import parse_broker_list

from .device import DeviceOptions
from .errors import SimulationError
from .spec import DeviceProfile, DeviceSpec
from .verified import DEFAULT_CAP_MB, VerifiedChunks

#: connects a second over the whole simulation, first connects and reconnects alike
DEFAULT_CONNECT_RATE = 300.0
#: a device that failed this many connects in a row without ever connecting: the broker
#: refuses the fleet (``SimulatedFleet`` stops with the reasons)
REFUSED_AFTER = 5


@dataclass(frozen=True)
class SimConfig:
    broker_url: str
    devices: int
    trust_path: Path
    fleet: str = "default"
    prefix: str = "sim-"
    processes: int = 1
    telemetry_interval: float = 60.0
    profiles: tuple[DeviceProfile, ...] = (DeviceProfile(),)
    disk: Path | None = None
    connect_rate: float = DEFAULT_CONNECT_RATE
    keepalive: int = 60
    #: seconds a device waits for the broker's CONNACK before it tries again
    connack_timeout: float = 10.0
    window: int = DEFAULT_WINDOW
    stall_timeout: float = 10.0
    #: seconds between the workers' reports to the parent
    report_interval: float = 0.5
    #: hash every device's bytes like a real edge, rather than once per worker process
    verify_each: bool = False
    #: MB of verified chunks a worker process keeps to compare later devices' bytes with
    verify_cache_mb: int = DEFAULT_CAP_MB

    def __post_init__(self) -> None:
        if self.devices < 1:
            raise SimulationError(f"--devices must be at least 1, got {self.devices}")
        if self.processes < 1:
            raise SimulationError(f"--processes must be at least 1, got {self.processes}")
        if not 0.5 <= self.telemetry_interval <= 86400:
            raise SimulationError("--telemetry-interval must be 0.5 to 86400 seconds")
        if self.connect_rate <= 0:
            raise SimulationError("--connect-rate must be above 0")
        if self.verify_cache_mb < 0:
            raise SimulationError("--verify-cache-mb must be >= 0")
        if not self.profiles:
            raise SimulationError("at least one device profile is needed")
        try:
            check_name(self.fleet, "fleet")
            check_name(self.device_id(self.devices - 1), "device id (--prefix and a number)")
            if any(b.tls for b in parse_broker_list(self.broker_url)):
                raise SimulationError("simulated devices connect without TLS: use mqtt:// URLs")
        except (ProtocolError, SetupError) as exc:
            raise SimulationError(str(exc)) from None
        self.trust_pem()  # a missing or unreadable trust file stops it here

    def trust_pem(self) -> bytes:
        """The root public key devices trust (PEM), checked."""
        try:
            pem = self.trust_path.read_bytes()
            VerifyKey.from_pem(pem)
        except OSError as exc:
            raise SimulationError(f"cannot read the trust file {self.trust_path}: {exc}") from None
        except (ValueError, ProtocolError) as exc:
            raise SimulationError(
                f"{self.trust_path} is not a root public key (PEM, from 'modelcast keys init'): "
                f"{exc}"
            ) from None
        return pem

    @property
    def worker_count(self) -> int:
        return min(self.processes, self.devices)

    def device_id(self, number: int) -> str:
        return f"{self.prefix}{number}"

    def spec(self, number: int) -> DeviceSpec:
        """Device ``number``: profiles are dealt in turn (two profiles: half the fleet each)."""
        return DeviceSpec(self.device_id(number), self.profiles[number % len(self.profiles)])

    def options(self) -> DeviceOptions:
        return DeviceOptions(
            fleet=self.fleet,
            window=self.window,
            stall_timeout=self.stall_timeout,
            telemetry_interval=self.telemetry_interval,
        )

    def verified_chunks(self) -> VerifiedChunks | None:
        """A worker process's cache of verified chunks; None with ``verify_each``."""
        if self.verify_each:
            return None
        return VerifiedChunks(self.verify_cache_mb << 20, whole_file=self.disk is None)

    def plans(self) -> list[WorkerPlan]:
        """The devices of each worker: consecutive numbers, as even as they divide."""
        n = self.worker_count
        per = math.ceil(self.devices / n)
        return [
            WorkerPlan(self, i, i * per, min(per, self.devices - i * per))
            for i in range(n)
            if i * per < self.devices
        ]


@dataclass(frozen=True)
class WorkerPlan:
    """What one worker process runs: devices ``first`` .. ``first + count - 1``."""

    config: SimConfig
    worker: int
    first: int
    count: int

    @property
    def connect_rate(self) -> float:
        """This worker's share of the connect rate."""
        return self.config.connect_rate * self.count / self.config.devices

    def specs(self) -> list[DeviceSpec]:
        return [self.config.spec(n) for n in range(self.first, self.first + self.count)]
