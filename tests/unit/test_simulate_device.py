"""A virtual device (``modelcast.simulate``) with real signed indexes, manifests and chunks on an
in-memory wire: it says and asks what an edge says and asks, and refuses what an edge refuses."""

from __future__ import annotations

from dataclasses import dataclass, field

from modelcast.simulate.device import DeviceOptions, VirtualDevice
from modelcast.simulate.sinks import memory_sinks
from modelcast.simulate.spec import DeviceProfile, DeviceSpec
from protocol import (
    ChunkFrame,
    ChunkRequest,
    DeploymentIndex,
    DeviceEvent,
    DeviceState,
    DeviceStatus,
    MetricsSample,
    RolloutBlock,
    Target,
    Topics,
    UpdateState,
    VerifiedManifest,
)
from protocol.fleet_config import ConfigEntry
from protocol.rollout import PPM_ALL, Selector
from tests.support.download_release import CERT, NOW, RELEASE, TRUST
from tests.support.edge_fakes import Clock, frame, pieces, release

TOPICS = Topics("default")
DEVICE = "sim-1"


@dataclass
class Wire:
    """Records what the device publishes (in order) and the topics it listens to."""

    published: list[tuple[str, bytes, int, bool]] = field(default_factory=list)
    subscribed: list[str] = field(default_factory=list)
    unsubscribed: list[str] = field(default_factory=list)
    mid: int = 0

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> int:
        self.published.append((topic, payload, qos, retain))
        self.mid += 1
        return self.mid

    def subscribe(self, topics: list[str], qos: int = 1) -> None:
        self.subscribed.extend(topics)

    def unsubscribe(self, topics: list[str]) -> None:
        self.unsubscribed.extend(topics)

    def on(self, topic: str) -> list[tuple[bytes, int, bool]]:
        return [(p, q, r) for t, p, q, r in self.published if t == topic]

    def states(self) -> list[DeviceState]:
        return [DeviceState.decode(p) for p, _, _ in self.on(TOPICS.state(DEVICE))]

    def events(self) -> list[DeviceEvent]:
        return [DeviceEvent.decode(p) for p, _, _ in self.on(TOPICS.telemetry(DEVICE, "events"))]

    def requests(self) -> list[ChunkRequest]:
        return [ChunkRequest.decode(p) for p, _, _ in self.on(TOPICS.request(DEVICE))]


@dataclass
class Sim:
    device: VirtualDevice
    wire: Wire
    clock: Clock
    seq: int = 0

    def index(self, *, config: tuple[ConfigEntry, ...] = (), **targets: Target) -> None:
        self.seq += 1
        index = DeploymentIndex("default", self.seq, NOW - 10, NOW + 3600, targets, config)
        self.device.on_message(TOPICS.index(), index.sign(RELEASE, CERT))

    def deliver(self, rel: VerifiedManifest, chunks: list[bytes]) -> None:
        """The manifest, then every chunk the device asks for, until it asks for nothing."""
        m = rel.manifest
        self.device.on_message(TOPICS.manifest(m.name, m.version), rel.envelope)
        served: set[int] = set()
        while True:
            asked = {i for r in self.wire.requests() for i in r.indices()} - served
            if not asked:
                return
            for i in sorted(asked):
                served.add(i)
                self.clock.now += 0.01
                self.device.on_message(
                    TOPICS.chunk_block(m.name, m.version, 0), frame(rel, i, chunks)
                )


def sim(profile: DeviceProfile | None = None, **options: float) -> Sim:
    wire, clock = Wire(), Clock()
    device = VirtualDevice(
        DeviceSpec(DEVICE, profile or DeviceProfile()),
        TRUST,
        wire=wire,
        clock=clock,
        sinks=memory_sinks(),
        options=DeviceOptions(**options),  # type: ignore[arg-type]
    )
    device.on_connect(session_present=False)
    return Sim(device, wire, clock)


def target(rel: VerifiedManifest, **kw: object) -> Target:
    return Target(rel.manifest.version, rel.id, **kw)  # type: ignore[arg-type]


def test_a_connect_says_online_and_listens_where_an_edge_listens() -> None:
    s = sim()
    ((payload, qos, retain),) = s.wire.on(TOPICS.status(DEVICE))
    status = DeviceStatus.decode(payload)
    assert status.online and status.profile["simulated"] and (qos, retain) == (0, True)
    assert s.wire.subscribed == [
        TOPICS.root_chain(),
        TOPICS.revocations(),
        TOPICS.index(),
        TOPICS.commands(DEVICE),
        TOPICS.fleet_commands(),
        TOPICS.resend(DEVICE),
    ]
    assert s.wire.states()[-1].state is UpdateState.IDLE


