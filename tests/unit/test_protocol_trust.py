"""The signature chain: root key -> key certificate -> release key -> manifest / index.

Every refusal is checked for its exception type *and* its ``reason`` code, since the reason is
what a device reports on its state topic and what the fleet dashboards count.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol import (
    DeploymentIndex,
    ExpiredError,
    KeyCertificate,
    MalformedMessage,
    Manifest,
    OversizedMessage,
    ProtocolError,
    SignatureError,
    SigningKey,
    StaleError,
    Target,
    TrustedRoot,
    UnsupportedVersion,
    certify,
    hash_chunks,
    open_index,
    open_manifest,
    seal,
)
from protocol.codec import pack
from protocol.envelope import Envelope


def _key(seed: int) -> SigningKey:
    return SigningKey(Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32))


ROOT = _key(1)
RELEASE = _key(2)
OTHER_ROOT = _key(3)
OTHER_RELEASE = _key(4)

NOW = 1_750_000_000.0
ISSUED = 1_690_000_000.0
CERT_EXPIRES = 1_900_000_000.0
CREATED = 1_700_000_000.0
EXPIRES = 1_800_000_000.0
PAYLOAD = bytes((i * 13 + 1) % 256 for i in range(10_000))

TRUST = TrustedRoot(ROOT.verify_key)
CERT = certify(ROOT, RELEASE.verify_key, issued=ISSUED, expires=CERT_EXPIRES)


def _manifest(**changes: Any) -> Manifest:
    whole, hashes, size = hash_chunks(PAYLOAD[i : i + 4096] for i in range(0, len(PAYLOAD), 4096))
    m = Manifest("default", "m", 3, size, whole, 4096, hashes, CREATED, EXPIRES)
    return dataclasses.replace(m, **changes)


def _index(**changes: Any) -> DeploymentIndex:
    idx = DeploymentIndex("default", 7, CREATED, EXPIRES, {"m": Target(3, _manifest().release_id)})
    return dataclasses.replace(idx, **changes)


def _envelope(data: bytes) -> dict[str, Any]:
    obj = msgpack.unpackb(data, raw=False)
    assert isinstance(obj, dict)
    return obj


def _reason(exc_info: pytest.ExceptionInfo[ProtocolError]) -> str:
    return exc_info.value.reason


# --- the happy paths ------------------------------------------------------------------------------
def test_valid_manifest_opens() -> None:
    m = _manifest()
    env = m.sign(RELEASE, CERT)
    vm = open_manifest(TRUST, env, now=NOW, fleet="default")
    assert vm.manifest == m
    assert vm.id == m.release_id
    assert vm.signer.key == RELEASE.verify_key
    assert vm.signer.role == "release"
    assert vm.signer.expires == CERT_EXPIRES
    assert vm.envelope == env


def test_open_returns_the_signed_body_and_signer() -> None:
    body = _manifest().encode()
    got, cert = TRUST.open(seal("manifest", body, RELEASE, CERT), "manifest", NOW)
    assert got == body
    assert cert == KeyCertificate(RELEASE.verify_key, "release", ISSUED, CERT_EXPIRES)


def test_manifest_fleet_check_is_optional() -> None:
    env = _manifest(fleet="lab").sign(RELEASE, CERT)
    assert open_manifest(TRUST, env, now=NOW).manifest.fleet == "lab"


def test_accepts_a_bytearray_envelope() -> None:
    env = _manifest().sign(RELEASE, CERT)
    vm = open_manifest(TRUST, bytearray(env), now=NOW)  # type: ignore[arg-type]
    assert vm.id == _manifest().release_id


# --- the chain refuses ---------------------------------------------------------------------------
def test_unknown_release_key_certified_by_another_root() -> None:
    stranger_cert = certify(
        OTHER_ROOT, OTHER_RELEASE.verify_key, issued=ISSUED, expires=CERT_EXPIRES
    )
    env = _manifest().sign(OTHER_RELEASE, stranger_cert)
    with pytest.raises(SignatureError) as exc:
        open_manifest(TRUST, env, now=NOW)
    assert _reason(exc) == "untrusted-key"
    assert "root" in exc.value.detail


def test_envelope_without_a_cert() -> None:
    env = Envelope(
        "manifest", _manifest().encode(), RELEASE.sign("manifest", _manifest().encode()), None
    ).encode()
    with pytest.raises(SignatureError) as exc:
        open_manifest(TRUST, env, now=NOW)
    assert _reason(exc) == "untrusted-key"


def test_signature_stripped() -> None:
    obj = _envelope(_manifest().sign(RELEASE, CERT))
    del obj["sig"]
    with pytest.raises(SignatureError) as exc:
        open_manifest(TRUST, pack(obj), now=NOW)
    assert _reason(exc) == "unsigned"


@pytest.mark.parametrize("sig", [b"", b"\x00" * 63, b"\x00" * 65])
def test_signature_of_the_wrong_length(sig: bytes) -> None:
    obj = _envelope(_manifest().sign(RELEASE, CERT))
    obj["sig"] = sig
    with pytest.raises(SignatureError) as exc:
        open_manifest(TRUST, pack(obj), now=NOW)
    assert _reason(exc) == "bad-signature"


@pytest.mark.parametrize("position", [0, 1, 100, -1])
def test_flipped_byte_in_body(position: int) -> None:
    obj = _envelope(_manifest().sign(RELEASE, CERT))
    body = bytearray(obj["body"])
    body[position] ^= 0x01
    obj["body"] = bytes(body)
    with pytest.raises(SignatureError) as exc:
        open_manifest(TRUST, pack(obj), now=NOW)
    assert _reason(exc) == "bad-signature"


def test_flipped_byte_in_signature() -> None:
    obj = _envelope(_manifest().sign(RELEASE, CERT))
    sig = bytearray(obj["sig"])
    sig[10] ^= 0x80
    obj["sig"] = bytes(sig)
    with pytest.raises(SignatureError) as exc:
        open_manifest(TRUST, pack(obj), now=NOW)
    assert _reason(exc) == "bad-signature"


def test_index_envelope_opened_as_a_manifest() -> None:
    env = _index().sign(RELEASE, CERT)
    with pytest.raises(MalformedMessage) as exc:
        open_manifest(TRUST, env, now=NOW)
    assert _reason(exc) == "malformed"
    assert "index" in exc.value.detail
    with pytest.raises(MalformedMessage):
        TRUST.open(env, "manifest", NOW)


def test_manifest_envelope_opened_as_an_index() -> None:
    env = _manifest().sign(RELEASE, CERT)
    with pytest.raises(MalformedMessage) as exc:
        open_index(TRUST, env, now=NOW, fleet="default")
    assert _reason(exc) == "malformed"


def test_index_signature_reused_as_a_manifest_signature() -> None:
    """Domain separation: a signature made over the body as kind "index" does not verify when
    the same body is presented as a "manifest"."""
    body = _manifest().encode()
    index_sig = RELEASE.sign("index", body)
    env = Envelope("manifest", body, index_sig, CERT).encode()
    with pytest.raises(SignatureError) as exc:
        open_manifest(TRUST, env, now=NOW)
    assert _reason(exc) == "bad-signature"
    # the same signature is fine where it belongs, so it is the kind that made the difference
    assert TRUST.open(Envelope("index", body, index_sig, CERT).encode(), "index", NOW)[0] == body


def test_expired_manifest() -> None:
    env = _manifest().sign(RELEASE, CERT)
    with pytest.raises(ExpiredError) as exc:
        open_manifest(TRUST, env, now=EXPIRES)
    assert _reason(exc) == "expired"
    open_manifest(TRUST, env, now=EXPIRES - 1)  # one second earlier it is fine


def test_expired_certificate() -> None:
    cert = certify(ROOT, RELEASE.verify_key, issued=ISSUED, expires=NOW - 1)
    env = _manifest().sign(RELEASE, cert)
    with pytest.raises(ExpiredError) as exc:
        open_manifest(TRUST, env, now=NOW)
    assert _reason(exc) == "expired"
    assert "certificate" in exc.value.detail


def test_revoked_release_key() -> None:
    env = _manifest().sign(RELEASE, CERT)
    trust = TrustedRoot(ROOT.verify_key, revoked=frozenset({RELEASE.verify_key.key_id}))
    with pytest.raises(SignatureError) as exc:
        open_manifest(trust, env, now=NOW)
    assert _reason(exc) == "revoked-key"
    # revoking some other key changes nothing
    other = TrustedRoot(ROOT.verify_key, revoked=frozenset({OTHER_RELEASE.verify_key.key_id}))
    assert open_manifest(other, env, now=NOW).manifest.version == 3


def test_manifest_for_another_fleet() -> None:
    env = _manifest(fleet="lab").sign(RELEASE, CERT)
    with pytest.raises(MalformedMessage) as exc:
        open_manifest(TRUST, env, now=NOW, fleet="default")
    assert _reason(exc) == "malformed"
    assert "lab" in exc.value.detail


def test_certificate_signed_by_the_release_key_instead_of_root() -> None:
    self_signed = certify(RELEASE, RELEASE.verify_key, issued=ISSUED, expires=CERT_EXPIRES)
    env = _manifest().sign(RELEASE, self_signed)
    with pytest.raises(SignatureError) as exc:
        open_manifest(TRUST, env, now=NOW)
    assert _reason(exc) == "untrusted-key"


def test_certificate_whose_role_is_not_release() -> None:
    cert_body = KeyCertificate(RELEASE.verify_key, "admin", ISSUED, CERT_EXPIRES).encode()
    cert = Envelope("key-cert", cert_body, ROOT.sign("key-cert", cert_body), None).encode()
    env = _manifest().sign(RELEASE, cert)
    with pytest.raises(SignatureError) as exc:
        open_manifest(TRUST, env, now=NOW)
    assert _reason(exc) == "untrusted-key"
    assert "admin" in exc.value.detail


def test_certificate_envelope_of_the_wrong_kind() -> None:
    cert_body = KeyCertificate(RELEASE.verify_key, "release", ISSUED, CERT_EXPIRES).encode()
    cert = Envelope("manifest", cert_body, ROOT.sign("manifest", cert_body), None).encode()
    env = _manifest().sign(RELEASE, cert)
    with pytest.raises(MalformedMessage):
        open_manifest(TRUST, env, now=NOW)


def test_root_signature_is_domain_separated_too() -> None:
    """The root's signature over a cert body, made as kind "manifest", is no certificate."""
    cert_body = KeyCertificate(RELEASE.verify_key, "release", ISSUED, CERT_EXPIRES).encode()
    cert = Envelope("key-cert", cert_body, ROOT.sign("manifest", cert_body), None).encode()
    env = _manifest().sign(RELEASE, cert)
    with pytest.raises(SignatureError) as exc:
        open_manifest(TRUST, env, now=NOW)
    assert _reason(exc) == "untrusted-key"


