"""Golden vectors: the exact bytes of the v1 wire format.

Every value below was computed once from deterministic inputs (Ed25519 signatures are
deterministic) and pasted as a literal. If one of these tests fails, the wire format changed:
devices already in the field would refuse (or, worse, misread) what the coordinator now sends.
Change the literals only together with a protocol version bump and docs/PROTOCOL.md.
"""

from __future__ import annotations

import hashlib
import struct

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import protocol
from protocol import (
    HEADER_SIZE,
    ChunkFrame,
    ChunkRequest,
    Manifest,
    SigningKey,
    TrustedRoot,
    certify,
    hash_chunks,
    open_manifest,
)

# --- deterministic inputs ---------------------------------------------------------------------
ROOT = SigningKey(Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
RELEASE = SigningKey(Ed25519PrivateKey.from_private_bytes(bytes(range(32, 64))))
CERT_ISSUED = 1_690_000_000.0
CERT_EXPIRES = 1_900_000_000.0
CHUNK_SIZE = 4096
PAYLOAD = bytes((i * 31 + 7) % 251 for i in range(10_000))
CREATED = 1_700_000_000.0
EXPIRES = 1_800_000_000.0

# --- golden values (computed once, pasted) ----------------------------------------------------
ROOT_PUB_HEX = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
RELEASE_PUB_HEX = "29acbae141bccaf0b22e1a94d34d0bc7361e526d0bfe12c89794bc9322966dd7"
FILE_SHA256_HEX = "1e0d7c1f75b60785a19d26b1335ce40ba353da1154e09905170a9e411da3e3e0"
CHUNK_HASHES_HEX = (
    "5ab775379b00e0ca28b6ee8c0b71b2e54307875de77c156356740d946a181be6"
    "98fe0650dd5ac5b8be7bb2cd838891886147eef48d679bc986ea1d7a0e3ea33b"
    "588423ae2272364c343eb9e110296ae18f07abbaa5d0094755b484076eea538b"
)
BODY_LEN = 262
BODY_SHA256_HEX = "c6c1c813f61724c831f3515064219fa32a0aaa6871322470557e42eb4080d2c5"
RELEASE_ID_HEX = "b8f8b5c28943a20bf8309a63d598afd69d17cd8e7c7e1568f82903b168c142e9"
CERT_LEN = 183
CERT_SHA256_HEX = "c70a5386eebf6247756b5bc9ab9f835ae623402508c98044b3a48272dbacf472"
ENVELOPE_LEN = 548
ENVELOPE_SHA256_HEX = "8d3564e6d61661821f0f3831760de6907905218a3de005bd6979573c27ce0f61"
# ChunkFrame.encode(1, release_id, b"abc"): the 32-byte header, written out from the documented
# layout (magic "MCCH", format 1, flags 0, reserved 0, index 1, length 3, release id[:16]).
FRAME_HEADER_HEX = (
    "4d434348"  # magic "MCCH"
    "01"  # frame format 1
    "00"  # flags
    "0000"  # reserved
    "00000001"  # chunk index 1
    "00000003"  # payload length 3
    "b8f8b5c28943a20bf8309a63d598afd6"  # first 16 bytes of the release id
)
CHUNK_REQUEST_HEX = (
    "89"  # map of 9
    "a176"
    "01"  # "v": 1
    "a6646576696365"
    "a56465762d31"  # "device": "dev-1"
    "a46e616d65"
    "a16d"  # "name": "m"
    "a776657273696f6e"
    "03"  # "version": 3
    "a772656c65617365"
    "c410"
    "b8f8b5c28943a20bf8309a63d598afd6"  # "release": bin8(16)
    "a672616e676573"
    "92"
    "920002"
    "920501"  # "ranges": [[0, 2], [5, 1]]
    "aa73756273637269626564"
    "91"
    "00"  # "subscribed": [0]
    "a56672657368"
    "c3"  # "fresh": true
    "a6726570616972"
    "c2"  # "repair": false
)


def _cert() -> bytes:
    return certify(ROOT, RELEASE.verify_key, issued=CERT_ISSUED, expires=CERT_EXPIRES)


def _manifest() -> Manifest:
    pieces = (PAYLOAD[i : i + CHUNK_SIZE] for i in range(0, len(PAYLOAD), CHUNK_SIZE))
    whole, hashes, size = hash_chunks(pieces)
    return Manifest("default", "m", 3, size, whole, CHUNK_SIZE, hashes, CREATED, EXPIRES)


def _release_id() -> bytes:
    return _manifest().release_id


def test_keys_are_the_deterministic_ones() -> None:
    assert ROOT.verify_key.raw.hex() == ROOT_PUB_HEX
    assert RELEASE.verify_key.raw.hex() == RELEASE_PUB_HEX


def test_chunk_hashes_and_file_digest() -> None:
    m = _manifest()
    assert m.size == 10_000
    assert m.n_chunks == 3
    assert [m.chunk_length(i) for i in range(3)] == [4096, 4096, 10_000 - 2 * 4096]
    assert m.sha256.hex() == FILE_SHA256_HEX
    assert m.chunks.hex() == CHUNK_HASHES_HEX
    assert hashlib.sha256(PAYLOAD).hexdigest() == FILE_SHA256_HEX
    for i in range(3):
        piece = PAYLOAD[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE]
        assert m.chunk_hash(i) == hashlib.sha256(piece).digest()


def test_manifest_body_release_id() -> None:
    body = _manifest().encode()
    assert len(body) == BODY_LEN
    assert hashlib.sha256(body).hexdigest() == BODY_SHA256_HEX
    assert _manifest().release_id.hex() == RELEASE_ID_HEX


def test_release_id_ignores_signing_times_but_not_content() -> None:
    from dataclasses import replace

    m = _manifest()
    assert replace(m, expires=EXPIRES + 86400, created=CREATED + 5).release_id == m.release_id
    assert replace(m, version=4).release_id != m.release_id
    assert replace(m, fleet="other").release_id != m.release_id


def test_manifest_body_has_the_documented_fields_in_order() -> None:
    obj = msgpack.unpackb(_manifest().encode(), raw=False)
    assert list(obj) == [
        "v",
        "fleet",
        "name",
        "version",
        "format",
        "size",
        "sha256",
        "chunk_size",
        "block_chunks",
        "chunks",
        "created",
        "expires",
    ]
    assert obj == {
        "v": 1,
        "fleet": "default",
        "name": "m",
        "version": 3,
        "format": "onnx",
        "size": 10_000,
        "sha256": bytes.fromhex(FILE_SHA256_HEX),
        "chunk_size": 4096,
        "block_chunks": 16,
        "chunks": bytes.fromhex(CHUNK_HASHES_HEX),
        "created": CREATED,
        "expires": EXPIRES,
    }
    # floats go out as float64 (0xcb), never narrowed to float32 or an int
    body = _manifest().encode()
    assert b"\xa7created\xcb" + struct.pack(">d", CREATED) in body
    assert b"\xa7expires\xcb" + struct.pack(">d", EXPIRES) in body


def test_certificate_bytes() -> None:
    cert = _cert()
    assert len(cert) == CERT_LEN
    assert hashlib.sha256(cert).hexdigest() == CERT_SHA256_HEX
    env = msgpack.unpackb(cert, raw=False)
    assert list(env) == ["v", "kind", "body", "sig"]  # a certificate carries no cert of its own
    assert env["v"] == 1 and env["kind"] == "key-cert" and len(env["sig"]) == 64
    body = msgpack.unpackb(env["body"], raw=False)
    assert body == {
        "v": 1,
        "role": "release",
        "key": bytes.fromhex(RELEASE_PUB_HEX),
        "issued": CERT_ISSUED,
        "expires": CERT_EXPIRES,
    }


def test_signed_manifest_envelope_bytes() -> None:
    env = _manifest().sign(RELEASE, _cert())
    assert len(env) == ENVELOPE_LEN
    assert hashlib.sha256(env).hexdigest() == ENVELOPE_SHA256_HEX
    obj = msgpack.unpackb(env, raw=False)
    assert list(obj) == ["v", "kind", "body", "sig", "cert"]
    assert obj["v"] == 1 and obj["kind"] == "manifest"
    assert obj["body"] == _manifest().encode()
    assert obj["cert"] == _cert()


def test_signature_covers_the_documented_domain_tag() -> None:
    """sig == Ed25519(b"modelcast/v1/" + kind + b"\\0" + body), checked with raw cryptography."""
    env = msgpack.unpackb(_manifest().sign(RELEASE, _cert()), raw=False)
    pub = Ed25519PrivateKey.from_private_bytes(bytes(range(32, 64))).public_key()
    pub.verify(env["sig"], b"modelcast/v1/manifest\x00" + env["body"])  # raises if not
    cert = msgpack.unpackb(env["cert"], raw=False)
    root_pub = Ed25519PrivateKey.from_private_bytes(bytes(range(32))).public_key()
    root_pub.verify(cert["sig"], b"modelcast/v1/key-cert\x00" + cert["body"])


def test_golden_envelope_opens_and_yields_the_golden_release_id() -> None:
    env = _manifest().sign(RELEASE, _cert())
    trust = TrustedRoot(ROOT.verify_key)
    vm = open_manifest(trust, env, now=1_750_000_000.0, fleet="default")
    assert vm.id.hex() == RELEASE_ID_HEX
    assert vm.manifest == _manifest()
    assert vm.signer.key.raw.hex() == RELEASE_PUB_HEX
    assert vm.envelope == env


def test_chunk_frame_header_bytes() -> None:
    frame = ChunkFrame.encode(1, _release_id(), b"abc")
    assert HEADER_SIZE == 32
    assert len(frame) == 35
    assert frame[:32] == bytes.fromhex(FRAME_HEADER_HEX)
    assert frame[32:] == b"abc"
    # cross-check: the literal is exactly the documented layout
    assert bytes.fromhex(FRAME_HEADER_HEX) == (
        b"MCCH"
        + bytes([1, 0])
        + b"\x00\x00"
        + (1).to_bytes(4, "big")
        + (3).to_bytes(4, "big")
        + bytes.fromhex(RELEASE_ID_HEX)[:16]
    )


def test_chunk_frame_header_field_by_field() -> None:
    rid = _release_id()
    frame = ChunkFrame.encode(0x01020304, rid, b"x" * 5000)
    assert frame[0:4] == b"MCCH"
    assert struct.unpack_from(">B", frame, 4) == (1,)  # format
    assert struct.unpack_from(">B", frame, 5) == (0,)  # flags
    assert struct.unpack_from(">H", frame, 6) == (0,)  # reserved
    assert struct.unpack_from(">I", frame, 8) == (0x01020304,)  # index, big-endian
    assert frame[8:12] == b"\x01\x02\x03\x04"
    assert struct.unpack_from(">I", frame, 12) == (5000,)  # payload length
    assert frame[16:32] == rid[:16]
    assert frame[32:] == b"x" * 5000
    decoded = ChunkFrame.decode(frame)
    assert decoded.index == 0x01020304
    assert decoded.release_id == rid[:16]
    assert bytes(decoded.payload) == b"x" * 5000


def test_chunk_request_bytes() -> None:
    rid = _release_id()
    req = ChunkRequest(
        device="dev-1",
        name="m",
        version=3,
        release_id=rid[:16],
        ranges=((0, 2), (5, 1)),
        subscribed=(0,),
        fresh=True,
        repair=False,
    )
    data = req.encode()
    assert data.hex() == CHUNK_REQUEST_HEX
    assert msgpack.unpackb(data, raw=False) == {
        "v": 1,
        "device": "dev-1",
        "name": "m",
        "version": 3,
        "release": rid[:16],
        "ranges": [[0, 2], [5, 1]],
        "subscribed": [0],
        "fresh": True,
        "repair": False,
    }
    assert ChunkRequest.decode(bytes.fromhex(CHUNK_REQUEST_HEX)) == req


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HEADER_SIZE", 32),
        ("DEFAULT_CHUNK_SIZE", 512 * 1024),
        ("DEFAULT_WINDOW", 16),
    ],
)
def test_documented_constants(name: str, value: int) -> None:
    assert getattr(protocol, name) == value


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("max_chunk_size", 1_000_000 - 1_024),
        ("min_chunk_size", 4096),
        ("max_envelope_bytes", 1_000_000),
        ("max_message_bytes", 64 * 1024),
    ],
)
def test_documented_limits(name: str, value: int) -> None:
    assert getattr(protocol.DEFAULT_LIMITS, name) == value
