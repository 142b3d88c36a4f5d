"""The modelcast coordinator: key management, the release registry, and the service that
publishes deployments, serves chunks to edge devices over MQTT and stores their telemetry."""

from .chunkstore import ChunkSource
from .config import CoordinatorConfig
from .errors import (
    ChunkSourceError,
    CoordinatorError,
    KeyOperationError,
    RegistryError,
    RolloutError,
)
from .keystore import ReleaseKeys, init_keys, load_release_keys
from .registry import Registry, ReleaseRecord
from .scheduler import ChunkScheduler, SchedulerStats
from .service import Coordinator
from .status import fleet_status, format_status
from .telemetry_store import TelemetryStats, TelemetryStore

__all__ = [
    "ChunkScheduler",
    "ChunkSource",
    "ChunkSourceError",
    "Coordinator",
    "CoordinatorConfig",
    "CoordinatorError",
    "KeyOperationError",
    "Registry",
    "RegistryError",
    "ReleaseKeys",
    "ReleaseRecord",
    "RolloutError",
    "SchedulerStats",
    "TelemetryStats",
    "TelemetryStore",
    "fleet_status",
    "format_status",
    "init_keys",
    "load_release_keys",
]