def test_valid_cert_for_another_key_does_not_vouch_for_the_signer() -> None:
    """The envelope is signed by a key other than the one the (valid) cert names."""
    env = _manifest().sign(OTHER_RELEASE, CERT)
    with pytest.raises(SignatureError) as exc:
        open_manifest(TRUST, env, now=NOW)
    assert _reason(exc) == "bad-signature"


def test_oversized_certificate() -> None:
    obj = _envelope(CERT)
    obj["pad"] = b"\x00" * 5000
    env = _manifest().sign(RELEASE, pack(obj))
    with pytest.raises(OversizedMessage) as exc:
        open_manifest(TRUST, env, now=NOW)
    assert _reason(exc) == "oversized"


def test_oversized_envelope() -> None:
    with pytest.raises(OversizedMessage):
        TRUST.open(b"\x00" * 1_000_001, "manifest", NOW)


def test_envelope_schema_version_2() -> None:
    obj = _envelope(_manifest().sign(RELEASE, CERT))
    obj["v"] = 2
    with pytest.raises(UnsupportedVersion) as exc:
        open_manifest(TRUST, pack(obj), now=NOW)
    assert _reason(exc) == "unsupported-version"


def test_signed_manifest_body_of_schema_version_2() -> None:
    obj = _envelope(_manifest().sign(RELEASE, CERT))
    body = msgpack.unpackb(obj["body"], raw=False)
    body["v"] = 2
    env = seal("manifest", pack(body), RELEASE, CERT)
    with pytest.raises(UnsupportedVersion):
        open_manifest(TRUST, env, now=NOW)


