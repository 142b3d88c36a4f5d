"""Making a verified release the active one, and going back to the previous one.

``activate`` waits for the maintenance window when the policy sets one (the release is
*deferred*: ``activate_deferred`` activates it once the window opens), then runs the last gate
(``activation.check_model``: the model loads, runs once, and meets its signed acceptance
vectors) and switches ``active.json`` atomically. A release that fails is remembered in the
agent record and never tried again; its files are removed and the active model stays. The
active release fetched again to repair its corrupt file (``integrity``) is reactivated through
the same gate at once, keeps the previous version it had, and says ``model-repaired``.

``rollback`` goes back to the previous version of a model (kept on disk for this, and checked
against its signed sha256) on a signed directive, and holds the version it left back, so that
the index does not bring it again.

Owned by the agent's worker thread; it sets and clears ``Slots.deferred``.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from protocol import Acceptance, Manifest, UpdateState, VerifiedManifest
from protocol.textmodel import KIND_TENSORS
from runtime.files import sha256_file

from .activation import check_model
from .active import ActiveModel, ActiveModels, AgentRecord
from .downloader import Downloader
from .errors import ActivationError
from .integrity import ModelIntegrity
from .policy import Policy
from .reporter import Reporter
from .shared import Slots, Verified
from .storage import release_dir

log = logging.getLogger("modelcast.edge")


class ModelCheck(Protocol):
    """``activation.check_model``: raises ``ActivationError``, returns the acceptance error."""

    def __call__(
        self, path: Path, kind: str | None = None, acceptance: Acceptance | None = None
    ) -> float | None: ...


class Activator:
    def __init__(
        self,
        *,
        device: str,
        data: Path,
        clock: Callable[[], float],
        actives: ActiveModels,
        record: AgentRecord,
        policy: Callable[[], Policy],
        slots: Slots,
        reporter: Reporter,
        downloader: Downloader,
        integrity: ModelIntegrity,
        check: ModelCheck = check_model,
    ) -> None:
        self.device = device
        self._data = data
        self._clock = clock
        self._actives = actives
        self._record = record
        self._policy = policy
        self._slots = slots
        self._reporter = reporter
        self._downloader = downloader
        self._integrity = integrity
        self._check = check

    # --- activation ----------------------------------------------------------------------
    def activate(self, release: VerifiedManifest, path: Path) -> bool:
        """Activate ``release`` (verified, at ``path``) now or in the maintenance window. True
        once it is settled (active, or failed): the targets are to be chosen again. The active
        release itself, its corrupt file repaired, is reactivated at once: not a change the
        window is for."""
        repair = self._is_active(release.manifest)
        if not repair and not self._policy().may_activate(self._clock()):
            self._defer(release, path)
            return False
        deferred = self._slots.deferred
        if deferred is not None and deferred.release.id == release.id:
            self._slots.deferred = None
        m = release.manifest
        self._reporter.set_state(UpdateState.ACTIVATING, reason=None, release=release)
        self._reporter.flush_state()
        try:
            max_error = self._check(path, m.model_kind, m.acceptance)
            active = self._actives.switch(
                m.name, m.version, path, m.sha256.hex(), m.variant, m.model_kind
            )
        except (ActivationError, OSError) as exc:
            self._failed(release, exc, repair=repair)
        else:
            self._integrity.settled(m.name)
            self._activated(release, active, max_error, repair=repair)
        return True

    def _is_active(self, m: Manifest) -> bool:
        active = self._actives.get(m.name)
        return active is not None and active.version == m.version

    def activate_deferred(self, now: float) -> bool:
        """Activate the deferred release if the window is open now (see ``activate``)."""
        deferred = self._slots.deferred
        if deferred is None or not self._policy().may_activate(now):
            return False
        self._slots.deferred = None
        return self.activate(*deferred)

    def _defer(self, release: VerifiedManifest, path: Path) -> None:
        m = release.manifest
        window = self._policy().maintenance_window
        deferred = self._slots.deferred
        if deferred is None or deferred.release.id != release.id:
            log.info(
                "edge %s: %s verified; activating in the maintenance window %s (UTC)",
                self.device,
                m.release,
                window,
            )
            self._reporter.event(
                "activation-deferred",
                model=m.name,
                version=m.version,
                detail=f"maintenance window {window} UTC",
            )
        self._slots.deferred = Verified(release, path)
        self._reporter.set_state(
            UpdateState.VERIFIED,
            reason=f"waiting for the maintenance window {window} UTC",
            release=release,
        )

    def _failed(
        self, release: VerifiedManifest, exc: ActivationError | OSError, *, repair: bool
    ) -> None:
        """Remember the failure (never tried again) and remove the release's files, unless it
        was the repair of the active one: its file matches now, and stays for the next start."""
        m = release.manifest
        reason = exc.reason if isinstance(exc, ActivationError) else "write-failed"
        log.error(
            "edge %s: %s failed activation, keeping %s: %s",
            self.device,
            m.release,
            self._actives.versions() or "nothing",
            exc,
        )
        self._record.failed = (*self._record.failed, release.id.hex())
        self._record.save_or_log(self._data, self.device)
        self._reporter.event(
            "activation-failed", model=m.name, version=m.version, reason=reason, detail=str(exc)
        )
        self._reporter.set_state(UpdateState.FAILED, reason=f"{reason}: {exc}", release=release)
        if not repair:
            self._remove_release(m)

    def _activated(
        self,
        release: VerifiedManifest,
        active: ActiveModel,
        max_error: float | None,
        *,
        repair: bool,
    ) -> None:
        m = release.manifest
        log.info(
            "edge %s: %s is %s (previous %s)",
            self.device,
            m.release,
            "repaired and active again" if repair else "active",
            active.previous_version,
        )
        details = [f"variant {m.variant}"] if m.variant else []
        if max_error is not None:
            details.append(f"acceptance max error {max_error:.6g}")
        self._reporter.event(
            "model-repaired" if repair else "activated",
            model=m.name,
            version=m.version,
            detail=", ".join(details) or None,
        )
        self._reporter.set_state(UpdateState.ACTIVE, reason=None, release=release)
        self._reporter.publish_status()

    def _remove_release(self, m: Manifest) -> None:
        shutil.rmtree(release_dir(self._data, m.name, m.version, m.variant), ignore_errors=True)

    # --- rollback ------------------------------------------------------------------------
    def rollback(self, name: str, version: int) -> None:
        """Go back to ``version`` of ``name``, which must be the previous one, kept on disk."""
        active = self._actives.get(name)
        if active is None or active.version == version:
            return
        if active.previous_version != version or active.previous_path is None:
            self._reporter.event(
                "rollback-failed",
                model=name,
                version=version,
                detail=f"{name}@{version} is not the previous version on this device",
            )
            return
        try:
            sha = sha256_file(active.previous_path).hex()
            if active.previous_sha256 is not None and sha != active.previous_sha256:
                raise ActivationError(
                    f"{active.previous_path} is corrupt: sha256 {sha}, signed "
                    f"{active.previous_sha256}"
                )
            self._check(active.previous_path, active.previous_kind)
            self._actives.switch(
                name,
                version,
                active.previous_path,
                sha,
                active.previous_variant,
                active.previous_kind or KIND_TENSORS,
            )
        except (ActivationError, OSError) as exc:
            self._reporter.event("rollback-failed", model=name, version=version, detail=str(exc))
            return
        self._integrity.settled(name)
        self._rolled_back(name, version, active.version)

    def _rolled_back(self, name: str, version: int, left: int) -> None:
        held_back = self._record.held_back
        held_back[name] = max(left, held_back.get(name, -1))
        self._record.save_or_log(self._data, self.device)
        dl = self._slots.download
        if dl is not None and dl.release.manifest.name == name:
            self._downloader.drop(discard=False)
        log.warning(
            "edge %s: rolled back %s@%d -> %s@%d by signed directive",
            self.device,
            name,
            left,
            name,
            version,
        )
        self._reporter.event(
            "rolled-back", model=name, version=version, detail=f"from {name}@{left}"
        )
        self._reporter.rolled_back(name, version, reason=f"rolled back from {name}@{left}")
        self._reporter.publish_status()
