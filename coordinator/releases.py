"""The ``releases`` table: adding a release (built by ``release_build``) so that versions only
ever increase, reading releases and their variants, storing a manifest signed anew."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import protocol

from .db import RELEASE_COLUMNS, Store
from .delta_build import DEFAULT_DELTA_BASES
from .errors import RegistryError
from .keystore import ReleaseKeys
from .release_build import (
    DEFAULT_EXPIRES_IN,
    ModelCheck,
    ProfileBuilder,
    ReleaseRequest,
    build_release,
    check_release_request,
)
from .release_record import ReleaseRecord

log = logging.getLogger(__name__)


class ReleaseStore(Store):
    @property
    def blob_dir(self) -> Path:
        """Where release blobs live: ``DB.blobs/`` beside the database file ``DB.db``."""
        return self.db_path.parent / f"{self.db_path.stem}.blobs"

    def add_release(
        self,
        model_path: Path,
        *,
        name: str,
        version: int,
        keys: ReleaseKeys,
        fleet: str = "default",
        chunk_size: int = protocol.DEFAULT_CHUNK_SIZE,
        expires_in: float = DEFAULT_EXPIRES_IN,
        now: float | None = None,
        model_kind: str | None = None,
        variant: str | None = None,
        acceptance: protocol.Acceptance | None = None,
        check: ModelCheck | None = None,
        profile: ProfileBuilder | None = None,
        delta_bases: int = DEFAULT_DELTA_BASES,
    ) -> ReleaseRecord:
        """Hash, check, sign and store a release of ``model_path`` as ``name@version`` in
        ``fleet`` (see ``release_build.build_release``; ``check`` is the model check it runs,
        which tests replace to ship what only the devices' own check catches; None:
        ``runtime.model_check.check_model``; ``profile`` makes the drift reference profile
        signed into the manifest), with deltas from the ``delta_bases`` newest earlier releases
        of the same variant (``delta_build``)."""
        req = ReleaseRequest(
            model_path=Path(model_path),
            name=name,
            version=version,
            fleet=fleet,
            chunk_size=chunk_size,
            expires_in=expires_in,
            model_kind=model_kind,
            variant=variant,
            acceptance=acceptance,
        )
        check_release_request(req)
        latest = self.latest_version(fleet, name)
        if latest is not None and (version < latest or (version == latest and not variant)):
            raise RegistryError(_not_monotonic(req.release, fleet, latest))
        now = time.time() if now is None else now
        bases = self.delta_bases(fleet, name, variant or "", version, delta_bases)
        record = build_release(
            req, self.blob_dir, keys, now, check=check, profile=profile, bases=bases
        )
        self._insert_if_newest(record)
        _log_added(record)
        return record

    def _insert_if_newest(self, record: ReleaseRecord) -> None:
        """Insert unless a version >= this one exists (for a variant: unless a newer version, a
        build of this version without a variant, or this variant of it exists): one statement,
        so atomic across processes (two concurrent ``release`` commands cannot both win)."""
        columns = ", ".join(RELEASE_COLUMNS)
        placeholders = ", ".join("?" for _ in RELEASE_COLUMNS)
        values = [getattr(record, c) for c in RELEASE_COLUMNS]
        if record.variant:
            clash = "(version > ? OR (version = ? AND variant IN ('', ?)))"
            params = [record.version, record.version, record.variant]
        else:
            clash = "version >= ?"
            params = [record.version]
        sql = (
            f"INSERT INTO releases ({columns}) SELECT {placeholders} WHERE NOT EXISTS "
            f"(SELECT 1 FROM releases WHERE fleet = ? AND name = ? AND {clash})"
        )
        with self._db.lock:
            cursor = self._db.sql.execute(sql, [*values, record.fleet, record.name, *params])
        if cursor.rowcount != 1:
            latest = self.latest_version(record.fleet, record.name)
            raise RegistryError(_not_monotonic(record.release, record.fleet, latest or 0))

    def delta_bases(
        self, fleet: str, name: str, variant: str, version: int, count: int
    ) -> list[ReleaseRecord]:
        """The ``count`` newest releases of ``name`` (``variant``) before ``version``."""
        if count <= 0:
            return []
        with self._db.lock:
            rows = list(
                self._db.sql.table("releases").rows_where(
                    "fleet = ? AND name = ? AND variant = ? AND version < ?",
                    [fleet, name, variant, version],
                    order_by="version DESC",
                    limit=count,
                )
            )
        return [ReleaseRecord.from_row(r) for r in rows]

    def latest_version(self, fleet: str, name: str) -> int | None:
        with self._db.lock:
            row = self._db.sql.execute(
                "SELECT max(version) FROM releases WHERE fleet = ? AND name = ?", [fleet, name]
            ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def release(self, fleet: str, name: str, version: int) -> ReleaseRecord | None:
        """The release ``name@version``; of a version with variants, the first variant."""
        found = self.release_variants(fleet, name, version)
        return found[0] if found else None

    def release_variants(self, fleet: str, name: str, version: int) -> list[ReleaseRecord]:
        """Every build of ``name@version``: one without a variant, or its variants by name."""
        with self._db.lock:
            rows = list(
                self._db.sql.table("releases").rows_where(
                    "fleet = ? AND name = ? AND version = ?",
                    [fleet, name, version],
                    order_by="variant",
                )
            )
        return [ReleaseRecord.from_row(r) for r in rows]

    def releases(self, fleet: str) -> list[ReleaseRecord]:
        with self._db.lock:
            table = self._db.sql.table("releases")
            rows = list(table.rows_where("fleet = ?", [fleet], order_by="name, version, variant"))
        return [ReleaseRecord.from_row(r) for r in rows]

    def store_manifest(
        self, fleet: str, name: str, version: int, manifest: bytes, *, variant: str = ""
    ) -> None:
        """Replace a release's signed manifest by the same body signed anew (a new release key:
        the release id, which covers the body only, does not change)."""
        with self._db.lock:
            self._db.sql.execute(
                "UPDATE releases SET manifest = ? "
                "WHERE fleet = ? AND name = ? AND version = ? AND variant = ?",
                [manifest, fleet, name, version, variant],
            )


def _not_monotonic(release: str, fleet: str, latest: int) -> str:
    return (
        f"cannot release {release} in fleet {fleet}: version {latest} already exists and "
        "versions must increase"
    )


def _log_added(record: ReleaseRecord) -> None:
    log.info(
        "release %s added to fleet %s: %s model, %d bytes, %d chunks, sha256 %s",
        record.release,
        record.fleet,
        record.model_kind,
        record.size,
        record.n_chunks,
        record.sha256[:16],
    )
