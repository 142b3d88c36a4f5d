"""Publishing without a broker: trust before manifests before the index, all retained; nothing
again until something changes; everything again after a reconnect; a refused publish retried;
releases the index no longer names retired from chunk serving."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import protocol
from coordinator.deployer import DeploymentPublisher
from coordinator.keystore import init_keys, load_release_keys
from coordinator.progress import Progress
from coordinator.publishing import Publishing
from coordinator.registry import Registry, ReleaseRecord
from coordinator.release_cache import ReleaseCache
from coordinator.trust_publisher import TrustPublisher
from coordinator.trustkeys import rotate_root
from tests.unit.coordinator_fakes import FLEET, FakeLink, add_release

T = protocol.Topics(FLEET)


@dataclass
class Setup:
    publishing: Publishing
    registry: Registry
    releases: ReleaseCache
    v1: ReleaseRecord
    retired: list[set[bytes]] = field(default_factory=list)
    ticks: list[int] = field(default_factory=list)
    indexes: list[Mapping[str, protocol.Target]] = field(default_factory=list)


@pytest.fixture(name="s")
def setup(tmp_path: Path) -> Iterator[Setup]:
    keydir = tmp_path / "keys"
    init_keys(keydir)
    rotate_root(keydir)  # so there is a root chain to publish
    keys = load_release_keys(keydir)
    registry = Registry(tmp_path / "c.db")
    v1 = add_release(registry, keys, tmp_path, version=1)
    registry.deploy("m", 1, fleet=FLEET)
    releases = ReleaseCache(registry, FLEET)
    retired: list[set[bytes]] = []
    ticks: list[int] = []
    indexes: list[Mapping[str, protocol.Target]] = []
    publishing = Publishing(
        FLEET,
        TrustPublisher(keydir, FLEET, keys),
        DeploymentPublisher(registry, keys, FLEET, index_expires_in=86400.0),
        releases,
        Progress(),
        threading.Event(),
        step_rollouts=lambda: ticks.append(1),
        retire=retired.append,
        on_index=indexes.append,
    )
    yield Setup(publishing, registry, releases, v1, retired, ticks, indexes)
    registry.close()


def test_trust_then_manifests_then_the_index_all_retained(s: Setup) -> None:
    link = FakeLink()
    s.publishing.on_connect()
    s.publishing.turn(link)
    assert s.ticks == [1]
    assert link.topics == [T.root_chain(), T.manifest("m", 1), T.index()]
    assert all(p.retain for p in link.published)
    assert link.published[1].payload == s.v1.manifest
    assert s.releases.get(s.v1.short_id) == s.v1  # served without a database read


def test_nothing_again_until_a_change_then_everything_after_a_reconnect(s: Setup) -> None:
    link = FakeLink()
    s.publishing.on_connect()
    s.publishing.publish(link)
    first = list(link.published)
    s.publishing.publish(link)
    assert link.published == first  # nothing changed
    s.publishing.on_connect()  # e.g. the broker restarted without persistence
    s.publishing.publish(link)
    assert link.published[len(first) :] == first  # the same bytes: no new index seq


def test_a_refused_publish_is_retried_and_nothing_is_published_offline(s: Setup) -> None:
    link = FakeLink(room=1)  # the root chain goes out, then the client's queue is full
    s.publishing.on_connect()
    s.publishing.publish(link)
    assert link.topics == [T.root_chain()]
    link.room = None
    link.connected.clear()
    s.publishing.publish(link)
    assert link.topics == [T.root_chain()]  # offline: not even tried
    link.connected.set()
    s.publishing.publish(link)
    assert link.topics == [T.root_chain(), T.root_chain(), T.manifest("m", 1), T.index()]


def test_releases_no_longer_in_the_index_are_retired(s: Setup, tmp_path: Path) -> None:
    link = FakeLink()
    s.publishing.on_connect()
    s.publishing.publish(link)
    keys = load_release_keys(tmp_path / "keys")
    v2 = add_release(s.registry, keys, tmp_path, version=2)
    s.registry.deploy("m", 2, fleet=FLEET)
    s.publishing.publish(link)
    assert link.topics[-2:] == [T.manifest("m", 2), T.index()]
    assert s.retired == [{s.v1.short_id}]
    assert s.releases.get(v2.short_id) == v2
    # who will ask for what is worked out from each index's targets, once it is published
    assert [{n: t.manifest_id for n, t in e.items()} for e in s.indexes] == [
        {"m": s.v1.release_id},
        {"m": v2.release_id},
    ]


def test_the_poller_turns_until_stopped(tmp_path: Path, s: Setup) -> None:
    stopping = threading.Event()
    link = FakeLink()
    progress = Progress()
    publishing = Publishing(
        FLEET,
        TrustPublisher(tmp_path / "keys", FLEET, load_release_keys(tmp_path / "keys")),
        DeploymentPublisher(
            s.registry, load_release_keys(tmp_path / "keys"), FLEET, index_expires_in=86400.0
        ),
        ReleaseCache(s.registry, FLEET),
        progress,
        stopping,
        step_rollouts=lambda: None,
        retire=lambda ids: None,
        poll_interval=60.0,
    )
    poller = threading.Thread(target=publishing.run, args=(link,))
    poller.start()
    try:
        publishing.on_connect()  # wakes it at once: no waiting for the poll interval
        assert progress.wait_until(lambda: T.index() in link.topics, 10)
    finally:
        stopping.set()
        publishing.wake()
        poller.join(10)
    assert not poller.is_alive()