def test_a_release_is_fetched_verified_and_marked_active() -> None:
    s = sim(window=4)
    chunks = pieces(8)
    rel = release(version=2, chunks=chunks)
    s.index(m=target(rel))
    assert s.wire.subscribed[-1] == TOPICS.manifest("m", 2)
    s.deliver(rel, chunks)
    requests = s.wire.requests()
    assert requests[0].fresh and not any(r.fresh for r in requests[1:])
    assert max(len(r.indices()) for r in requests) <= 4  # the window
    assert sorted(i for r in requests for i in r.indices()) == list(range(8))
    assert s.device.memory.versions() == {"m": 2}
    states = [st.state for st in s.wire.states()]
    for state in (UpdateState.DOWNLOADING, UpdateState.VERIFIED, UpdateState.ACTIVE):
        assert state in states
    assert states[-1] is UpdateState.ACTIVE
    assert [e.event for e in s.wire.events()] == ["downloading", "verified", "activated"]
    assert [e.seq for e in s.wire.events()] == [1, 2, 3]
    status = DeviceStatus.decode(s.wire.on(TOPICS.status(DEVICE))[-1][0])
    assert status.active == {"m": 2}
    assert s.device.verified_at == {"m@2": s.clock.now}
    assert s.device.downloader.current is None  # its block topics are left
    assert set(s.wire.unsubscribed) >= {TOPICS.chunk_block("m", 2, b) for b in range(2)}


def test_a_delivery_records_when_it_began_its_first_chunk_came_and_it_was_verified() -> None:
    s = sim(window=4)
    chunks = pieces(3)
    rel = release(version=2, chunks=chunks)
    s.index(m=target(rel))
    began = s.clock.now
    s.deliver(rel, chunks)  # the clock moves 10 ms per chunk
    assert s.device.milestones() == {
        "m@2": {"began": began, "first_chunk": began + 0.01, "verified": s.clock.now}
    }
    assert s.clock.now > began + 0.01


def test_a_chunk_after_the_release_is_verified_is_counted_as_unwanted() -> None:
    s = sim()
    chunks = pieces(2)
    rel = release(version=2, chunks=chunks)
    s.index(m=target(rel))
    s.deliver(rel, chunks)
    late = frame(rel, 1, chunks)
    s.device.on_message(TOPICS.chunk_block("m", 2, 0), late)  # published for a later device
    s.device.on_message(TOPICS.resend(DEVICE), late)
    assert s.device.counters()["unwanted"] == 2
    assert s.device.counters()["unwanted_bytes"] == 2 * len(late)
    assert s.device.counters()["duplicates"] == 0


def test_a_corrupt_chunk_is_refused_and_the_good_one_still_taken() -> None:
    s = sim()
    chunks = pieces(3)
    rel = release(version=2, chunks=chunks)
    s.index(m=target(rel))
    s.device.on_message(TOPICS.manifest("m", 2), rel.envelope)
    bad = ChunkFrame.encode(0, rel.id, b"x" * len(chunks[0]))
    s.device.on_message(TOPICS.chunk_block("m", 2, 0), bad)
    assert list(s.device.reporter.rejections.values()) == [1]
    assert s.device.downloader.session is not None
    assert not s.device.downloader.session.is_held(0)
    s.deliver(rel, chunks)
    assert s.device.memory.versions() == {"m": 2}


def test_an_index_of_another_fleet_or_a_replayed_one_is_refused() -> None:
    s = sim()
    rel = release(version=2)
    other = DeploymentIndex("elsewhere", 5, NOW - 10, NOW + 3600, {"m": target(rel)})
    s.device.on_message(TOPICS.index(), other.sign(RELEASE, CERT))
    assert s.wire.states()[-1].state is UpdateState.REJECTED
    s.seq = 4
    s.index(m=target(rel))  # seq 5
    s.seq = 1
    s.index(m=target(release(version=3)))  # seq 2 < 5: a replay
    assert sum(s.device.reporter.rejections.values()) == 2
    assert s.wire.subscribed.count(TOPICS.manifest("m", 2)) == 1
    assert TOPICS.manifest("m", 3) not in s.wire.subscribed


