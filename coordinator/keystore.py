"""The coordinator's key directory: the offline root key, and the online release key it certifies.

Layout of KEYDIR (see docs/PROTOCOL.md, "Keys and signatures")::

    root.key      PEM, 0600  the root signing key; belongs offline once the release key is certified
    root.pub      PEM        what edges trust
    release.key   PEM, 0600  signs manifests and deployment indexes
    release.cert  envelope   the root's certificate for release.key, with an expiry
    root-chain    msgpack    root rotations so far (trustkeys.py), published retained
    revocations   envelope   root-signed revoked release keys (trustkeys.py), published retained
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import protocol
from protocol.envelope import Envelope, KeyCertificate
from runtime.files import write_atomic

from .errors import KeyOperationError

log = logging.getLogger(__name__)

ROOT_KEY = "root.key"
ROOT_PUB = "root.pub"
RELEASE_KEY = "release.key"
RELEASE_CERT = "release.cert"
ROOT_CHAIN = "root-chain"
REVOCATIONS = "revocations"

_DAY = 86400.0


def init_keys(keydir: Path, *, validity_days: float = 365) -> None:
    """Create a fresh root key and a release key certified by it for ``validity_days``.

    Refuses (``FileExistsError``) if ``KEYDIR/root.key`` exists: overwriting a root key would
    strand every edge that trusts the old one.
    """
    if validity_days <= 0:
        raise ValueError(f"validity_days must be positive, got {validity_days}")
    keydir = Path(keydir)
    root_path = keydir / ROOT_KEY
    if root_path.exists():
        raise FileExistsError(
            f"{root_path} already exists: refusing to replace the root key that edges trust "
            "(move the key directory away first if you really mean to start over)"
        )
    keydir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(keydir, 0o700)

    root = protocol.SigningKey.generate()
    release = protocol.SigningKey.generate()
    now = time.time()
    cert = protocol.certify(
        root, release.verify_key, issued=now, expires=now + validity_days * _DAY
    )
    # root.key is claimed first and without clobbering, so a concurrent init cannot interleave
    # its files with ours; if a later write fails, the claim is withdrawn so a retry can succeed.
    try:
        write_atomic(root_path, root.to_pem(), mode=0o600, replace=False)
    except FileExistsError:
        raise FileExistsError(
            f"{root_path} already exists: refusing to replace the root key that edges trust"
        ) from None
    try:
        write_atomic(keydir / ROOT_PUB, root.verify_key.to_pem(), mode=0o644)
        write_atomic(keydir / RELEASE_KEY, release.to_pem(), mode=0o600)
        write_atomic(keydir / RELEASE_CERT, cert, mode=0o644)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            root_path.unlink()
        raise
    log.info(
        "created keys in %s: root %s, release %s (certified for %.0f days)",
        keydir,
        root.verify_key.key_id,
        release.verify_key.key_id,
        validity_days,
    )


@dataclass(frozen=True)
class ReleaseKeys:
    """The online release key and the root's certificate for it (attached to every signature)."""

    key: protocol.SigningKey
    cert: bytes

    @property
    def certificate(self) -> KeyCertificate:
        return KeyCertificate.decode(Envelope.decode(self.cert, len(self.cert)).body)

    @property
    def expires(self) -> float:
        """When the certificate, and so every signature made with this key, stops verifying."""
        return self.certificate.expires


def load_release_keys(keydir: Path) -> ReleaseKeys:
    """Read ``release.key`` and ``release.cert``, and check that the certificate is for that key.

    Raises ``FileNotFoundError`` naming the missing file, or ``ValueError`` for a damaged or
    mismatched file. Does not need (and should not have) ``root.key``.
    """
    keydir = Path(keydir)
    key_path = keydir / RELEASE_KEY
    cert_path = keydir / RELEASE_CERT
    for path in (key_path, cert_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: create the key directory with `modelcast keys init {keydir}`"
            )
    try:
        key = protocol.SigningKey.from_pem(key_path.read_bytes())
    except protocol.ProtocolError as exc:
        raise KeyOperationError(f"{key_path}: {exc}") from None
    cert = cert_path.read_bytes()
    try:
        certified = ReleaseKeys(key, cert).certificate
    except protocol.ProtocolError as exc:
        raise KeyOperationError(f"{cert_path} is not a key certificate: {exc}") from None
    if certified.key != key.verify_key:
        raise KeyOperationError(
            f"{cert_path} certifies key {certified.key.key_id}, but {key_path} is key "
            f"{key.verify_key.key_id}: the files come from different key directories"
        )
    if certified.expires <= time.time():
        log.warning(
            "release key %s: certificate in %s has expired; edges will refuse what it signs",
            key.verify_key.key_id,
            cert_path,
        )
    return ReleaseKeys(key, cert)
