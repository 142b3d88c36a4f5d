"""X.509 for the broker's TLS: make a CA, issue a server certificate for a set of host names, and
read, compare and check PEM keys and certificates. Which file goes where in a state directory is
``tlsca``'s business; this module only reads the files it is given.

Keys are EC P-256 and signatures ECDSA-SHA256, which every OpenSSL Mosquitto links against and
every MQTT client library accepts.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .errors import BrokerAdminError

CA_DAYS = 3650
SERVER_DAYS = 397

Key = ec.EllipticCurvePrivateKey


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def key_pem(key: Key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_key(path: Path) -> Key:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise BrokerAdminError(f"{path}: expected an EC private key (unencrypted PEM)")
    return key


def load_any_key(path: Path) -> object:
    """A PEM private key of any type (the operator's server key may be RSA)."""
    try:
        return serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise BrokerAdminError(f"{path}: not an unencrypted PEM private key ({exc})") from None


def load_certs(path: Path) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(path.read_bytes())
    except ValueError as exc:
        raise BrokerAdminError(f"{path}: not a PEM certificate ({exc})") from None
    if not certs:
        raise BrokerAdminError(f"{path}: no certificate in it")
    return certs


def same_public_key(cert: x509.Certificate, key: object) -> bool:
    pem = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.PEM
    public = getattr(key, "public_key", None)
    if public is None:
        return False
    return bool(cert.public_key().public_bytes(enc, pem) == public().public_bytes(enc, pem))


def is_ca(cert: x509.Certificate) -> bool:
    """The certificate may sign others (basic constraints CA:TRUE; without that extension
    ``x509.ExtensionNotFound``)."""
    return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)


def issued_by(cert: x509.Certificate, issuers: Iterable[x509.Certificate]) -> bool:
    for issuer in issuers:
        try:
            cert.verify_directly_issued_by(issuer)
            return True
        except (InvalidSignature, ValueError, TypeError):
            continue
    return False


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def hosts_of(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} | set(
        san.get_values_for_type(x509.DNSName)
    )


def norm_host(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        if not host or any(c.isspace() or c == "/" for c in host):
            raise BrokerAdminError(f"--host {host!r} is not a host name or IP address") from None
        return host.lower()


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    """A KeyUsage extension with only the named uses."""
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def make_ca(name: str | None = None) -> tuple[Key, x509.Certificate]:
    """A self-signed CA that may sign end-entity certificates only (path length 0)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "modelcast"),
            x509.NameAttribute(
                NameOID.COMMON_NAME, name or f"modelcast broker CA {secrets.token_hex(4)}"
            ),
        ]
    )
    now = utc_now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue_server_cert(
    ca_key: Key, ca_cert: x509.Certificate, hosts: Iterable[str], *, days: int = SERVER_DAYS
) -> tuple[Key, x509.Certificate]:
    """A TLS server certificate for ``hosts`` (IP addresses and DNS names), signed by the CA."""
    names = sorted({norm_host(h) for h in hosts})
    if not names:
        raise BrokerAdminError("a server certificate needs at least one host")
    key = ec.generate_private_key(ec.SECP256R1())
    now = utc_now()
    not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "modelcast"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "modelcast broker"),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)
