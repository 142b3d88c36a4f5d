"""The coordinator's registry: releases, deployments and the index sequence, variant rules and
fleet configuration, device rows; four stores (one module each) over one SQLite connection.

``Registry`` is their composition: it opens the database (``db.Db``: WAL, busy timeout, one
connection shared by threads under a lock), creates or migrates the tables, and *is* each store
(it inherits them; none defines state beyond the shared connection). So the operator's commands
and the tests keep one object per database (``Registry(db).deploy(...)``), while each concern
reads on its own and coordinator parts can name the one store they use (the device tracker takes
a ``DeviceStore``). Every check-then-write is a single SQL statement or transaction, so it is
atomic across processes too (the CLI writes while a coordinator polls).
"""

from __future__ import annotations

from pathlib import Path

from .db import Db, create_registry_tables
from .deployments import Deployment, DeploymentStore
from .device_rows import DeviceStore, DeviceUpdate
from .fleet_settings import FleetSettingsStore
from .release_build import DEFAULT_EXPIRES_IN
from .release_record import ReleaseRecord
from .releases import ReleaseStore

__all__ = [
    "DEFAULT_EXPIRES_IN",
    "Deployment",
    "DeviceUpdate",
    "Registry",
    "ReleaseRecord",
]


class Registry(ReleaseStore, DeploymentStore, FleetSettingsStore, DeviceStore):
    """The registry's stores over one connection to ``db_path`` (made and migrated if need be);
    release blobs live in ``DB.blobs/`` beside it."""

    def __init__(self, db_path: Path) -> None:
        db = Db(Path(db_path))
        with db.lock:
            create_registry_tables(db.sql)
        super().__init__(db)
