"""The modelcast coordinator: key management, the release registry, and the service that
publishes deployments, serves chunks to edge devices over MQTT and stores their telemetry.

The service (``service.Coordinator``, configured by ``config.CoordinatorConfig``) wires one module
per job: ``ingestion`` (device messages in), ``chunk_serving`` (requests into the ``scheduler``,
and the sender), ``publishing`` (the poller: rollouts, trust, manifests, index) and
``telemetry_writer``; its docstring lists the threads, the locks and their order.

State is in one SQLite file (``db``: the connection factory, and every store's schema and
migrations). The registry is split by concern into stores that share one connection:
``releases`` (built by ``release_build``), ``deployments`` (and the index sequence),
``fleet_settings`` (variant rules, fleet configuration) and ``device_rows``. ``Registry`` is
their thin composition rather than four objects each caller wires: the operator's commands,
the benchmarks and the tests use one ``Registry(db)`` for all of it, as they did, so no call
site outside the package changed, while each store reads on its own and a part that needs one
concern names that store's type (``DeviceTracker`` takes a ``DeviceStore``). Telemetry
(``telemetry_store`` writing, ``telemetry_queries`` reading) and rollouts (``rollout_store``,
``rollout_engine``, ``rollouts`` for the operator's commands) keep connections of their own: the
telemetry writer commits without fsync and must not wait behind registry reads.
"""

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
