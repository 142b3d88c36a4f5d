"""Trust handling on the edge: a revocation drops a download signed by the revoked key, signed
commands reach the activator and the downloader, bad or replayed messages are rejections."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edge_node.config import EdgeConfig
from edge_node.downloader import Downloader
from edge_node.storage import release_dir
from edge_node.trust_store import TrustStore
from edge_node.trust_updates import TrustUpdates
from protocol import ChunkRequest, Command, ReportRequest, Revocations, UpdateState
from tests.support.download_release import CERT, NOW, ROOT
from tests.support.download_release import RELEASE as RELEASE_KEY
from tests.support.edge_fakes import DEVICE, TOPICS, Room, release, room


@dataclass
class Rollbacks:
    """Stands in for the activator: records the rollbacks asked for."""

    asked: list[tuple[str, int]] = field(default_factory=list)

    def rollback(self, name: str, version: int) -> None:
        self.asked.append((name, version))


@dataclass
class Setup:
    room: Room
    downloader: Downloader
    rollbacks: Rollbacks
    trust: TrustUpdates


def setup(tmp_path: Path) -> Setup:
    r = room(tmp_path / "data")
    (tmp_path / "root.pem").write_bytes(ROOT.verify_key.to_pem())
    edge = EdgeConfig("mqtt://unused", DEVICE, r.data, tmp_path / "root.pem", window=4)
    downloader = Downloader(
        edge, topics=TOPICS, clock=r.clock, wire=r.wire, slots=r.slots, reporter=r.reporter
    )
    rollbacks = Rollbacks()
    trust = TrustUpdates(
        TrustStore(tmp_path / "root.pem", r.data),
        device=DEVICE,
        fleet="default",
        clock=r.clock,
        slots=r.slots,
        reporter=r.reporter,
        downloader=downloader,
        activator=rollbacks,  # type: ignore[arg-type]
    )
    return Setup(r, downloader, rollbacks, trust)


def revoke(seq: int, *keys: str) -> bytes:
    return Revocations(seq, frozenset(keys), NOW - 10, NOW + 3600).sign(ROOT)


def command(seq: int, action: str, **args: object) -> bytes:
    return Command("default", DEVICE, seq, NOW - 10, NOW + 3600, action, dict(args)).sign(
        RELEASE_KEY, CERT
    )


def test_revoking_the_key_of_a_download_refuses_and_discards_it(tmp_path: Path) -> None:
    s = setup(tmp_path)
    s.downloader.begin(release())
    key = RELEASE_KEY.verify_key.key_id
    s.trust.on_revocations(TOPICS.revocations(), revoke(1, key))
    assert s.room.slots.download is None
    assert not release_dir(s.room.data, "m", 2).exists()
    assert s.room.reporter.rejections == {"revoked-key": 1}
    state = s.room.wire.states()[-1]
    assert state.state == UpdateState.REJECTED and "revoked key" in (state.reason or "")
    assert [e.detail for e in s.room.events.named("keys-revoked")] == [key]


def test_revoking_another_key_leaves_the_download_alone(tmp_path: Path) -> None:
    s = setup(tmp_path)
    s.downloader.begin(release())
    s.trust.on_revocations(TOPICS.revocations(), revoke(1, "0123456789abcdef"))
    assert s.room.slots.download is not None and s.room.reporter.rejections == {}


def test_a_replayed_revocation_list_is_a_rejection(tmp_path: Path) -> None:
    s = setup(tmp_path)
    s.trust.on_revocations(TOPICS.revocations(), revoke(2))
    s.trust.on_revocations(TOPICS.revocations(), revoke(1))
    assert s.room.reporter.rejections == {"stale": 1}
    assert s.room.wire.states() == []  # not an update: the state goes out at its pace


def test_a_signed_rollback_command_goes_to_the_activator(tmp_path: Path) -> None:
    s = setup(tmp_path)
    s.trust.on_command(TOPICS.commands(DEVICE), command(1, "rollback", model="m", version=1))
    assert s.rollbacks.asked == [("m", 1)]
    s.trust.on_command(TOPICS.commands(DEVICE), command(1, "rollback", model="m", version=1))
    assert s.rollbacks.asked == [("m", 1)] and s.room.reporter.rejections == {"stale": 1}


def test_re_request_repairs_a_download_and_is_ignored_without_one(tmp_path: Path) -> None:
    s = setup(tmp_path)
    s.trust.on_command(TOPICS.commands(DEVICE), command(1, "re-request"))
    assert [e.detail for e in s.room.events.named("command-ignored")] == [
        "re-request is not supported yet"
    ]
    s.downloader.begin(release())
    s.trust.on_command(TOPICS.commands(DEVICE), command(2, "re-request"))
    last = ChunkRequest.decode(s.room.wire.on(TOPICS.request(DEVICE))[-1])
    assert last.repair and last.indices() == [0, 1, 2, 3]
    assert s.downloader.stalls == 1


def test_an_unsigned_command_is_a_rejection(tmp_path: Path) -> None:
    s = setup(tmp_path)
    s.trust.on_command(TOPICS.commands(DEVICE), b"\x93not a command")
    assert sum(s.room.reporter.rejections.values()) == 1 and s.rollbacks.asked == []
    s.trust.on_command(TOPICS.commands(DEVICE), b"")  # a cleared retained message: nothing
    assert sum(s.room.reporter.rejections.values()) == 1


def report_request(issued: float, fleet: str = "default") -> bytes:
    return ReportRequest.new(fleet, issued).sign(RELEASE_KEY, CERT)


def test_a_signed_report_request_publishes_status_and_state_again_once(tmp_path: Path) -> None:
    s = setup(tmp_path)
    topic = TOPICS.report_request()
    s.trust.on_report_request(topic, report_request(NOW - 5))
    assert len(s.room.wire.on(TOPICS.status(DEVICE))) == 1 and len(s.room.wire.states()) == 1
    s.trust.on_report_request(topic, report_request(NOW - 5))  # a replay: ignored, harmless
    s.trust.on_report_request(topic, report_request(NOW - 9))  # older: the same
    assert len(s.room.wire.on(TOPICS.status(DEVICE))) == 1 and s.room.reporter.rejections == {}
    s.trust.on_report_request(topic, report_request(NOW - 1))  # a newer one (coordinator again)
    assert len(s.room.wire.on(TOPICS.status(DEVICE))) == 2 and len(s.room.wire.states()) == 2


def test_a_report_request_unsigned_or_of_another_fleet_is_a_rejection(tmp_path: Path) -> None:
    s = setup(tmp_path)
    topic = TOPICS.report_request()
    s.trust.on_report_request(topic, b"\x93not a request")
    s.trust.on_report_request(topic, report_request(NOW - 5, fleet="other"))
    assert sum(s.room.reporter.rejections.values()) == 2
    assert s.room.wire.on(TOPICS.status(DEVICE)) == [] and s.room.wire.states() == []
