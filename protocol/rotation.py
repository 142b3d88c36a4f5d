"""Changing what an edge trusts, TUF-style: root rotation and release-key revocation.

* A **root rotation** names root key N+1 and is signed by root N (the envelope's ``sig``) and by
  root N+1 itself (``cosig``), so neither a stolen old key nor a made-up new one can rotate alone.
  Rotations form a chain; an edge that missed several follows them in order from its own.
* A **revocation list** is signed by the current root and lists release-key ids that must no longer
  be trusted; its ``seq`` only grows, so an old list cannot be replayed to un-revoke a key.

Both are pure functions from a ``TrustedRoot`` and bytes to a new ``TrustedRoot``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .codec import SCHEMA_VERSION, check_schema_version, field, non_negative, pack, unpack_map
from .envelope import Envelope, TrustedRoot
from .errors import ExpiredError, MalformedMessage, OversizedMessage, SignatureError, StaleError
from .limits import DEFAULT_LIMITS, Limits
from .signing import SigningKey, VerifyKey

KIND_ROOT = "root"
KIND_REVOCATIONS = "revocations"


@dataclass(frozen=True)
class RootRotation:
    version: int
    key: VerifyKey
    issued: float

    def encode(self) -> bytes:
        return pack(
            {
                "v": SCHEMA_VERSION,
                "version": self.version,
                "key": self.key.raw,
                "issued": self.issued,
            }
        )

    @classmethod
    def decode(cls, body: bytes, limits: Limits = DEFAULT_LIMITS) -> RootRotation:
        what = "root rotation"
        obj = unpack_map(body, limits.max_root_rotation_bytes, what)
        check_schema_version(obj, what)
        return cls(
            version=non_negative(field(obj, "version", int, what), "version", what),
            key=VerifyKey(field(obj, "key", bytes, what)),
            issued=field(obj, "issued", float, what),
        )


def rotate_root(old: SigningKey, new: SigningKey, *, version: int, issued: float) -> bytes:
    """Root ``version`` (the new one), signed by the old root and by itself."""
    body = RootRotation(version, new.verify_key, issued).encode()
    return Envelope(
        KIND_ROOT, body, old.sign(KIND_ROOT, body), None, new.sign(KIND_ROOT, body)
    ).encode()


def apply_rotation(trust: TrustedRoot, data: bytes) -> TrustedRoot:
    """One step of the chain: the rotation from ``trust``'s root to the next."""
    env = Envelope.decode(data, trust.limits.max_root_rotation_bytes)
    if env.kind != KIND_ROOT:
        raise MalformedMessage(f"expected a {KIND_ROOT}, got a {env.kind!r}")
    if env.cosig is None:
        raise SignatureError("root rotation is not signed by the new root", reason="unsigned")
    rotation = RootRotation.decode(env.body, trust.limits)
    if rotation.version <= trust.root_version:
        raise StaleError(f"root version {rotation.version} is not newer than {trust.root_version}")
    if rotation.version != trust.root_version + 1:
        raise MalformedMessage(
            f"root version {rotation.version} does not follow {trust.root_version}"
        )
    trust.root.verify(KIND_ROOT, env.body, env.sig)
    rotation.key.verify(KIND_ROOT, env.body, env.cosig)
    # release keys revoked under the old root stay revoked
    return replace(trust, root=rotation.key, root_version=rotation.version)


def encode_chain(rotations: list[bytes]) -> bytes:
    return pack({"v": SCHEMA_VERSION, "chain": rotations})


def follow_chain(trust: TrustedRoot, data: bytes) -> TrustedRoot:
    """Apply every rotation of a chain that is newer than ``trust``'s root, in order."""
    what = "root chain"
    limits = trust.limits
    obj = unpack_map(data, limits.max_root_chain_bytes, what)
    check_schema_version(obj, what)
    chain = field(obj, "chain", list, what)
    if len(chain) > limits.max_root_chain:
        raise OversizedMessage(f"{what}: {len(chain)} rotations exceeds {limits.max_root_chain}")
    parsed: list[tuple[bytes, Envelope, RootRotation]] = []
    for entry in chain:
        if type(entry) is not bytes:
            raise MalformedMessage(f"{what}: entries must be bytes")
        env = Envelope.decode(entry, limits.max_root_rotation_bytes)
        parsed.append((entry, env, RootRotation.decode(env.body, limits)))
    # An edge installed with a root that came by rotation (a later root.pub) starts at its place
    # in the chain: the entry naming it carries its own signature (``cosig``), so nobody else can
    # claim a version for it.
    for _entry, env, rotation in parsed:
        if rotation.key == trust.root and rotation.version > trust.root_version:
            if env.cosig is None:
                raise SignatureError(
                    "root rotation is not signed by the new root", reason="unsigned"
                )
            trust.root.verify(KIND_ROOT, env.body, env.cosig)
            trust = replace(trust, root_version=rotation.version)
    for entry, _env, rotation in parsed:
        if rotation.version > trust.root_version:
            trust = apply_rotation(trust, entry)
    return trust


@dataclass(frozen=True)
class Revocations:
    seq: int
    revoked: frozenset[str]
    issued: float
    expires: float

    def encode(self) -> bytes:
        return pack(
            {
                "v": SCHEMA_VERSION,
                "seq": self.seq,
                "revoked": sorted(self.revoked),
                "issued": self.issued,
                "expires": self.expires,
            }
        )

    def sign(self, root: SigningKey) -> bytes:
        body = self.encode()
        return Envelope(KIND_REVOCATIONS, body, root.sign(KIND_REVOCATIONS, body), None).encode()

    @classmethod
    def decode(cls, body: bytes, limits: Limits = DEFAULT_LIMITS) -> Revocations:
        what = "revocation list"
        obj = unpack_map(body, limits.max_revocations_bytes, what)
        check_schema_version(obj, what)
        revoked = field(obj, "revoked", list, what)
        if len(revoked) > limits.max_revoked_keys:
            raise OversizedMessage(f"{what}: more than {limits.max_revoked_keys} keys")
        if any(type(k) is not str or len(k) != 16 for k in revoked):
            raise MalformedMessage(f"{what}: key ids are 16 hex characters")
        return cls(
            seq=non_negative(field(obj, "seq", int, what), "seq", what),
            revoked=frozenset(revoked),
            issued=field(obj, "issued", float, what),
            expires=field(obj, "expires", float, what),
        )


def apply_revocations(trust: TrustedRoot, data: bytes, *, now: float) -> TrustedRoot:
    """A root-signed revocation list replaces the edge's; older or replayed lists are refused."""
    limits = trust.limits
    body = trust.open_root_signed(
        data, KIND_REVOCATIONS, limits.max_revocations_bytes, "revocation list"
    )
    rev = Revocations.decode(body, limits)
    if now >= rev.expires:
        raise ExpiredError(f"revocation list seq {rev.seq} expired at {rev.expires}")
    if rev.seq < trust.revocations_seq:
        raise StaleError(f"revocation list seq {rev.seq} is older than {trust.revocations_seq}")
    return replace(trust, revoked=rev.revoked, revocations_seq=rev.seq)
