"""The coordinator's state in SQLite: releases, what is deployed, index sequence, devices.

Several processes share one database file: the coordinator service polls it while the CLI's
``release`` and ``deploy`` write to it. WAL mode lets readers and one writer proceed together, a
busy timeout makes writers queue instead of failing, and every check-then-write (monotonic
versions, deploy of an existing release, the index sequence) is a single SQL statement, so it is
atomic across processes without explicit locking. Within a process, one connection is shared by
threads under a lock.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import sqlite_utils

import protocol
from protocol.envelope import Envelope
from protocol.manifest import chunk_count
from runtime.files import StagedFile
from runtime.onnxmeta import release_kind

from .errors import RegistryError
from .keystore import ReleaseKeys

log = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 30.0
DEFAULT_EXPIRES_IN = 90 * 86400.0


@dataclass(frozen=True)
class ReleaseRecord:
    """One row of ``releases``: a signed release and where its bytes are."""

    fleet: str
    name: str
    version: int
    size: int
    sha256: str
    chunk_size: int
    n_chunks: int
    block_chunks: int
    manifest: bytes
    release_id: bytes
    blob_path: str
    created: float
    variant: str = ""  # "" when the version has a single build

    @property
    def release(self) -> str:
        return f"{self.name}@{self.version}" + (f" ({self.variant})" if self.variant else "")

    @property
    def model_kind(self) -> str:
        """The kind the signed manifest records (``tensors`` or ``text-embedding``)."""
        envelope = Envelope.decode(self.manifest, protocol.DEFAULT_LIMITS.max_envelope_bytes)
        return protocol.Manifest.decode(envelope.body).model_kind

    @property
    def short_id(self) -> bytes:
        """The 16-byte release id that chunk frames and requests carry."""
        return self.release_id[:16]

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ReleaseRecord:
        return cls(
            fleet=row["fleet"],
            name=row["name"],
            version=int(row["version"]),
            size=int(row["size"]),
            sha256=row["sha256"],
            chunk_size=int(row["chunk_size"]),
            n_chunks=int(row["n_chunks"]),
            block_chunks=int(row["block_chunks"]),
            manifest=bytes(row["manifest"]),
            release_id=bytes(row["release_id"]),
            blob_path=row["blob_path"],
            created=float(row["created"]),
            variant=row.get("variant") or "",
        )


_RELEASE_COLUMNS = (
    "fleet",
    "name",
    "version",
    "size",
    "sha256",
    "chunk_size",
    "n_chunks",
    "block_chunks",
    "manifest",
    "release_id",
    "blob_path",
    "created",
    "variant",
)

_DEVICE_COLUMNS: dict[str, type] = {
    "fleet": str,
    "device_id": str,
    "online": int,
    "last_seen": float,
    "state": str,
    "model": str,
    "version": int,
    "chunks_held": int,
    "chunks_total": int,
    "reason": str,
    "active": str,
    "rejections": int,
    "boot": str,
    "agent": str,
    "profile": str,  # JSON: what the device reported about itself (tags, RAM, ...)
    "updated": float,
}


@dataclass(frozen=True)
class Deployment:
    """One row of ``deployments``: the version a model's index entry names and, for a staged
    rollout or a rollback, how (``spec``, JSON, see ``coordinator.deployer.index_target``)."""

    version: int
    spec: str | None = None


@dataclass(frozen=True)
class DeviceUpdate:
    """A decoded state or status message and when it was heard (None: leave last_seen alone)."""

    message: protocol.DeviceState | protocol.DeviceStatus
    seen: float | None


class Registry:
    def __init__(self, db_path: Path) -> None:
        self.db_path = Path(db_path)
        self.blob_dir = self.db_path.parent / f"{self.db_path.stem}.blobs"
        self._lock = threading.RLock()
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.db_path), timeout=BUSY_TIMEOUT_S, check_same_thread=False)
        self._db = sqlite_utils.Database(conn)
        self._db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        self._db.enable_wal()
        self._create_tables()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _create_tables(self) -> None:
        db = self._db
        db.table("releases").create(
            {
                "fleet": str,
                "name": str,
                "version": int,
                "size": int,
                "sha256": str,
                "chunk_size": int,
                "n_chunks": int,
                "block_chunks": int,
                "manifest": bytes,
                "release_id": bytes,
                "blob_path": str,
                "created": float,
                "variant": str,
            },
            pk=("fleet", "name", "version", "variant"),
            not_null={"manifest", "release_id", "blob_path", "variant"},
            defaults={"variant": ""},
            if_not_exists=True,
        )
        releases = db.table("releases")
        if "variant" not in releases.columns_dict:  # made before variants: one build a version
            releases.add_column("variant", str, not_null_default="")
        if releases.pks != ["fleet", "name", "version", "variant"]:
            releases.transform(pk=("fleet", "name", "version", "variant"))
        db.table("fleet_config").create(
            {"fleet": str, "selector": str, "settings": str, "updated": float},
            pk=("fleet", "selector"),
            if_not_exists=True,
        )
        db.table("variant_rules").create(
            {"fleet": str, "name": str, "rules": str, "default_variant": str},
            pk=("fleet", "name"),
            if_not_exists=True,
        )
        db.table("deployments").create(
            {"fleet": str, "name": str, "version": int, "deployed_at": float, "spec": str},
            pk=("fleet", "name"),
            if_not_exists=True,
        )
        db.table("index_state").create(
            {"fleet": str, "seq": int, "published_at": float}, pk="fleet", if_not_exists=True
        )
        db.table("devices").create(_DEVICE_COLUMNS, pk=("fleet", "device_id"), if_not_exists=True)
        # databases made before a column existed get it (NULL in old rows)
        for table, column in (("deployments", "spec"), ("devices", "profile")):
            if column not in db.table(table).columns_dict:
                db.table(table).add_column(column, str)

    # --- releases ------------------------------------------------------------------------
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
    ) -> ReleaseRecord:
        """Hash, sign and store a release of ``model_path`` as ``name@version`` in ``fleet``.

        The manifest records the model kind the file declares (``model_kind``, if given, must
        agree; see ``runtime.onnxmeta.release_kind``), so edges know how to serve it.

        The file is read once: each chunk-sized piece is hashed and copied into the
        content-addressed blob store on the way through, so the blob is exactly what the
        manifest describes even if the source file changes meanwhile.
        """
        model_path = Path(model_path)
        release = f"{name}@{version}" + (f" ({variant})" if variant else "")
        self._check_release_args(model_path, name, version, fleet, chunk_size, expires_in)
        if variant is not None:
            try:
                protocol.check_name(variant, "variant")
            except protocol.ProtocolError as exc:
                raise RegistryError(exc.detail) from None
        latest = self.latest_version(fleet, name)
        if latest is not None and (version < latest or (version == latest and not variant)):
            raise RegistryError(self._not_monotonic(release, fleet, latest))
        now = time.time() if now is None else now

        self.blob_dir.mkdir(parents=True, exist_ok=True)
        with StagedFile(self.blob_dir) as staged:
            with model_path.open("rb") as src:
                whole, hashes, size = protocol.hash_chunks(
                    _copy_pieces(src, staged.file, chunk_size)
                )
            if size == 0:
                raise RegistryError(f"{model_path} is empty: nothing to release")
            staged.file.flush()
            try:  # from the copy: the kind of exactly the bytes that are signed
                kind = release_kind(staged.path, model_kind, label=str(model_path))
            except ValueError as exc:
                raise RegistryError(f"cannot release {release}: {exc}") from None
            manifest = protocol.Manifest(
                fleet=fleet,
                name=name,
                version=version,
                size=size,
                sha256=whole,
                chunk_size=chunk_size,
                chunks=hashes,
                created=now,
                expires=now + expires_in,
                model_kind=kind,
                variant=variant or None,
                acceptance=acceptance,
            )
            try:
                manifest.check()
            except protocol.ProtocolError as exc:
                raise RegistryError(f"cannot release {release}: {exc.detail}") from None
            # Content-addressed: an existing blob of that name holds the same bytes already.
            blob = (self.blob_dir / f"{whole.hex()}.onnx").resolve()
            staged.commit(blob)

        signed = manifest.sign(keys.key, keys.cert)
        record = ReleaseRecord(
            fleet=fleet,
            name=name,
            version=version,
            size=size,
            sha256=whole.hex(),
            chunk_size=chunk_size,
            n_chunks=manifest.n_chunks,
            block_chunks=manifest.block_chunks,
            manifest=signed,
            release_id=manifest.release_id,
            blob_path=str(blob),
            created=now,
            variant=variant or "",
        )
        self._insert_if_newest(record)
        log.info(
            "release %s added to fleet %s: %s model, %d bytes, %d chunks, sha256 %s",
            release,
            fleet,
            kind,
            size,
            record.n_chunks,
            record.sha256[:16],
        )
        return record

    @staticmethod
    def _check_release_args(
        model_path: Path, name: str, version: int, fleet: str, chunk_size: int, expires_in: float
    ) -> None:
        for value, what in ((name, "model name"), (fleet, "fleet")):
            try:
                protocol.check_name(value, what)
            except protocol.ProtocolError as exc:
                raise RegistryError(exc.detail) from None
        if type(version) is not int or version < 0:
            raise RegistryError(f"version must be a non-negative integer, got {version!r}")
        limits = protocol.DEFAULT_LIMITS
        low, high = limits.min_chunk_size, limits.max_chunk_size
        if type(chunk_size) is not int or not low <= chunk_size <= high:
            raise RegistryError(
                f"chunk size {chunk_size!r} must be an integer between {low} and {high} bytes"
            )
        if expires_in <= 0:
            raise RegistryError(f"expires_in must be positive, got {expires_in}")
        try:
            size = model_path.stat().st_size
        except FileNotFoundError:
            raise RegistryError(f"{model_path}: no such file") from None
        if not model_path.is_file():
            raise RegistryError(f"{model_path} is not a regular file")
        if size == 0:
            raise RegistryError(f"{model_path} is empty: nothing to release")
        if chunk_count(size, chunk_size) > limits.max_chunks:
            raise RegistryError(
                f"{model_path}: {size} bytes make {chunk_count(size, chunk_size)} chunks of "
                f"{chunk_size} bytes, more than the {limits.max_chunks} a manifest may list; "
                "use a larger chunk size"
            )

    @staticmethod
    def _not_monotonic(release: str, fleet: str, latest: int) -> str:
        return (
            f"cannot release {release} in fleet {fleet}: version {latest} already exists and "
            "versions must increase"
        )

    def _insert_if_newest(self, record: ReleaseRecord) -> None:
        """Insert unless a version >= this one exists (for a variant: unless a newer version, a
        build of this version without a variant, or this variant of it exists): one statement,
        so atomic across processes (two concurrent ``release`` commands cannot both win)."""
        columns = ", ".join(_RELEASE_COLUMNS)
        placeholders = ", ".join("?" for _ in _RELEASE_COLUMNS)
        values = [getattr(record, c) for c in _RELEASE_COLUMNS]
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
        with self._lock:
            cursor = self._db.execute(sql, [*values, record.fleet, record.name, *params])
        if cursor.rowcount != 1:
            latest = self.latest_version(record.fleet, record.name)
            raise RegistryError(self._not_monotonic(record.release, record.fleet, latest or 0))

    def latest_version(self, fleet: str, name: str) -> int | None:
        with self._lock:
            row = self._db.execute(
                "SELECT max(version) FROM releases WHERE fleet = ? AND name = ?", [fleet, name]
            ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def release(self, fleet: str, name: str, version: int) -> ReleaseRecord | None:
        """The release ``name@version``; of a version with variants, the first variant."""
        found = self.release_variants(fleet, name, version)
        return found[0] if found else None

    def release_variants(self, fleet: str, name: str, version: int) -> list[ReleaseRecord]:
        """Every build of ``name@version``: one without a variant, or its variants by name."""
        with self._lock:
            rows = list(
                self._db.table("releases").rows_where(
                    "fleet = ? AND name = ? AND version = ?",
                    [fleet, name, version],
                    order_by="variant",
                )
            )
        return [ReleaseRecord.from_row(r) for r in rows]

    # --- variant rules -------------------------------------------------------------------
    def set_variant_rules(
        self,
        fleet: str,
        name: str,
        rules: list[protocol.VariantRule],
        default: str | None,
    ) -> None:
        """How devices pick among the variants of ``name``'s releases: the first rule that
        holds, else ``default`` (None: the first variant by name)."""
        with self._lock:
            self._db.table("variant_rules").upsert(
                {
                    "fleet": fleet,
                    "name": name,
                    "rules": json.dumps([r.to_dict() for r in rules]),
                    "default_variant": default,
                },
                pk=("fleet", "name"),
            )

    # --- fleet configuration -------------------------------------------------------------
    def set_config(self, fleet: str, select: protocol.Selector, settings: dict[str, Any]) -> None:
        """Merge ``settings`` into the configuration entry of ``select`` (made if new; it then
        comes last, so it overrides earlier entries on the devices both select)."""
        key = json.dumps(select.to_dict(), sort_keys=True)
        with self._lock, self._db.conn:
            row = self._db.conn.execute(
                "SELECT settings FROM fleet_config WHERE fleet = ? AND selector = ?", [fleet, key]
            ).fetchone()
            merged = {**(json.loads(row[0]) if row else {}), **settings}
            if row is None:
                count = self._db.conn.execute(
                    "SELECT count(*) FROM fleet_config WHERE fleet = ?", [fleet]
                ).fetchone()[0]
                if count >= protocol.DEFAULT_LIMITS.max_config_entries:
                    raise RegistryError(
                        f"fleet {fleet} has {count} configuration entries already (one per "
                        "selector); reuse a selector"
                    )
            self._db.conn.execute(
                "INSERT INTO fleet_config (fleet, selector, settings, updated) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (fleet, selector) DO UPDATE SET settings = excluded.settings",
                [fleet, key, json.dumps(merged, sort_keys=True), time.time()],
            )

    def config_entries(self, fleet: str) -> tuple[protocol.ConfigEntry, ...]:
        """The fleet configuration, oldest entry first (as the index carries it)."""
        with self._lock:
            rows = list(
                self._db.table("fleet_config").rows_where(
                    "fleet = ?", [fleet], order_by="updated, selector"
                )
            )
        return tuple(
            protocol.ConfigEntry(
                protocol.Selector.from_dict(json.loads(r["selector"]), "stored config"),
                json.loads(r["settings"]),
            )
            for r in rows
        )

    def variant_rules_snapshot(self, fleet: str) -> dict[str, str]:
        """Every model's variant rules as stored (to notice a change cheaply)."""
        with self._lock:
            rows = list(self._db.table("variant_rules").rows_where("fleet = ?", [fleet]))
        return {r["name"]: f"{r['rules']} {r['default_variant']}" for r in rows}

    def variant_rules(
        self, fleet: str, name: str
    ) -> tuple[tuple[protocol.VariantRule, ...], str | None]:
        with self._lock:
            rows = list(
                self._db.table("variant_rules").rows_where("fleet = ? AND name = ?", [fleet, name])
            )
        if not rows:
            return (), None
        rules = protocol.rules_from_list(json.loads(rows[0]["rules"]), "stored variant rules")
        return rules, rows[0]["default_variant"]

    def releases(self, fleet: str) -> list[ReleaseRecord]:
        with self._lock:
            table = self._db.table("releases")
            rows = list(table.rows_where("fleet = ?", [fleet], order_by="name, version, variant"))
        return [ReleaseRecord.from_row(r) for r in rows]

    def store_manifest(
        self, fleet: str, name: str, version: int, manifest: bytes, *, variant: str = ""
    ) -> None:
        """Replace a release's signed manifest by the same body signed anew (a new release key:
        the release id, which covers the body only, does not change)."""
        with self._lock:
            self._db.execute(
                "UPDATE releases SET manifest = ? "
                "WHERE fleet = ? AND name = ? AND version = ? AND variant = ?",
                [manifest, fleet, name, version, variant],
            )

    # --- deployments ---------------------------------------------------------------------
    def deploy(self, name: str, version: int, fleet: str = "default") -> None:
        """Make ``name@version`` the fleet's target; a running coordinator publishes it."""
        sql = (
            "INSERT INTO deployments (fleet, name, version, deployed_at) "
            "SELECT DISTINCT fleet, name, version, ? FROM releases "
            "WHERE fleet = ? AND name = ? AND version = ? "
            "ON CONFLICT (fleet, name) DO UPDATE SET "
            "version = excluded.version, deployed_at = excluded.deployed_at, spec = NULL"
        )
        with self._lock:
            cursor = self._db.execute(sql, [time.time(), fleet, name, version])
        if cursor.rowcount != 1:
            raise RegistryError(
                f"cannot deploy {name}@{version} to fleet {fleet}: no such release "
                "(add it with `modelcast release` first)"
            )
        log.info("release %s@%d marked deployed in fleet %s", name, version, fleet)

    def deployments(self, fleet: str) -> dict[str, int]:
        with self._lock:
            rows = list(self._db.table("deployments").rows_where("fleet = ?", [fleet]))
        return {r["name"]: int(r["version"]) for r in rows}

    def deployment_entries(self, fleet: str) -> dict[str, Deployment]:
        """Every deployed model with its rollout or rollback spec (None: a plain deployment)."""
        with self._lock:
            rows = list(self._db.table("deployments").rows_where("fleet = ?", [fleet]))
        return {r["name"]: Deployment(int(r["version"]), r.get("spec")) for r in rows}

    def set_deployment(
        self, fleet: str, name: str, deployment: Deployment | None, *, expect: Deployment | None
    ) -> bool:
        """Replace the deployment of ``name`` (None: remove it) if it is still ``expect``;
        False if someone changed it meanwhile (compare-and-set, one statement per case)."""
        if deployment is not None and self.release(fleet, name, deployment.version) is None:
            raise RegistryError(f"cannot deploy {name}@{deployment.version}: no such release")
        with self._lock:
            conn = self._db.conn
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
                if deployment is None:
                    conn.execute(
                        "DELETE FROM deployments WHERE fleet = ? AND name = ?", [fleet, name]
                    )
                else:
                    conn.execute(
                        "INSERT INTO deployments (fleet, name, version, deployed_at, spec) "
                        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (fleet, name) DO UPDATE SET "
                        "version = excluded.version, deployed_at = excluded.deployed_at, "
                        "spec = excluded.spec",
                        [fleet, name, deployment.version, time.time(), deployment.spec],
                    )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return True

    def next_index_seq(self, fleet: str) -> int:
        """The next deployment index sequence number of ``fleet`` (1, 2, ...), persisted."""
        sql = (
            "INSERT INTO index_state (fleet, seq, published_at) VALUES (?, 1, ?) "
            "ON CONFLICT (fleet) DO UPDATE SET "
            "seq = index_state.seq + 1, published_at = excluded.published_at RETURNING seq"
        )
        with self._lock:
            rows = list(self._db.query(sql, [fleet, time.time()]))
        return int(rows[0]["seq"])

    # --- devices -------------------------------------------------------------------------
    def record_state(
        self, fleet: str, state: protocol.DeviceState, *, seen: float | None = None
    ) -> None:
        self.record_devices(fleet, [DeviceUpdate(state, seen)])

    def record_status(
        self, fleet: str, status: protocol.DeviceStatus, *, seen: float | None = None
    ) -> None:
        self.record_devices(fleet, [DeviceUpdate(status, seen)])

    def record_devices(self, fleet: str, updates: Iterable[DeviceUpdate]) -> None:
        """Upsert a batch of device reports; each only touches the columns its message carries.

        Rows are grouped by their column set because an upsert writes every column it names,
        and a state report must not blank out what the status report said (and vice versa).
        """
        now = time.time()
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for update in updates:
            row = _device_row(fleet, update, now)
            groups.setdefault(tuple(sorted(row)), []).append(row)
        with self._lock:
            for rows in groups.values():
                self._db.table("devices").upsert_all(rows, pk=("fleet", "device_id"))

    def record_seen(self, fleet: str, seen: dict[str, float]) -> None:
        """Devices heard from (telemetry), by id: ``last_seen`` only ever moves forward here,
        and a device not yet known gets a row."""
        if not seen:
            return
        now = time.time()
        sql = (
            "INSERT INTO devices (fleet, device_id, last_seen, updated) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (fleet, device_id) DO UPDATE SET "
            "last_seen = max(coalesce(devices.last_seen, excluded.last_seen), excluded.last_seen), "
            "updated = excluded.updated"
        )
        with self._lock, self._db.conn:
            self._db.conn.executemany(
                sql, [(fleet, device, ts, now) for device, ts in sorted(seen.items())]
            )

    def devices(self, fleet: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = list(
                self._db.table("devices").rows_where("fleet = ?", [fleet], order_by="device_id")
            )
        for row in rows:
            row["active"] = json.loads(row["active"]) if row.get("active") else {}
            row["online"] = bool(row["online"]) if row.get("online") is not None else None
            row["profile"] = json.loads(row["profile"]) if row.get("profile") else {}
        return rows


def _device_row(fleet: str, update: DeviceUpdate, now: float) -> dict[str, Any]:
    msg = update.message
    row: dict[str, Any] = {"fleet": fleet, "device_id": msg.device, "updated": now}
    if update.seen is not None:
        row["last_seen"] = update.seen
    if isinstance(msg, protocol.DeviceState):
        row.update(
            state=msg.state.value,
            model=msg.model,
            version=msg.version,
            chunks_held=msg.chunks_held,
            chunks_total=msg.chunks_total,
            reason=msg.reason,
            active=json.dumps(msg.active, sort_keys=True),
            rejections=msg.rejections,
        )
        if msg.boot:
            row["boot"] = msg.boot
    else:
        row["online"] = int(msg.online)
        # The MQTT will carries only the online flag: keep what the device said before.
        if msg.active:
            row["active"] = json.dumps(msg.active, sort_keys=True)
        if msg.boot:
            row["boot"] = msg.boot
        if msg.agent:
            row["agent"] = msg.agent
        if msg.profile:
            row["profile"] = json.dumps(msg.profile, sort_keys=True)
    return row


def _copy_pieces(src: BinaryIO, dst: BinaryIO, chunk_size: int) -> Iterator[bytes]:
    """Yield ``src`` in ``chunk_size`` pieces, writing each to ``dst`` on the way."""
    while True:
        piece = src.read(chunk_size)
        if not piece:
            return
        dst.write(piece)
        yield piece
