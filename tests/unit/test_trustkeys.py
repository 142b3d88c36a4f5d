"""The operator's root-key operations on a key directory (``modelcast keys rotate-root|certify|
revoke``): what they write is what an edge, starting from the original root.pub, accepts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from coordinator.keystore import init_keys, load_release_keys
from coordinator.trustkeys import (
    KeyOperationError,
    certify_release_key,
    describe,
    read_chain,
    read_revocations,
    revoke_release_keys,
    rotate_root,
)
from modelcast.cli import main
from protocol import (
    SignatureError,
    SigningKey,
    TrustedRoot,
    VerifyKey,
    apply_revocations,
    encode_chain,
    follow_chain,
)
from protocol import rotate_root as sign_rotation


def root_pub(keydir: Path) -> VerifyKey:
    return VerifyKey.from_pem((keydir / "root.pub").read_bytes())


def test_rotate_certify_revoke_as_an_edge_sees_them(tmp_path: Path) -> None:
    keydir = tmp_path / "keys"
    init_keys(keydir)
    original = TrustedRoot(root_pub(keydir))
    first_release = load_release_keys(keydir).key.verify_key.key_id

    assert rotate_root(keydir) == 2
    assert rotate_root(keydir) == 3
    chain = read_chain(keydir)
    assert chain.version == 3 and len(chain.rotations) == 2
    followed = follow_chain(original, chain.encode())
    assert followed.root == root_pub(keydir) and followed.root_version == 3
    # the release key was re-certified by the new root
    followed.check_certificate(load_release_keys(keydir).cert, time.time())
    assert sorted(p.name for p in (keydir / "retired").iterdir()) == ["root-v1.key", "root-v2.key"]

    new_id, replaced = certify_release_key(keydir, new=True, validity_days=30)
    assert replaced == first_release and new_id != first_release
    assert (keydir / "retired" / f"release-{first_release}.key").exists()
    with pytest.raises(KeyOperationError, match="current release key"):
        revoke_release_keys(keydir, [new_id])
    with pytest.raises(KeyOperationError, match="not a key id"):
        revoke_release_keys(keydir, ["nope"])
    rev = revoke_release_keys(keydir, [first_release])
    assert rev.seq == 1 and rev.revoked == {first_release}
    data = (keydir / "revocations").read_bytes()
    trust = apply_revocations(followed, data, now=time.time())
    assert trust.revoked == {first_release}
    with pytest.raises(SignatureError):  # signed by the current root, not the original one
        apply_revocations(original, data, now=time.time())

    # a rotation re-signs the revocation list with the new root (seq grows)
    rotate_root(keydir)
    again = read_revocations(keydir)
    assert again is not None and again.seq == 2 and again.revoked == {first_release}
    at_4 = follow_chain(original, read_chain(keydir).encode())
    assert apply_revocations(at_4, (keydir / "revocations").read_bytes(), now=time.time())
    info = describe(keydir)
    assert info["root_version"] == 4 and info["revocations"]["revoked"] == [first_release]
    assert info["release"]["key"] == new_id


def test_an_interrupted_rotation_is_finished_not_forked(tmp_path: Path) -> None:
    keydir = tmp_path / "keys"
    init_keys(keydir)
    original = TrustedRoot(root_pub(keydir))
    rotate_root(keydir)
    # simulate a crash after the chain named root v3 but before root.key was replaced
    pending = SigningKey.generate()

    old = SigningKey.from_pem((keydir / "root.key").read_bytes())
    chain = read_chain(keydir)
    entry = sign_rotation(old, pending, version=3, issued=time.time())
    (keydir / "root.key.next").write_bytes(pending.to_pem())
    (keydir / "root-chain").write_bytes(encode_chain([*chain.rotations, entry]))
    assert rotate_root(keydir) == 3
    assert root_pub(keydir) == pending.verify_key
    assert not (keydir / "root.key.next").exists()
    assert follow_chain(original, read_chain(keydir).encode()).root == pending.verify_key


def test_without_the_root_key_nothing_is_signed(tmp_path: Path) -> None:
    keydir = tmp_path / "keys"
    init_keys(keydir)
    (keydir / "root.key").unlink()
    for op in (rotate_root, lambda k: certify_release_key(k), lambda k: revoke_release_keys(k, [])):
        with pytest.raises(KeyOperationError, match=r"root\.key is missing"):
            op(keydir)
    assert main(["keys", "rotate-root", "--keys", str(keydir)]) == 1


def test_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keydir = tmp_path / "keys"
    assert main(["keys", "init", str(keydir)]) == 0
    old = load_release_keys(keydir).key.verify_key.key_id
    assert main(["keys", "rotate-root", "--keys", str(keydir)]) == 0
    assert main(["keys", "certify", "--new", "--keys", str(keydir)]) == 0
    assert f"modelcast keys revoke {old}" in capsys.readouterr().out
    assert main(["keys", "revoke", old, "--keys", str(keydir)]) == 0
    assert main(["keys", "show", "--keys", str(keydir)]) == 0
    out = capsys.readouterr().out
    assert "version 2" in out and old in out
    with pytest.raises(SystemExit) as exc:
        main(["keys", "revoke", "--help"])
    assert exc.value.code == 0