# --- manifest consistency (signed, yet wrong) -----------------------------------------------------
def _signed_body(body: dict[str, object], kind: str = "manifest") -> bytes:
    return seal(kind, pack(body), RELEASE, CERT)


def _manifest_obj() -> dict[str, object]:
    obj = msgpack.unpackb(_manifest().encode(), raw=False)
    assert isinstance(obj, dict)
    return obj


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("chunks", b"\x00" * 64),  # 2 hashes for 3 chunks
        ("chunks", b"\x00" * 128),  # 4 hashes for 3 chunks
        ("chunks", b"\x00" * 95),  # not a multiple of 32
        ("size", 20_000),  # 5 chunks' worth
        ("size", 0),
        ("size", -1),
        ("sha256", b"\x00" * 31),
        ("chunk_size", 4095),
        ("chunk_size", 1_000_000 - 1_023),
        ("block_chunks", 0),
        ("version", -1),
        ("expires", CREATED),  # expires before (at) creation
        ("fleet", "a.b"),
        ("name", "m/1"),
        ("name", ""),
        ("version", True),
        ("size", 10_000.0),
        ("created", "yesterday"),
        ("format", "tflite"),
        ("expires", math.nan),
        ("expires", math.inf),
        ("created", math.nan),
    ],
)
def test_inconsistent_manifest_is_refused(key: str, value: object) -> None:
    obj = _manifest_obj()
    obj[key] = value
    with pytest.raises(MalformedMessage) as exc:
        open_manifest(TRUST, _signed_body(obj), now=NOW)
    assert _reason(exc) == "malformed"


