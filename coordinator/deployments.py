"""The ``deployments`` table (what each model's index entry names) and the index sequence.

Every check-then-write is one SQL statement or one ``BEGIN IMMEDIATE`` transaction, so it is
atomic across processes: ``modelcast deploy`` and a running coordinator's rollout engine never
overwrite each other's change unseen.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from .db import Store
from .errors import RegistryError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Deployment:
    """One row of ``deployments``: the version a model's index entry names and, for a staged
    rollout or a rollback, how (``spec``, JSON, see ``coordinator.deployer.index_target``)."""

    version: int
    spec: str | None = None


class DeploymentStore(Store):
    def deploy(self, name: str, version: int, fleet: str = "default") -> None:
        """Make ``name@version`` the fleet's target; a running coordinator publishes it."""
        sql = (
            "INSERT INTO deployments (fleet, name, version, deployed_at) "
            "SELECT DISTINCT fleet, name, version, ? FROM releases "
            "WHERE fleet = ? AND name = ? AND version = ? "
            "ON CONFLICT (fleet, name) DO UPDATE SET "
            "version = excluded.version, deployed_at = excluded.deployed_at, spec = NULL"
        )
        with self._db.lock:
            cursor = self._db.sql.execute(sql, [time.time(), fleet, name, version])
        if cursor.rowcount != 1:
            raise RegistryError(
                f"cannot deploy {name}@{version} to fleet {fleet}: no such release "
                "(add it with `modelcast release` first)"
            )
        log.info("release %s@%d marked deployed in fleet %s", name, version, fleet)

    def deployments(self, fleet: str) -> dict[str, int]:
        with self._db.lock:
            rows = list(self._db.sql.table("deployments").rows_where("fleet = ?", [fleet]))
        return {r["name"]: int(r["version"]) for r in rows}

    def deployment_entries(self, fleet: str) -> dict[str, Deployment]:
        """Every deployed model with its rollout or rollback spec (None: a plain deployment)."""
        with self._db.lock:
            rows = list(self._db.sql.table("deployments").rows_where("fleet = ?", [fleet]))
        return {r["name"]: Deployment(int(r["version"]), r.get("spec")) for r in rows}

    def set_deployment(
        self, fleet: str, name: str, deployment: Deployment | None, *, expect: Deployment | None
    ) -> bool:
        """Replace the deployment of ``name`` (None: remove it) if it is still ``expect``;
        False if someone changed it meanwhile (compare-and-set, one statement per case)."""
        if deployment is not None and not self._released(fleet, name, deployment.version):
            raise RegistryError(f"cannot deploy {name}@{deployment.version}: no such release")
        with self._db.lock:
            conn = self._db.sql.conn
            conn.execute("BEGIN IMMEDIATE")  # the read and the write are one transaction
            try:
                row = conn.execute(
                    "SELECT version, spec FROM deployments WHERE fleet = ? AND name = ?",
                    [fleet, name],
                ).fetchone()
                current = Deployment(int(row[0]), row[1]) if row is not None else None
                if current != expect:
                    conn.execute("ROLLBACK")
                    return False
                self._write(fleet, name, deployment)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return True

    def _write(self, fleet: str, name: str, deployment: Deployment | None) -> None:
        conn = self._db.sql.conn
        if deployment is None:
            conn.execute("DELETE FROM deployments WHERE fleet = ? AND name = ?", [fleet, name])
            return
        conn.execute(
            "INSERT INTO deployments (fleet, name, version, deployed_at, spec) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (fleet, name) DO UPDATE SET "
            "version = excluded.version, deployed_at = excluded.deployed_at, "
            "spec = excluded.spec",
            [fleet, name, deployment.version, time.time(), deployment.spec],
        )

    def _released(self, fleet: str, name: str, version: int) -> bool:
        with self._db.lock:
            row = self._db.sql.execute(
                "SELECT 1 FROM releases WHERE fleet = ? AND name = ? AND version = ? LIMIT 1",
                [fleet, name, version],
            ).fetchone()
        return row is not None

    def next_index_seq(self, fleet: str) -> int:
        """The next deployment index sequence number of ``fleet`` (1, 2, ...), persisted."""
        sql = (
            "INSERT INTO index_state (fleet, seq, published_at) VALUES (?, 1, ?) "
            "ON CONFLICT (fleet) DO UPDATE SET "
            "seq = index_state.seq + 1, published_at = excluded.published_at RETURNING seq"
        )
        with self._db.lock:
            rows = list(self._db.sql.query(sql, [fleet, time.time()]))
        return int(rows[0]["seq"])
