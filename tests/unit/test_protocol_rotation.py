"""Root rotation, release-key revocation and signed commands, on bytes."""

from __future__ import annotations

import time

import pytest

from protocol import (
    Command,
    ExpiredError,
    MalformedMessage,
    Manifest,
    Revocations,
    SignatureError,
    SigningKey,
    StaleError,
    TrustedRoot,
    apply_revocations,
    apply_rotation,
    certify,
    encode_chain,
    follow_chain,
    hash_chunks,
    open_command,
    open_manifest,
    rotate_root,
)
from protocol.envelope import Envelope
from protocol.rotation import RootRotation

NOW = time.time()


def keys(n: int) -> list[SigningKey]:
    return [SigningKey.generate() for _ in range(n)]


def signed_manifest(release: SigningKey, root: SigningKey) -> bytes:
    cert = certify(root, release.verify_key, issued=NOW, expires=NOW + 3600)
    whole, hashes, size = hash_chunks([b"x" * 5000])
    m = Manifest("default", "m", 1, size, whole, 8192, hashes, NOW, NOW + 3600)
    return m.sign(release, cert)


# --- root rotation --------------------------------------------------------------------------
def test_a_rotated_root_is_followed_and_the_old_root_no_longer_trusted() -> None:
    r1, r2, release = keys(3)
    trust = TrustedRoot(r1.verify_key)
    new = apply_rotation(trust, rotate_root(r1, r2, version=2, issued=NOW))
    assert new.root == r2.verify_key and new.root_version == 2
    open_manifest(new, signed_manifest(release, r2), now=NOW)
    with pytest.raises(SignatureError):
        open_manifest(new, signed_manifest(release, r1), now=NOW)


def test_a_chain_is_followed_from_where_the_edge_is() -> None:
    r1, r2, r3, r4 = keys(4)
    chain = [
        rotate_root(r1, r2, version=2, issued=NOW),
        rotate_root(r2, r3, version=3, issued=NOW),
        rotate_root(r3, r4, version=4, issued=NOW),
    ]
    assert follow_chain(TrustedRoot(r1.verify_key), encode_chain(chain)).root == r4.verify_key
    at_3 = TrustedRoot(r3.verify_key, root_version=3)
    assert follow_chain(at_3, encode_chain(chain)).root == r4.verify_key


def test_an_edge_installed_with_a_later_root_starts_at_its_place_in_the_chain() -> None:
    r1, r2, r3, r4 = keys(4)
    chain = [
        rotate_root(r1, r2, version=2, issued=NOW),
        rotate_root(r2, r3, version=3, issued=NOW),
        rotate_root(r3, r4, version=4, issued=NOW),
    ]
    # installed with root.pub of r3 (version 1 as far as it knows): no rotation before it needed
    new = follow_chain(TrustedRoot(r3.verify_key), encode_chain(chain))
    assert new.root == r4.verify_key and new.root_version == 4
    at_r4 = follow_chain(TrustedRoot(r4.verify_key), encode_chain(chain))
    assert at_r4.root == r4.verify_key and at_r4.root_version == 4
    # a made-up entry naming the edge's root at another version is not signed by that root
    forged = rotate_root(r1, SigningKey.generate(), version=50, issued=NOW)
    body = Envelope.decode(forged, 4096)
    fake = Envelope(
        body.kind, RootRotation(50, r3.verify_key, NOW).encode(), body.sig, None, body.cosig
    )
    with pytest.raises(SignatureError):
        follow_chain(TrustedRoot(r3.verify_key), encode_chain([fake.encode()]))


def test_rotation_not_signed_by_the_current_root_is_refused() -> None:
    r1, stranger, r2 = keys(3)
    with pytest.raises(SignatureError):
        apply_rotation(TrustedRoot(r1.verify_key), rotate_root(stranger, r2, version=2, issued=NOW))


def test_rotation_without_the_new_roots_signature_is_refused() -> None:
    from protocol.envelope import Envelope
    from protocol.rotation import KIND_ROOT, RootRotation

    r1, r2 = keys(2)
    body = RootRotation(2, r2.verify_key, NOW).encode()
    unsigned_by_new = Envelope(KIND_ROOT, body, r1.sign(KIND_ROOT, body), None).encode()
    with pytest.raises(SignatureError) as err:
        apply_rotation(TrustedRoot(r1.verify_key), unsigned_by_new)
    assert err.value.reason == "unsigned"
    forged = Envelope(KIND_ROOT, body, r1.sign(KIND_ROOT, body), None, r1.sign(KIND_ROOT, body))
    with pytest.raises(SignatureError):
        apply_rotation(TrustedRoot(r1.verify_key), forged.encode())


