"""The coordinator's view of its key directory: what changed, what to publish, which key to sign
with, and what it refuses to publish."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from coordinator.keystore import init_keys, load_release_keys
from coordinator.trust_publisher import TrustPublisher
from coordinator.trustkeys import certify_release_key, revoke_release_keys, rotate_root
from protocol import Topics

T = Topics("f")


def touch_later(path: Path) -> None:
    """Make a rewrite visible to the stat check even within one mtime tick."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def test_changes_are_published_once_and_again_on_republish(tmp_path: Path) -> None:
    keydir = tmp_path / "keys"
    init_keys(keydir)
    pub = TrustPublisher(keydir, "f", load_release_keys(keydir))
    first = pub.plan(republish=True)
    assert first is not None and first.publications == () and first.keys is None
    pub.commit(first)
    assert pub.plan(republish=False) is None

    old_id = load_release_keys(keydir).key.verify_key.key_id
    rotate_root(keydir)
    plan = pub.plan(republish=False)
    assert plan is not None
    assert [p.topic for p in plan.publications] == [T.root_chain()]
    assert plan.keys is not None  # re-certified by the new root
    pub.commit(plan)
    assert pub.keys.cert == (keydir / "release.cert").read_bytes()

    certify_release_key(keydir, new=True)
    revoke_release_keys(keydir, [old_id])
    plan = pub.plan(republish=False)
    assert plan is not None and plan.keys is not None
    assert plan.keys.key.verify_key.key_id != old_id
    assert [p.topic for p in plan.publications] == [T.root_chain(), T.revocations()]
    assert plan.publications[1].payload == (keydir / "revocations").read_bytes()
    pub.commit(plan)
    assert pub.plan(republish=False) is None
    again = pub.plan(republish=True)
    assert again is not None and again.publications == plan.publications and again.keys is None


def test_inconsistent_files_are_not_published(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keydir = tmp_path / "keys"
    init_keys(keydir)
    pub = TrustPublisher(keydir, "f", load_release_keys(keydir))
    pub.commit(pub.plan(republish=True) or pytest.fail("no first plan"))
    root_pub = (keydir / "root.pub").read_bytes()
    rotate_root(keydir)
    (keydir / "root.pub").write_bytes(root_pub)  # the old root.pub copied back by mistake
    touch_later(keydir / "root.pub")
    with caplog.at_level(logging.ERROR):
        plan = pub.plan(republish=False)
    # the chain does not end at root.pub, and the release certificate is not root.pub's
    assert plan is None or T.root_chain() not in [p.topic for p in plan.publications]
    assert "not publishing the chain" in caplog.text or "not certified by the root" in caplog.text
    assert pub.keys.cert != (keydir / "release.cert").read_bytes()  # still the old, consistent one


def test_a_revocation_list_about_to_expire_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keydir = tmp_path / "keys"
    init_keys(keydir)
    revoke_release_keys(keydir, ["0123456789abcdef"], validity_days=10)
    pub = TrustPublisher(keydir, "f", load_release_keys(keydir))
    with caplog.at_level(logging.WARNING):
        plan = pub.plan(republish=True)
        assert plan is not None
        pub.commit(plan)
        pub.plan(republish=False)
    assert "revocation list" in caplog.text and "expires in 10.0 days" in caplog.text
