"""The operator's root-key operations on a key directory: rotate the root, certify a release key,
revoke release keys. Each needs ``KEYDIR/root.key``; run them where the root key is kept (offline),
then copy the files they name to the coordinator's KEYDIR (or run them on that KEYDIR directly).

What they write, besides the keys of ``keystore.py``::

    root-chain    every root rotation so far, in order (encode_chain); published retained on
                  releases/root, so an edge installed with any earlier root.pub follows it
    revocations   the root-signed list of revoked release keys; retained on releases/revocations
    retired/      the keys these commands replaced (mode 0600): destroy them once done

A running coordinator notices changed files within a poll interval: it publishes the chain and the
revocation list, and when the release key or its certificate changed it re-signs the deployed
manifests (same release ids) and a new index with it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import protocol
from protocol.codec import unpack_map
from protocol.envelope import Envelope, KeyCertificate
from protocol.rotation import KIND_REVOCATIONS, RootRotation
from runtime.files import write_atomic

from .errors import KeyOperationError
from .keystore import (
    RELEASE_CERT,
    RELEASE_KEY,
    REVOCATIONS,
    ROOT_CHAIN,
    ROOT_KEY,
    ROOT_PUB,
    load_release_keys,
)

#: the caps edges apply to what the key directory publishes (the defaults: the edges')
LIMITS = protocol.DEFAULT_LIMITS
log = logging.getLogger(__name__)

RETIRED = "retired"
_NEXT_ROOT = "root.key.next"  # a rotation in progress: the new root, before it replaces root.key
_DAY = 86400.0
DEFAULT_CERT_DAYS = 365.0
DEFAULT_REVOCATION_DAYS = 365.0


@dataclass(frozen=True)
class RootChain:
    """The rotations in ``KEYDIR/root-chain`` (raw envelopes) and the version they lead to."""

    rotations: tuple[bytes, ...]

    @property
    def version(self) -> int:
        if not self.rotations:
            return 1
        return _rotation(self.rotations[-1]).version

    def encode(self) -> bytes:
        return protocol.encode_chain(list(self.rotations))


def _rotation(entry: bytes) -> RootRotation:
    return RootRotation.decode(Envelope.decode(entry, LIMITS.max_root_rotation_bytes).body)


def read_chain(keydir: Path) -> RootChain:
    path = Path(keydir) / ROOT_CHAIN
    if not path.exists():
        return RootChain(())
    data = path.read_bytes()
    try:
        obj = unpack_map(data, LIMITS.max_root_chain_bytes, "root chain")
        entries = obj.get("chain")
        if not isinstance(entries, list) or not all(type(e) is bytes for e in entries):
            raise protocol.MalformedMessage("root chain: 'chain' must be a list of bytes")
        for entry in entries:
            _rotation(entry)
    except protocol.ProtocolError as exc:
        raise KeyOperationError(f"{path} is damaged: {exc}") from None
    return RootChain(tuple(entries))


def read_revocations(keydir: Path) -> protocol.Revocations | None:
    path = Path(keydir) / REVOCATIONS
    if not path.exists():
        return None
    try:
        env = Envelope.decode(path.read_bytes(), LIMITS.max_revocations_bytes)
        if env.kind != KIND_REVOCATIONS:
            raise protocol.MalformedMessage(f"expected a {KIND_REVOCATIONS}, got {env.kind!r}")
        return protocol.Revocations.decode(env.body)
    except protocol.ProtocolError as exc:
        raise KeyOperationError(f"{path} is damaged: {exc}") from None


def _root_key(keydir: Path) -> protocol.SigningKey:
    path = keydir / ROOT_KEY
    if not path.is_file():
        raise KeyOperationError(
            f"{path} is missing: run this where the root key is kept (offline), on a copy of "
            "the key directory, then copy the files it writes back to the coordinator"
        )
    try:
        return protocol.SigningKey.from_pem(path.read_bytes())
    except protocol.ProtocolError as exc:
        raise KeyOperationError(f"{path}: {exc}") from None


def _retire(keydir: Path, name: str, data: bytes) -> Path:
    path = keydir / RETIRED / name
    path.parent.mkdir(mode=0o700, exist_ok=True)
    write_atomic(path, data, mode=0o600)
    return path


def _certify(keydir: Path, root: protocol.SigningKey, key: protocol.VerifyKey, days: float) -> None:
    if days <= 0:
        raise KeyOperationError(f"validity must be positive, got {days} days")
    now = time.time()
    cert = protocol.certify(root, key, issued=now, expires=now + days * _DAY)
    write_atomic(keydir / RELEASE_CERT, cert, mode=0o644)


def rotate_root(keydir: Path, *, validity_days: float = DEFAULT_CERT_DAYS) -> int:
    """Make root N+1, signed by root N and by itself, append it to ``root-chain``, and re-sign
    what the old root signed (the release key certificate, the revocation list). Returns N+1.

    Crash-safe: the new key is written (``root.key.next``) before the chain names it, and a run
    that finds a rotation the chain already names but ``root.key`` does not yet hold finishes it.
    """
    keydir = Path(keydir)
    old = _root_key(keydir)
    chain = read_chain(keydir)
    pending = keydir / _NEXT_ROOT
    if pending.exists():
        new = protocol.SigningKey.from_pem(pending.read_bytes())
        if chain.rotations and _rotation(chain.rotations[-1]).key == new.verify_key:
            log.warning("finishing the root rotation to version %d left half-done", chain.version)
            return _install_root(keydir, old, new, chain.version, validity_days)
        pending.unlink()  # the chain never named it: nothing trusts it yet
    if len(chain.rotations) >= LIMITS.max_root_chain:
        raise KeyOperationError(
            f"the root chain holds {LIMITS.max_root_chain} rotations, the most edges take"
        )
    version = chain.version + 1
    new = protocol.SigningKey.generate()
    entry = protocol.rotate_root(old, new, version=version, issued=time.time())
    # a rotation that would not verify must never be published
    trust = protocol.TrustedRoot(old.verify_key, root_version=chain.version)
    protocol.apply_rotation(trust, entry)
    write_atomic(pending, new.to_pem(), mode=0o600, replace=False)
    write_atomic(keydir / ROOT_CHAIN, RootChain((*chain.rotations, entry)).encode())
    return _install_root(keydir, old, new, version, validity_days)


def _install_root(
    keydir: Path,
    old: protocol.SigningKey,
    new: protocol.SigningKey,
    version: int,
    validity_days: float,
) -> int:
    retired = keydir / RETIRED / f"root-v{version - 1}.key"
    if old.verify_key != new.verify_key:  # (a crash after root.key was replaced: done already)
        _retire(keydir, retired.name, old.to_pem())
    write_atomic(keydir / ROOT_PUB, new.verify_key.to_pem(), mode=0o644)
    write_atomic(keydir / ROOT_KEY, new.to_pem(), mode=0o600)
    (keydir / _NEXT_ROOT).unlink(missing_ok=True)
    with contextlib.suppress(FileNotFoundError):
        release = load_release_keys(keydir)
        _certify(keydir, new, release.key.verify_key, validity_days)
    revocations = read_revocations(keydir)
    if revocations is not None:
        _sign_revocations(keydir, new, revocations.revoked, DEFAULT_REVOCATION_DAYS)
    log.info(
        "root rotated to version %d: key %s (was %s, now in %s: destroy it); edges follow the "
        "chain in %s",
        version,
        new.verify_key.key_id,
        old.verify_key.key_id,
        retired,
        keydir / ROOT_CHAIN,
    )
    return version


def certify_release_key(
    keydir: Path, *, new: bool = False, validity_days: float = DEFAULT_CERT_DAYS
) -> tuple[str, str | None]:
    """(Re-)certify the release key with the current root for ``validity_days``; with ``new``,
    make a new release key first (the old one goes to ``retired/``). Returns the certified key id
    and the replaced one (revoke it with ``revoke_release_keys`` once the coordinator uses the new
    key)."""
    keydir = Path(keydir)
    root = _root_key(keydir)
    replaced = None
    key_path = keydir / RELEASE_KEY
    if new:
        if key_path.exists():
            old = protocol.SigningKey.from_pem(key_path.read_bytes())
            replaced = old.verify_key.key_id
            _retire(keydir, f"release-{replaced}.key", old.to_pem())
        key = protocol.SigningKey.generate()
        # the certificate first: a coordinator reading the pair in between sees a mismatch and
        # keeps its key until the next poll, never a certificate for a key it does not have
        _certify(keydir, root, key.verify_key, validity_days)
        write_atomic(key_path, key.to_pem(), mode=0o600)
    else:
        key = load_release_keys(keydir).key
        _certify(keydir, root, key.verify_key, validity_days)
    log.info(
        "release key %s certified by root %s for %.0f days%s",
        key.verify_key.key_id,
        root.verify_key.key_id,
        validity_days,
        f" (replaces {replaced})" if replaced else "",
    )
    return key.verify_key.key_id, replaced


def _sign_revocations(
    keydir: Path, root: protocol.SigningKey, revoked: frozenset[str], days: float
) -> protocol.Revocations:
    if days <= 0:
        raise KeyOperationError(f"validity must be positive, got {days} days")
    previous = read_revocations(keydir)
    now = time.time()
    rev = protocol.Revocations(
        seq=(previous.seq + 1) if previous else 1,
        revoked=revoked,
        issued=now,
        expires=now + days * _DAY,
    )
    write_atomic(keydir / REVOCATIONS, rev.sign(root), mode=0o644)
    return rev


def revoke_release_keys(
    keydir: Path, key_ids: list[str], *, validity_days: float = DEFAULT_REVOCATION_DAYS
) -> protocol.Revocations:
    """Add ``key_ids`` to the root-signed revocation list (none: re-sign it with a new expiry)."""
    keydir = Path(keydir)
    root = _root_key(keydir)
    for key_id in key_ids:
        if len(key_id) != 16 or any(c not in "0123456789abcdef" for c in key_id):
            raise KeyOperationError(f"{key_id!r} is not a key id (16 lowercase hex characters)")
    with contextlib.suppress(FileNotFoundError):
        current = load_release_keys(keydir).key.verify_key.key_id
        if current in key_ids:
            raise KeyOperationError(
                f"{current} is the current release key: the coordinator signs with it. Make a "
                "new one first (modelcast keys certify --new), then revoke this one"
            )
    previous = read_revocations(keydir)
    revoked = (previous.revoked if previous else frozenset()) | frozenset(key_ids)
    if len(revoked) > LIMITS.max_revoked_keys:
        raise KeyOperationError(f"more than {LIMITS.max_revoked_keys} revoked keys")
    rev = _sign_revocations(keydir, root, revoked, validity_days)
    log.info(
        "revocation list seq %d signed by root %s: %s revoked, valid for %.0f days",
        rev.seq,
        root.verify_key.key_id,
        ", ".join(sorted(rev.revoked)) or "nothing",
        validity_days,
    )
    return rev


def describe(keydir: Path) -> dict[str, Any]:
    """What the key directory holds, for ``modelcast keys show`` (no secrets)."""
    keydir = Path(keydir)
    out: dict[str, Any] = {"keydir": str(keydir)}
    root_pub = keydir / ROOT_PUB
    if root_pub.exists():
        out["root"] = protocol.VerifyKey.from_pem(root_pub.read_bytes()).key_id
    out["root_version"] = read_chain(keydir).version
    out["root_key_here"] = (keydir / ROOT_KEY).exists()
    cert_path = keydir / RELEASE_CERT
    if cert_path.exists():
        data = cert_path.read_bytes()
        cert = KeyCertificate.decode(Envelope.decode(data, len(data)).body)
        out["release"] = {"key": cert.key.key_id, "expires": cert.expires}
    rev = read_revocations(keydir)
    if rev is not None:
        out["revocations"] = {
            "seq": rev.seq,
            "revoked": sorted(rev.revoked),
            "expires": rev.expires,
        }
    return out
