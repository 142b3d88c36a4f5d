"""Updating by delta: choose one the release offers, apply it, or fall back to the release.

A release's signed manifest may offer deltas from earlier releases (``protocol.DeltaRef``). When
the edge holds the base of one (its active file or the one before, matched by the base's signed
sha256, and hashed again first: a base that rotted on disk makes a wrong file), the downloader
fetches the delta's chunk stream instead of the release, into ``.delta-HEX/`` in the release's
directory, like any release (resumable, each chunk verified). Then ``apply`` writes the new file
tensor by tensor (``protocol.apply_delta``: a few segments in memory, never the model), checks
its whole sha256 against the release's, and puts it where the full download would have.

Any failure (base missing, corrupt or unknown; a delta that does not apply, or makes the wrong
file) is reported as a ``delta-fallback`` event with its reason, and the release is downloaded
whole; its id is remembered so that it is not tried by delta again in this process.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import queue
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from protocol import DeltaError, DeltaRef, UpdateState, VerifiedManifest, apply_delta
from protocol.delta import read_header
from runtime.delta_kernel import unplane
from runtime.files import fsync_dir, sha256_file, write_atomic

from .active import ActiveModels
from .errors import EdgeError
from .reporter import Reporter
from .storage import FINAL, MANIFEST, release_dir
from .write_behind import WriteBehind

log = logging.getLogger("modelcast.edge")

#: the file a delta is applied into, in the release's directory, before it is verified
APPLYING = "model.applying"
#: stalls in a row without a chunk after which a delta is given up for its release
MAX_STALLS = 3


@dataclass(frozen=True)
class DeltaPlan:
    """A delta chosen for ``target``: its chunk stream, and the verified base it applies to."""

    target: VerifiedManifest
    ref: DeltaRef
    base: Path
    stream: VerifiedManifest
    #: the release's directory (``storage.release_dir``)
    target_dir: Path

    @property
    def directory(self) -> Path:
        """Where the delta itself is downloaded."""
        return self.target_dir / f".delta-{self.ref.base[:8].hex()}"

    @property
    def cost(self) -> str:
        """What the update cost, e.g. ``0.3 MB of 86.6 MB (delta from m@1)``."""
        m, ref = self.target.manifest, self.ref
        base = f"{m.name}@{ref.base_version}"
        return f"{megabytes(ref.size)} of {megabytes(m.size)} (delta from {base})"


class DeltaFailed(EdgeError):
    """A delta given up (and reported) for its release: ``reason`` names why."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class DeltaUpdates:
    def __init__(self, device: str, data: Path, actives: ActiveModels, reporter: Reporter) -> None:
        self._device = device
        self._data = data
        self._actives = actives
        self._reporter = reporter
        #: releases (ids) whose delta failed here: downloaded whole from then on
        self._refused: set[bytes] = set()
        #: the delta downloading: its stalls in a row without a chunk, and chunks held then
        self._stalls: tuple[bytes, int, int] = (b"", 0, 0)

    def plan(
        self, release: VerifiedManifest, *, fetch_whole: int | None = None
    ) -> DeltaPlan | None:
        """The delta to download for ``release``, or None: download it whole. ``fetch_whole``:
        what downloading it whole would fetch, when the caller knows better than its size
        (chunks copied from the device's own disk): a delta no smaller is not chosen."""
        m = release.manifest
        if not m.deltas or release.id in self._refused:
            return None
        held = self._held(m.name)
        for ref in m.deltas:
            base = held.get(ref.base_sha256.hex())
            if base is None:
                continue
            if fetch_whole is not None and fetch_whole <= ref.size:
                log.info(
                    "edge %s: %s: %d bytes to fetch whole, the delta is %d: whole",
                    self._device,
                    m.release,
                    fetch_whole,
                    ref.size,
                )
                return None
            try:
                digest = sha256_file(base)
            except OSError as exc:
                self._refuse(release, DeltaFailed("delta-base-missing", f"{base}: {exc}"))
                return None
            if digest != ref.base_sha256:
                detail = f"{base} no longer matches the sha256 it was verified with"
                self._refuse(release, DeltaFailed("delta-base-corrupt", detail))
                return None
            stream = m.delta_stream(ref)
            verified = VerifiedManifest(stream, stream.release_id, release.signer, release.envelope)
            target_dir = release_dir(self._data, m.name, m.version, m.variant)
            return DeltaPlan(release, ref, base, verified, target_dir)
        if held:
            offered = ", ".join(f"{m.name}@{d.base_version}" for d in m.deltas)
            detail = f"deltas from {offered}, none of which is held here"
            self._refuse(release, DeltaFailed("delta-base-unknown", detail))
        return None

    def stalled(self, plan: DeltaPlan, held: int) -> bool:
        """The delta's download stalled (again): True, refused, after ``MAX_STALLS`` in a row
        without a new chunk (a coordinator that no longer has the delta's blob, say)."""
        sid, stalls, before = self._stalls
        stalls = stalls + 1 if (sid, before) == (plan.stream.id, held) else 1
        self._stalls = (plan.stream.id, stalls, held)
        if stalls <= MAX_STALLS:
            return False
        detail = f"{stalls - 1} repairs in a row brought no chunk of the delta"
        self._refuse(plan.target, DeltaFailed("delta-stalled", detail))
        return True

    def _held(self, name: str) -> dict[str, Path]:
        """The verified files of ``name`` on this device, by their signed sha256 (hex)."""
        active = self._actives.get(name)
        if active is None:
            return {}
        held = {active.sha256: active.path}
        if active.previous_path is not None and active.previous_sha256:
            held.setdefault(active.previous_sha256, active.previous_path)
        return held

    def apply(self, plan: DeltaPlan, delta: Path) -> Path:
        """Apply the downloaded ``delta`` to the plan's base: the release's verified file, in
        place of a full download. ``DeltaFailed`` (reported, refused) on any failure."""
        try:
            return self._apply(plan, delta)
        except DeltaError as exc:
            self._refuse(plan.target, DeltaFailed(exc.reason, exc.detail))
            raise DeltaFailed(exc.reason, exc.detail) from None
        except OSError as exc:
            failed = DeltaFailed("delta-apply-failed", str(exc))
            self._refuse(plan.target, failed)
            raise failed from None
        finally:
            (plan.target_dir / APPLYING).unlink(missing_ok=True)
            shutil.rmtree(plan.directory, ignore_errors=True)

    def _apply(self, plan: DeltaPlan, delta: Path) -> Path:
        m = plan.target.manifest
        out_path = plan.target_dir / APPLYING
        apply_file(delta, plan.base, out_path, m.sha256)
        write_atomic(plan.target_dir / MANIFEST, plan.target.envelope)
        final = plan.target_dir / FINAL
        os.replace(out_path, final)
        fsync_dir(plan.target_dir)
        log.info("edge %s: %s applied: %s", self._device, m.release, plan.cost)
        self._reporter.event("delta-applied", model=m.name, version=m.version, detail=plan.cost)
        self._reporter.set_state(UpdateState.VERIFIED, reason=None, release=plan.target)
        self._reporter.event("verified", model=m.name, version=m.version, detail=plan.cost)
        return final

    def _refuse(self, release: VerifiedManifest, failed: DeltaFailed) -> None:
        m = release.manifest
        self._refused.add(release.id)
        log.warning(
            "edge %s: %s by delta: %s; downloading it whole", self._device, m.release, failed
        )
        self._reporter.event(
            "delta-fallback",
            reason=failed.reason,
            detail=failed.detail,
            model=m.name,
            version=m.version,
        )