@pytest.mark.parametrize(
    "key",
    ["fleet", "name", "version", "size", "sha256", "chunk_size", "chunks", "created", "expires"],
)
def test_manifest_missing_field_is_refused(key: str) -> None:
    obj = _manifest_obj()
    del obj[key]
    with pytest.raises(MalformedMessage):
        open_manifest(TRUST, _signed_body(obj), now=NOW)


def test_manifest_optional_fields_default() -> None:
    obj = _manifest_obj()
    del obj["format"], obj["block_chunks"]
    m = open_manifest(TRUST, _signed_body(obj), now=NOW).manifest
    assert (m.format, m.block_chunks) == ("onnx", 16)


def test_manifest_larger_than_the_model_cap() -> None:
    size = 9 * 1024**3
    n = -(-size // 998_000)
    m = _manifest(size=size, chunk_size=998_000, chunks=b"\x00" * 32 * n)
    with pytest.raises(OversizedMessage) as exc:
        open_manifest(TRUST, m.sign(RELEASE, CERT), now=NOW)
    assert _reason(exc) == "oversized"
    assert "bytes exceeds" in exc.value.detail


def test_manifest_with_more_chunks_than_the_cap() -> None:
    n = 30_001
    m = _manifest(size=n * 4096, chunks=b"\x00" * 32 * n)
    with pytest.raises(OversizedMessage) as exc:
        open_manifest(TRUST, m.sign(RELEASE, CERT), now=NOW)
    assert _reason(exc) == "oversized"
    assert "chunks exceeds" in exc.value.detail
    ok = _manifest(size=30_000 * 4096, chunks=b"\x00" * 32 * 30_000)
    assert open_manifest(TRUST, ok.sign(RELEASE, CERT), now=NOW).manifest.n_chunks == 30_000


def test_nan_certificate_expiry_is_refused() -> None:
    """A NaN expiry compares false with everything: it would never expire."""
    body = pack(
        {
            "v": 1,
            "role": "release",
            "key": RELEASE.verify_key.raw,
            "issued": ISSUED,
            "expires": math.nan,
        }
    )
    cert = Envelope("key-cert", body, ROOT.sign("key-cert", body), None).encode()
    with pytest.raises(MalformedMessage):
        open_manifest(TRUST, _manifest().sign(RELEASE, cert), now=NOW)


@pytest.mark.parametrize("key", [b"\x00" * 31, b"\x00" * 33, "k" * 32])
def test_certificate_with_a_bad_key(key: object) -> None:
    body = pack({"v": 1, "role": "release", "key": key, "issued": ISSUED, "expires": CERT_EXPIRES})
    cert = Envelope("key-cert", body, ROOT.sign("key-cert", body), None).encode()
    with pytest.raises(MalformedMessage):
        open_manifest(TRUST, _manifest().sign(RELEASE, cert), now=NOW)


# --- deployment index -------------------------------------------------------------------------
def test_index_opens() -> None:
    idx = _index()
    got = open_index(TRUST, idx.sign(RELEASE, CERT), now=NOW, fleet="default", last_seq=6)
    assert got == idx
    assert got.targets["m"] == Target(3, _manifest().release_id)


def test_index_with_the_same_seq_is_accepted() -> None:
    """A retained index is redelivered on every reconnect: same seq is not a replay."""
    env = _index(seq=7).sign(RELEASE, CERT)
    assert open_index(TRUST, env, now=NOW, fleet="default", last_seq=7).seq == 7


def test_index_older_than_last_seq_is_stale() -> None:
    env = _index(seq=6).sign(RELEASE, CERT)
    with pytest.raises(StaleError) as exc:
        open_index(TRUST, env, now=NOW, fleet="default", last_seq=7)
    assert _reason(exc) == "stale"


def test_index_for_another_fleet() -> None:
    env = _index(fleet="lab").sign(RELEASE, CERT)
    with pytest.raises(MalformedMessage) as exc:
        open_index(TRUST, env, now=NOW, fleet="default")
    assert _reason(exc) == "malformed"
    assert open_index(TRUST, env, now=NOW, fleet="lab").fleet == "lab"


def test_expired_index() -> None:
    env = _index().sign(RELEASE, CERT)
    with pytest.raises(ExpiredError) as exc:
        open_index(TRUST, env, now=EXPIRES, fleet="default")
    assert _reason(exc) == "expired"


def test_index_signed_by_an_unknown_key() -> None:
    stranger_cert = certify(
        OTHER_ROOT, OTHER_RELEASE.verify_key, issued=ISSUED, expires=CERT_EXPIRES
    )
    with pytest.raises(SignatureError) as exc:
        open_index(TRUST, _index().sign(OTHER_RELEASE, stranger_cert), now=NOW, fleet="default")
    assert _reason(exc) == "untrusted-key"


@pytest.mark.parametrize("length", [0, 16, 31, 33])
def test_index_target_with_a_bad_manifest_id_length(length: int) -> None:
    env = _index(targets={"m": Target(3, b"\x01" * length)}).sign(RELEASE, CERT)
    with pytest.raises(MalformedMessage) as exc:
        open_index(TRUST, env, now=NOW, fleet="default")
    assert _reason(exc) == "malformed"


@pytest.mark.parametrize(
    "targets",
    [
        {"a.b": {"version": 1, "manifest": b"\x00" * 32}},
        {"m": {"version": -1, "manifest": b"\x00" * 32}},
        {"m": {"version": True, "manifest": b"\x00" * 32}},
        {"m": {"manifest": b"\x00" * 32}},
        {"m": {"version": 1}},
        {"m": [1, b"\x00" * 32]},
        [],
    ],
)
def test_index_with_bad_targets(targets: object) -> None:
    body = {
        "v": 1,
        "fleet": "default",
        "seq": 1,
        "issued": CREATED,
        "expires": EXPIRES,
        "targets": targets,
    }
    with pytest.raises(MalformedMessage):
        open_index(TRUST, _signed_body(body, "index"), now=NOW, fleet="default")


def test_index_with_too_many_targets() -> None:
    targets = {f"m{i}": Target(1, b"\x00" * 32) for i in range(257)}
    with pytest.raises(OversizedMessage):
        open_index(TRUST, _index(targets=targets).sign(RELEASE, CERT), now=NOW, fleet="default")


def test_index_with_negative_seq() -> None:
    with pytest.raises(MalformedMessage):
        open_index(TRUST, _index(seq=-1).sign(RELEASE, CERT), now=NOW, fleet="default")


def test_index_body_is_canonical() -> None:
    """Targets are written sorted, so the same index always signs to the same bytes."""
    t = Target(1, b"\x00" * 32)
    a = _index(targets={"b": t, "a": t}).encode()
    b = _index(targets={"a": t, "b": t}).encode()
    assert a == b
    assert list(msgpack.unpackb(a, raw=False)["targets"]) == ["a", "b"]