def test_a_device_outside_a_rollout_stage_takes_the_base() -> None:
    base, new = release(version=1), release(version=2)
    stage = RolloutBlock("r1", 0, Selector(), Target(1, base.id))  # 0 %: nobody is in
    s = sim()
    s.index(m=Target(2, new.id, rollout=stage))
    assert s.wire.subscribed[-1] == TOPICS.manifest("m", 1)
    everyone = RolloutBlock("r1", PPM_ALL, Selector(), Target(1, base.id))
    s.index(m=Target(2, new.id, rollout=everyone))
    assert s.wire.subscribed[-1] == TOPICS.manifest("m", 2)


def test_a_variant_rule_picks_the_device_s_build() -> None:
    from protocol import VariantRule

    fp32, int8 = release(version=2), release(version=2, chunks=pieces(3, seed=b"int8"))
    rules = (VariantRule("int8", {"class": "small"}),)
    entry = Target(2, fp32.id, variant="fp32", variants={"int8": int8.id}, rules=rules)
    small = sim(DeviceProfile(tags={"class": "small"}))
    small.index(m=entry)
    assert small.wire.subscribed[-1] == TOPICS.manifest("m", 2, "int8")
    big = sim(DeviceProfile(tags={"class": "big"}))
    big.index(m=entry)
    assert big.wire.subscribed[-1] == TOPICS.manifest("m", 2, "fp32")


def test_a_stalled_download_asks_again_for_what_is_outstanding() -> None:
    s = sim(stall_timeout=5.0)
    rel = release(version=2)
    s.index(m=target(rel))
    s.device.on_message(TOPICS.manifest("m", 2), rel.envelope)
    first = s.wire.requests()
    s.clock.now += 4.0
    s.device.tick(s.clock.now)
    assert s.wire.requests() == first
    s.clock.now += 2.0
    s.device.tick(s.clock.now)
    repair = s.wire.requests()[-1]
    assert repair.repair and repair.indices() == first[0].indices()
    assert s.device.downloader.stalls == 1


def test_a_new_session_subscribes_and_asks_afresh() -> None:
    s = sim()
    rel = release(version=2)
    s.index(m=target(rel))
    s.device.on_message(TOPICS.manifest("m", 2), rel.envelope)
    s.device.on_disconnect()
    s.wire.subscribed.clear()
    s.device.on_connect(session_present=False)
    assert TOPICS.chunk_block("m", 2, 0) in s.wire.subscribed
    assert s.wire.requests()[-1].fresh


def test_samples_and_events_share_one_sequence_and_go_at_qos_1() -> None:
    s = sim(telemetry_interval=5.0)
    s.device.sample()
    s.device.reporter.event("something")
    s.device.on_disconnect()
    s.device.sample()
    metrics = s.wire.on(TOPICS.telemetry(DEVICE, "metrics"))
    assert [q for _, q, _ in metrics] == [1, 1]
    first, offline = (MetricsSample.decode(p) for p, _, _ in metrics)
    assert (first.seq, offline.seq) == (1, 3)
    assert first.interval_s == 5.0 and not first.hist and offline.hist
    assert s.device.reporter.made == 3


def test_a_pin_holds_a_model_and_a_rollback_goes_back_to_the_previous_version() -> None:
    chunks1, chunks2 = pieces(2, seed=b"one"), pieces(2, seed=b"two")
    v1, v2 = release(version=1, chunks=chunks1), release(version=2, chunks=chunks2)
    s = sim()
    s.index(m=target(v1))
    s.deliver(v1, chunks1)
    pin = (ConfigEntry(Selector(), {"pin": "m@1"}),)
    s.index(m=target(v2), config=pin)
    assert [e.event for e in s.wire.events()][-1] == "held-by-pin"
    s.index(m=target(v2))  # unpinned
    s.deliver(v2, chunks2)
    assert s.device.memory.versions() == {"m": 2}
    s.index(m=Target(1, v1.id, rollback=True))
    assert s.device.memory.versions() == {"m": 1}
    assert s.wire.events()[-1].event == "rolled-back"
    assert s.wire.states()[-1].state is UpdateState.ACTIVE
    fetches = s.wire.subscribed.count(TOPICS.manifest("m", 2))
    s.index(m=target(v2))  # held back (reported once per release, as held by the pin here)
    assert s.device.memory.versions() == {"m": 1}
    assert s.wire.subscribed.count(TOPICS.manifest("m", 2)) == fetches