def apply_file(delta: Path, base: Path, out: Path, sha256: bytes) -> None:
    """Write the file ``delta`` makes from ``base`` to ``out`` (synced): ``DeltaError`` unless
    it is exactly the file whose sha256 is ``sha256``.

    A header that promises another file than the release is refused before anything is
    written. The output is hashed on a thread of its own (``PieceHasher``) while the next
    segment is decompressed and written, and synced behind the writes (``WriteBehind``, as a
    download's part file is), so an apply costs about what a download's writes do.
    """
    with delta.open("rb") as d:
        promised = read_header(d.read).target_sha256
    if promised != sha256:
        raise DeltaError(
            "the delta makes another file than the release (its sha256 differs)",
            reason="delta-result-mismatch",
        )
    hasher = PieceHasher(f"hash-{out.parent.name}")
    try:
        with delta.open("rb") as d, base.open("rb") as b, out.open("wb") as o:
            fd = b.fileno()
            size = os.fstat(fd).st_size
            read_base = functools.partial(_pread, fd)
            pieces = apply_delta(
                d.read, read_base, base_size=size, kernel=unplane, check_sha256=False
            )
            behind = WriteBehind(o.fileno(), f"flush-{out.parent.name}")
            try:
                for piece in pieces:
                    o.write(piece)
                    hasher.add(piece)
                    behind.wrote(len(piece))
                o.flush()
                os.fdatasync(o.fileno())
            finally:
                behind.close()
    finally:
        digest = hasher.close()
    if digest != sha256:
        raise DeltaError(
            "the file the delta made does not match the release's sha256",
            reason="delta-result-mismatch",
        )


class PieceHasher:
    """sha256 of the pieces handed to ``add``, in order, on a thread of its own (at most
    ``QUEUED`` pieces wait: memory stays a few segments)."""

    QUEUED = 8

    def __init__(self, name: str) -> None:
        self._pieces: queue.Queue[bytes | memoryview | None] = queue.Queue(self.QUEUED)
        self._digest = hashlib.sha256()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def add(self, piece: bytes | memoryview) -> None:
        self._pieces.put(piece)

    def close(self) -> bytes:
        """The digest of everything added (waits for the thread)."""
        self._pieces.put(None)
        self._thread.join()
        return self._digest.digest()

    def _run(self) -> None:
        while (piece := self._pieces.get()) is not None:
            self._digest.update(piece)


def _pread(fd: int, offset: int, length: int) -> bytes:
    return os.pread(fd, length, offset)


def megabytes(size: int) -> str:
    """``0.3 MB``, or ``5.0 KB`` under 100 KB: what an update cost, said in its events."""
    if size < 100 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / (1 << 20):.1f} MB"