def test_replayed_or_skipping_rotations_are_refused() -> None:
    r1, r2, r3 = keys(3)
    trust = TrustedRoot(r2.verify_key, root_version=2)
    with pytest.raises(StaleError):
        apply_rotation(trust, rotate_root(r1, r2, version=2, issued=NOW))
    with pytest.raises(MalformedMessage):
        apply_rotation(trust, rotate_root(r2, r3, version=4, issued=NOW))


# --- revocation -----------------------------------------------------------------------------
def test_a_revoked_release_key_is_refused() -> None:
    root, release = keys(2)
    trust = TrustedRoot(root.verify_key)
    envelope = signed_manifest(release, root)
    open_manifest(trust, envelope, now=NOW)
    rev = Revocations(1, frozenset({release.verify_key.key_id}), NOW, NOW + 3600).sign(root)
    revoked = apply_revocations(trust, rev, now=NOW)
    with pytest.raises(SignatureError) as err:
        open_manifest(revoked, envelope, now=NOW)
    assert err.value.reason == "revoked-key"


def test_revocations_must_be_root_signed_fresh_and_newer() -> None:
    root, release, stranger = keys(3)
    trust = TrustedRoot(root.verify_key, revocations_seq=5)
    ids = frozenset({release.verify_key.key_id})
    with pytest.raises(SignatureError):
        apply_revocations(trust, Revocations(6, ids, NOW, NOW + 60).sign(stranger), now=NOW)
    with pytest.raises(StaleError):
        apply_revocations(trust, Revocations(4, frozenset(), NOW, NOW + 60).sign(root), now=NOW)
    with pytest.raises(ExpiredError):
        apply_revocations(trust, Revocations(6, ids, NOW - 60, NOW - 1).sign(root), now=NOW)


# --- commands -------------------------------------------------------------------------------
def command_keys() -> tuple[TrustedRoot, SigningKey, bytes]:
    root, release = keys(2)
    cert = certify(root, release.verify_key, issued=NOW, expires=NOW + 3600)
    return TrustedRoot(root.verify_key), release, cert


def rollback(seq: int, device: str = "d1", expires: float = NOW + 60) -> Command:
    return Command("default", device, seq, NOW, expires, "rollback", {"model": "m", "version": 2})


def test_a_signed_command_opens_once_and_is_refused_when_replayed() -> None:
    trust, release, cert = command_keys()
    data = rollback(7).sign(release, cert)
    cmd = open_command(trust, data, now=NOW, fleet="default", device="d1", last_seq=6)
    assert cmd.action == "rollback" and cmd.args == {"model": "m", "version": 2}
    with pytest.raises(StaleError):
        open_command(trust, data, now=NOW, fleet="default", device="d1", last_seq=7)


def test_commands_for_others_expired_or_forged_are_refused() -> None:
    trust, release, cert = command_keys()
    with pytest.raises(MalformedMessage):
        open_command(
            trust,
            rollback(1, "d2").sign(release, cert),
            now=NOW,
            fleet="default",
            device="d1",
            last_seq=0,
        )
    fleet_wide = rollback(2, "*").sign(release, cert)
    assert open_command(trust, fleet_wide, now=NOW, fleet="default", device="d1", last_seq=0)
    with pytest.raises(ExpiredError):
        open_command(
            trust,
            rollback(3, expires=NOW - 1).sign(release, cert),
            now=NOW,
            fleet="default",
            device="d1",
            last_seq=0,
        )
    _other_root, other_release, other_cert = command_keys()
    with pytest.raises(SignatureError):
        open_command(
            trust,
            rollback(4).sign(other_release, other_cert),
            now=NOW,
            fleet="default",
            device="d1",
            last_seq=0,
        )


@pytest.mark.parametrize(
    "args", [{}, {"model": "m"}, {"model": "m", "version": "2"}, {"model": "a.b", "version": 1}]
)
def test_a_malformed_rollback_is_refused(args: dict[str, object]) -> None:
    trust, release, cert = command_keys()
    data = Command("default", "d1", 1, NOW, NOW + 60, "rollback", args).sign(release, cert)
    with pytest.raises(MalformedMessage):
        open_command(trust, data, now=NOW, fleet="default", device="d1", last_seq=0)
