"""The modelcast coordinator: key management, the release registry, and the service that
publishes deployments and serves chunks to edge devices over MQTT."""

from .chunkstore import ChunkSource, ChunkSourceError
from .keystore import ReleaseKeys, init_keys, load_release_keys
from .registry import Registry, RegistryError, ReleaseRecord
from .scheduler import ChunkScheduler, SchedulerStats
from .service import Coordinator
from .status import fleet_status, format_status

__all__ = [
    "ChunkScheduler",
    "ChunkSource",
    "ChunkSourceError",
    "Coordinator",
    "Registry",
    "RegistryError",
    "ReleaseKeys",
    "ReleaseRecord",
    "SchedulerStats",
    "fleet_status",
    "format_status",
    "init_keys",
    "load_release_keys",
]
