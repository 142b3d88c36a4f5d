"""What the coordinator publishes retained about trust itself: the root chain and the revocation
list of its key directory, and the release key it signs with.

``modelcast keys rotate-root|certify|revoke`` write files in KEYDIR (``trustkeys.py``); this class
notices changed files on each poll (by size, mtime and inode, like the registry poll notices a
``modelcast deploy``), checks them against ``KEYDIR/root.pub``, and hands the service what to
publish, before any manifest or index (an edge must follow a rotation before it can trust what the
new root certified). No MQTT here.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import protocol
from protocol.envelope import Envelope
from protocol.rotation import KIND_REVOCATIONS

from .deployer import Publication
from .errors import KeyOperationError
from .keystore import (
    RELEASE_CERT,
    RELEASE_KEY,
    REVOCATIONS,
    ROOT_CHAIN,
    ROOT_PUB,
    ReleaseKeys,
    load_release_keys,
)
from .trustkeys import LIMITS, read_chain

log = logging.getLogger(__name__)

_WATCHED = (ROOT_CHAIN, REVOCATIONS, ROOT_PUB, RELEASE_KEY, RELEASE_CERT)
#: Warn this long before the published revocation list expires: an edge refuses an expired list,
#: so one installed after that would not learn which keys are revoked.
REVOCATIONS_WARNING_S = 30 * 86400.0


@dataclass(frozen=True)
class TrustPlan:
    publications: tuple[Publication, ...]
    #: the release key files changed and load: sign with these from now on
    keys: ReleaseKeys | None
    stamp: tuple[tuple[int, int, int] | None, ...]


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class TrustPublisher:
    def __init__(self, keydir: Path, fleet: str, keys: ReleaseKeys) -> None:
        self._keydir = Path(keydir)
        self._fleet = fleet
        self._topics = protocol.Topics(fleet)
        self._keys = keys
        self._stamp: tuple[tuple[int, int, int] | None, ...] | None = None
        self._publications: tuple[Publication, ...] = ()
        self._complained: set[str] = set()
        self._revocations_expire: float | None = None
        self._expiry_warned = False

    @property
    def keys(self) -> ReleaseKeys:
        return self._keys

    def plan(self, *, republish: bool) -> TrustPlan | None:
        """What to publish (and the new release keys) when KEYDIR changed; the same bytes again
        on ``republish``; None when there is nothing to do."""
        self._warn_if_revocations_expire(time.time())
        stamp = tuple(_stat(self._keydir / name) for name in _WATCHED)
        if stamp == self._stamp:
            if republish and self._publications:
                return TrustPlan(self._publications, None, stamp)
            return None
        root = self._root()
        keys = None
        if self._stamp is not None and stamp[3:] != self._stamp[3:]:
            loaded = self._reload_keys()
            if loaded is None:
                return None  # a pair half-written, or not certified by root.pub: next poll
            if loaded != self._keys:
                keys = loaded
        publications = (*self._chain(root), *self._revocations(root))
        if publications == self._publications and keys is None and not republish:
            self._stamp = stamp
            return None
        return TrustPlan(publications, keys, stamp)

    def commit(self, plan: TrustPlan) -> None:
        """The plan's messages were handed to the broker connection."""
        if plan.keys is not None:
            old = self._keys.key.verify_key.key_id
            self._keys = plan.keys
            log.warning(
                "fleet %s: now signing with release key %s (was %s); re-signing what is deployed",
                self._fleet,
                plan.keys.key.verify_key.key_id,
                old,
            )
        for pub in plan.publications:
            if pub not in self._publications:
                log.warning("fleet %s: published %s", self._fleet, pub.what)
        self._publications = plan.publications
        self._stamp = plan.stamp

    # --- internals -----------------------------------------------------------------------
    def _warn_if_revocations_expire(self, now: float) -> None:
        expires = self._revocations_expire
        if expires is None or self._expiry_warned or now < expires - REVOCATIONS_WARNING_S:
            return
        self._expiry_warned = True
        log.warning(
            "fleet %s: the revocation list in %s expires in %.1f days; edges refuse it from then "
            "on: re-sign it with 'modelcast keys revoke --keys %s'",
            self._fleet,
            self._keydir / REVOCATIONS,
            max(0.0, expires - now) / 86400,
            self._keydir,
        )

    def _complain(self, message: str) -> None:
        if message not in self._complained:
            self._complained.add(message)
            log.error("fleet %s: %s", self._fleet, message)

    def _root(self) -> protocol.VerifyKey | None:
        try:
            return protocol.VerifyKey.from_pem((self._keydir / ROOT_PUB).read_bytes())
        except (OSError, protocol.ProtocolError) as exc:
            self._complain(f"cannot read {self._keydir / ROOT_PUB}: {exc}")
            return None

    def _reload_keys(self) -> ReleaseKeys | None:
        try:
            keys = load_release_keys(self._keydir)
        except (OSError, ValueError) as exc:
            log.info("release key files changed but do not load yet (%s); retrying", exc)
            return None
        if keys.cert == self._keys.cert and keys.key.verify_key == self._keys.key.verify_key:
            return self._keys  # touched, not changed
        return keys if self._certified_by_root(keys) else None

    def _certified_by_root(self, keys: ReleaseKeys) -> bool:
        root = self._root()
        if root is None:
            return False
        try:
            protocol.TrustedRoot(root).check_certificate(keys.cert, now=0.0)
        except protocol.ProtocolError as exc:
            self._complain(
                f"{self._keydir / RELEASE_CERT} is not certified by the root in "
                f"{self._keydir / ROOT_PUB} ({exc}); still signing with release key "
                f"{self._keys.key.verify_key.key_id}"
            )
            return False
        return True

    def _chain(self, root: protocol.VerifyKey | None) -> tuple[Publication, ...]:
        try:
            chain = read_chain(self._keydir)
        except KeyOperationError as exc:
            self._complain(str(exc))
            return ()
        if not chain.rotations:
            return ()
        last = protocol.RootRotation.decode(
            Envelope.decode(chain.rotations[-1], LIMITS.max_root_rotation_bytes).body
        )
        if root is not None and last.key != root:
            self._complain(
                f"{self._keydir / ROOT_CHAIN} ends at root {last.key.key_id}, but "
                f"{self._keydir / ROOT_PUB} is {root.key_id}: not publishing the chain"
            )
            return ()
        return (
            Publication(
                self._topics.root_chain(), chain.encode(), f"root chain to version {chain.version}"
            ),
        )

    def _revocations(self, root: protocol.VerifyKey | None) -> tuple[Publication, ...]:
        path = self._keydir / REVOCATIONS
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return ()
        if root is None:
            return ()
        try:
            body = protocol.TrustedRoot(root).open_root_signed(
                data, KIND_REVOCATIONS, LIMITS.max_revocations_bytes, "revocation list"
            )
            rev = protocol.Revocations.decode(body)
        except protocol.ProtocolError as exc:
            self._complain(f"{path}: {exc}: not publishing it")
            return ()
        if rev.expires != self._revocations_expire:
            self._revocations_expire, self._expiry_warned = rev.expires, False
        return (
            Publication(
                self._topics.revocations(),
                data,
                f"revocation list seq {rev.seq} ({', '.join(sorted(rev.revoked)) or 'empty'})",
            ),
        )
