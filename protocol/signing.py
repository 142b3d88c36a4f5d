"""Ed25519 keys and domain-separated signatures (pure computation, bytes in and out)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import MalformedMessage, SignatureError

_DOMAIN = b"modelcast/v1/"


def signed_bytes(kind: str, body: bytes) -> bytes:
    """What is actually signed: a domain tag and the message kind, so that a signature over a
    manifest can never be replayed as, say, a command."""
    return _DOMAIN + kind.encode("ascii") + b"\x00" + body


def key_id(public_key: bytes) -> str:
    """A short, stable name for a public key: hex of the first 8 bytes of its sha256."""
    return hashlib.sha256(public_key).digest()[:8].hex()


@dataclass(frozen=True)
class VerifyKey:
    """An Ed25519 public key (32 raw bytes)."""

    raw: bytes

    def __post_init__(self) -> None:
        if type(self.raw) is not bytes or len(self.raw) != 32:
            raise MalformedMessage("an Ed25519 public key is 32 bytes")

    @property
    def key_id(self) -> str:
        return key_id(self.raw)

    def verify(self, kind: str, body: bytes, signature: bytes) -> None:
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, signed_bytes(kind, body))
        except InvalidSignature:
            raise SignatureError(
                f"{kind} signature does not verify with key {self.key_id}"
            ) from None

    def to_pem(self) -> bytes:
        return Ed25519PublicKey.from_public_bytes(self.raw).public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @classmethod
    def from_pem(cls, data: bytes) -> VerifyKey:
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError as exc:
            raise MalformedMessage(f"not a PEM public key: {exc}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise MalformedMessage("not an Ed25519 public key")
        return cls(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


class SigningKey:
    """An Ed25519 private key. Not a dataclass: it should never be printed or compared."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, data: bytes) -> SigningKey:
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise MalformedMessage(f"not a PEM private key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise MalformedMessage("not an Ed25519 private key")
        return cls(key)

    def to_pem(self) -> bytes:
        return self._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def verify_key(self) -> VerifyKey:
        return VerifyKey(
            self._private.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
        )

    def sign(self, kind: str, body: bytes) -> bytes:
        return self._private.sign(signed_bytes(kind, body))
