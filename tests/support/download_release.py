"""One signed in-memory release for the download state machine's unit tests
(``tests/unit/test_protocol_download*.py``): 40 chunks of 4 KiB (the last one short) in blocks
of 4, and helpers that feed its chunks to a ``DownloadSession``."""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol import (
    ChunkFrame,
    DownloadSession,
    Manifest,
    SigningKey,
    TrustedRoot,
    VerifiedManifest,
    certify,
    hash_chunks,
    open_manifest,
)

ROOT = SigningKey(Ed25519PrivateKey.from_private_bytes(b"\x11" * 32))
RELEASE = SigningKey(Ed25519PrivateKey.from_private_bytes(b"\x22" * 32))
CERT = certify(ROOT, RELEASE.verify_key, issued=0.0, expires=4e9)
TRUST = TrustedRoot(ROOT.verify_key)
NOW = 1_750_000_000.0

CHUNK = 4096
N_CHUNKS = 40
BLOCK = 4  # chunks per block: 10 blocks
SIZE = CHUNK * (N_CHUNKS - 1) + 1000  # the last chunk is short
DATA = hashlib.shake_256(b"modelcast").digest(SIZE)
PIECES = [DATA[i : i + CHUNK] for i in range(0, SIZE, CHUNK)]
WINDOW = 3


def make_release(pieces: list[bytes] = PIECES, block_chunks: int = BLOCK) -> VerifiedManifest:
    whole, hashes, size = hash_chunks(pieces)
    m = Manifest("default", "m", 5, size, whole, CHUNK, hashes, 1e9, 2e9, block_chunks=block_chunks)
    return open_manifest(TRUST, m.sign(RELEASE, CERT), now=NOW, fleet="default")


REL = make_release()


def chunk_frame(i: int, release: VerifiedManifest = REL, pieces: list[bytes] = PIECES) -> bytes:
    return ChunkFrame.encode(i, release.id, pieces[i])


def take_chunk(s: DownloadSession, i: int, now: float = 0.0, buf: bytearray | None = None) -> None:
    """accept + (write) + commit one chunk, asserting it is new."""
    vc = s.accept(chunk_frame(i))
    assert vc is not None
    assert vc.index == i and vc.offset == i * CHUNK and bytes(vc.data) == PIECES[i]
    if buf is not None:
        buf[vc.offset : vc.offset + len(vc.data)] = vc.data
    s.commit(vc, now)
