"""The index follower with real signed indexes and manifests on an in-memory wire: what it
subscribes to, what it refuses, and what it hands on to download."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edge_node.activator import Activator
from edge_node.active import AgentRecord
from edge_node.config import EdgeConfig
from edge_node.downloader import Downloader
from edge_node.index_follower import DeviceTraits, IndexFollower
from edge_node.integrity import ModelIntegrity
from edge_node.pushed_config import PushedConfig
from edge_node.storage import FINAL, release_dir
from edge_node.trust_store import TrustStore
from protocol import DeploymentIndex, Target, UpdateState, VerifiedManifest
from tests.support.download_release import CERT, NOW, ROOT
from tests.support.download_release import RELEASE as RELEASE_KEY
from tests.support.edge_fakes import DEVICE, TOPICS, Room, pieces, release, room


@dataclass
class Paced:
    interval: float = 60.0


@dataclass
class Setup:
    room: Room
    record: AgentRecord
    activator: Activator
    follower: IndexFollower
    integrity: ModelIntegrity
    seq: int = 0

    def index(self, **targets: VerifiedManifest) -> None:
        self.seq += 1
        index = DeploymentIndex(
            "default",
            self.seq,
            NOW - 10,
            NOW + 3600,
            {n: Target(r.manifest.version, r.id) for n, r in targets.items()},
        )
        self.follower.on_index(TOPICS.index(), index.sign(RELEASE_KEY, CERT))

    def activate(self, rel: VerifiedManifest) -> None:
        m = rel.manifest
        path = release_dir(self.room.data, m.name, m.version) / FINAL
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"model")
        assert self.activator.activate(rel, path)


def setup(tmp_path: Path) -> Setup:
    r = room(tmp_path / "data")
    (tmp_path / "root.pem").write_bytes(ROOT.verify_key.to_pem())
    edge = EdgeConfig("mqtt://unused", DEVICE, r.data, tmp_path / "root.pem")
    integrity = ModelIntegrity(r.actives, DEVICE)
    record = AgentRecord()
    common = {"clock": r.clock, "slots": r.slots, "reporter": r.reporter}
    downloader = Downloader(edge, topics=TOPICS, wire=r.wire, **common)  # type: ignore[arg-type]
    settings = PushedConfig(edge, telemetry=Paced(), profile={}, reporter=r.reporter)  # type: ignore[arg-type]
    activator = Activator(
        device=DEVICE,
        data=r.data,
        actives=r.actives,
        record=record,
        policy=lambda: settings.policy,
        downloader=downloader,
        check=lambda path, kind=None, acceptance=None: None,
        integrity=integrity,
        **common,  # type: ignore[arg-type]
    )
    follower = IndexFollower(
        edge,
        topics=TOPICS,
        wire=r.wire,
        trust=TrustStore(tmp_path / "root.pem", r.data),
        record=record,
        actives=r.actives,
        traits=DeviceTraits(DEVICE, {}, None, None, ()),
        settings=settings,
        downloader=downloader,
        activator=activator,
        integrity=integrity,
        **common,  # type: ignore[arg-type]
    )
    return Setup(r, record, activator, follower, integrity)


def test_an_index_has_the_manifest_of_its_target_fetched(tmp_path: Path) -> None:
    s = setup(tmp_path)
    rel = release(version=2)
    s.index(m=rel)
    manifest_topic = TOPICS.manifest("m", 2)
    assert s.room.wire.subscribed == [manifest_topic]
    assert s.room.slots.pending == ("m", Target(2, rel.id))
    assert s.follower.awaits(manifest_topic) and not s.follower.awaits(TOPICS.manifest("m", 3))
    assert s.record.index_seq == 1
    assert (s.room.data / "agent.json").exists()


def test_a_replayed_index_is_refused(tmp_path: Path) -> None:
    s = setup(tmp_path)
    s.index(m=release(version=2))
    s.seq = -1  # the next is seq 0, older than the one accepted
    s.index(m=release(version=3))
    assert sum(s.room.reporter.rejections.values()) == 1
    assert s.room.wire.subscribed == [TOPICS.manifest("m", 2)]


def test_the_awaited_manifest_is_handed_on_and_unsubscribed(tmp_path: Path) -> None:
    s = setup(tmp_path)
    rel = release(version=2)
    s.index(m=rel)
    topic = TOPICS.manifest("m", 2)
    got = s.follower.on_manifest(topic, rel.envelope)
    assert got is not None and got.id == rel.id
    assert s.room.wire.unsubscribed == [topic] and s.room.slots.pending is None


def test_a_manifest_the_index_does_not_name_is_refused(tmp_path: Path) -> None:
    s = setup(tmp_path)
    s.index(m=release(version=2))
    other = release(version=2, chunks=[b"other model"])
    assert s.follower.on_manifest(TOPICS.manifest("m", 2), other.envelope) is None
    assert s.room.reporter.rejections == {"mismatch": 1}
    state = s.room.wire.states()[-1]
    assert (state.state, state.model, state.version) == (UpdateState.REJECTED, "m", 2)
    assert s.room.slots.pending is not None  # still awaited


def test_a_downgrade_is_refused_once_per_release(tmp_path: Path) -> None:
    s = setup(tmp_path)
    s.activate(release(version=3))
    s.index(m=release(version=2))
    s.index(m=release(version=2))
    assert s.room.reporter.rejections == {"stale": 1}
    assert s.room.wire.subscribed == []


def test_a_release_to_start_over_is_chosen_again(tmp_path: Path) -> None:
    s = setup(tmp_path)
    rel = release(version=2)
    s.room.slots.pending = ("m", Target(2, rel.id))  # as the downloader leaves it
    s.follower.choose_again()
    assert s.room.wire.subscribed == [TOPICS.manifest("m", 2)]
    assert s.room.slots.pending == ("m", Target(2, rel.id))


def test_a_manifest_no_newer_than_the_active_version_is_refused(tmp_path: Path) -> None:
    s = setup(tmp_path)
    rel = release(version=3)
    s.index(m=rel)
    s.activate(rel)  # meanwhile (by another path) m@3 became active
    assert s.follower.on_manifest(TOPICS.manifest("m", 3), rel.envelope) is None
    assert s.room.reporter.rejections == {"stale": 1}


def test_the_active_release_is_fetched_again_to_repair_its_corrupt_file(tmp_path: Path) -> None:
    s = setup(tmp_path)
    chunks = pieces(3)
    rel = release(version=3, chunks=chunks)
    path = release_dir(s.room.data, "m", 3) / FINAL
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(chunks))
    assert s.activator.activate(rel, path)
    s.index(m=rel)
    assert s.room.wire.subscribed == []  # active and whole: nothing to fetch
    path.write_bytes(b"rotten")
    assert s.integrity.check("m") is not None
    s.follower.choose()
    topic = TOPICS.manifest("m", 3)
    assert s.room.wire.subscribed == [topic]
    # another build of version 3 (another sha256) is no repair of the one active here
    other = release(version=3, chunks=pieces(3, seed=b"other"))
    s.follower.targets = {"m": Target(3, other.id)}
    s.room.slots.pending = ("m", Target(3, other.id))
    assert s.follower.on_manifest(topic, other.envelope) is None
    assert s.room.reporter.rejections == {"mismatch": 1}
    s.room.slots.pending = ("m", Target(3, rel.id))
    got = s.follower.on_manifest(topic, rel.envelope)
    assert got is not None and got.id == rel.id
