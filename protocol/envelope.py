"""Signed envelopes and the root-certified release key (a two-level TUF-style chain).

Wire form of every signed message (msgpack map)::

    {"v": 1, "kind": "<manifest|index|key-cert>", "body": <bin>, "sig": <bin 64>, "cert": <bin>}

``body`` is itself msgpack; it is signed as bytes, so verification never depends on re-encoding.
``cert`` (absent on certificates themselves) is a ``key-cert`` envelope signed by the root key,
whose body names the release key that signed this envelope and its expiry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .codec import SCHEMA_VERSION, check_schema_version, field, pack, unpack_map
from .errors import ExpiredError, MalformedMessage, SignatureError
from .limits import DEFAULT_LIMITS, Limits
from .signing import SigningKey, VerifyKey

KIND_CERT = "key-cert"
ROLE_RELEASE = "release"


@dataclass(frozen=True)
class Envelope:
    kind: str
    body: bytes
    sig: bytes
    cert: bytes | None
    #: a second signature over the same body (a new root key accepting its rotation)
    cosig: bytes | None = None

    def encode(self) -> bytes:
        obj: dict[str, Any] = {
            "v": SCHEMA_VERSION,
            "kind": self.kind,
            "body": self.body,
            "sig": self.sig,
        }
        if self.cert is not None:
            obj["cert"] = self.cert
        if self.cosig is not None:
            obj["cosig"] = self.cosig
        return pack(obj)

    @classmethod
    def decode(cls, data: bytes, max_bytes: int) -> Envelope:
        what = "signed envelope"
        obj = unpack_map(data, max_bytes, what)
        check_schema_version(obj, what)
        kind = field(obj, "kind", str, what)
        body = field(obj, "body", bytes, what)
        if "sig" not in obj:
            raise SignatureError(f"{kind} is unsigned", reason="unsigned")
        sig = field(obj, "sig", bytes, what)
        if len(sig) != 64:
            raise SignatureError(f"{kind} signature must be 64 bytes, got {len(sig)}")
        cert = obj.get("cert")
        if cert is not None and type(cert) is not bytes:
            raise MalformedMessage(f"{what}: field 'cert' must be bytes")
        cosig = obj.get("cosig")
        if cosig is not None and (type(cosig) is not bytes or len(cosig) != 64):
            raise MalformedMessage(f"{what}: field 'cosig' must be 64 bytes")
        return cls(kind, body, sig, cert, cosig)


@dataclass(frozen=True)
class KeyCertificate:
    """The root key's statement: ``key`` may sign releases for ``role`` until ``expires``."""

    key: VerifyKey
    role: str
    issued: float
    expires: float

    def encode(self) -> bytes:
        return pack(
            {
                "v": SCHEMA_VERSION,
                "role": self.role,
                "key": self.key.raw,
                "issued": self.issued,
                "expires": self.expires,
            }
        )

    @classmethod
    def decode(cls, body: bytes, limits: Limits = DEFAULT_LIMITS) -> KeyCertificate:
        what = "key certificate"
        obj = unpack_map(body, limits.max_certificate_bytes, what)
        check_schema_version(obj, what)
        return cls(
            key=VerifyKey(field(obj, "key", bytes, what)),
            role=field(obj, "role", str, what),
            issued=field(obj, "issued", float, what),
            expires=field(obj, "expires", float, what),
        )


def certify(root: SigningKey, key: VerifyKey, *, issued: float, expires: float) -> bytes:
    """Root-sign a release key. Returns the certificate envelope bytes (``KEYDIR/release.cert``)."""
    cert = KeyCertificate(key=key, role=ROLE_RELEASE, issued=issued, expires=expires)
    body = cert.encode()
    return Envelope(KIND_CERT, body, root.sign(KIND_CERT, body), None).encode()


def seal(kind: str, body: bytes, key: SigningKey, cert: bytes) -> bytes:
    """Sign ``body`` as ``kind`` with a release key and attach its certificate."""
    return Envelope(kind, body, key.sign(kind, body), cert).encode()


@dataclass(frozen=True)
class TrustedRoot:
    """What an edge trusts: one root public key, plus release keys it has been told are revoked.

    ``open`` is the only way bytes from the wire become a trusted body.
    """

    root: VerifyKey
    revoked: frozenset[str] = frozenset()
    limits: Limits = DEFAULT_LIMITS
    #: how many root rotations led here (the first root is version 1)
    root_version: int = 1
    #: sequence number of the last revocation list applied
    revocations_seq: int = -1

    def open(self, data: bytes, kind: str, now: float) -> tuple[bytes, KeyCertificate]:
        """Verify a ``kind`` envelope against the chain; return its body and the signer's cert."""
        env = Envelope.decode(data, self.limits.max_envelope_bytes)
        if env.kind != kind:
            raise MalformedMessage(f"expected a {kind}, got a {env.kind!r}")
        if env.cert is None:
            raise SignatureError(f"{kind} carries no key certificate", reason="untrusted-key")
        cert = self.check_certificate(env.cert, now)
        env_key = cert.key
        env_key.verify(kind, env.body, env.sig)
        return env.body, cert

    def open_root_signed(self, data: bytes, kind: str, max_bytes: int, what: str) -> bytes:
        """The body of a ``kind`` envelope signed by the trusted root itself (no certificate)."""
        env = Envelope.decode(data, max_bytes)
        if env.kind != kind:
            raise MalformedMessage(f"expected a {kind}, got a {env.kind!r}")
        try:
            self.root.verify(kind, env.body, env.sig)
        except SignatureError:
            raise SignatureError(
                f"{what} is not signed by the trusted root {self.root.key_id}",
                reason="untrusted-key",
            ) from None
        return env.body

    def check_certificate(self, data: bytes, now: float) -> KeyCertificate:
        body = self.open_root_signed(
            data, KIND_CERT, self.limits.max_certificate_bytes, "release key certificate"
        )
        cert = KeyCertificate.decode(body, self.limits)
        if cert.role != ROLE_RELEASE:
            raise SignatureError(
                f"certificate role {cert.role!r} may not sign releases", reason="untrusted-key"
            )
        if cert.key.key_id in self.revoked:
            raise SignatureError(f"release key {cert.key.key_id} is revoked", reason="revoked-key")
        if now >= cert.expires:
            raise ExpiredError(
                f"release key {cert.key.key_id} certificate expired at {cert.expires}"
            )
        return cert
