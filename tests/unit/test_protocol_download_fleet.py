"""A whole fleet downloading one release through a fake broker and a fake coordinator that
coalesces requests (PROTOCOL.md): shared streams, staggered starts, loss and repair."""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict, deque
from dataclasses import dataclass, field

import pytest

from protocol import ChunkRequest, DownloadSession, Phase, Topics, VerifiedManifest
from tests.support.download_release import DATA, N_CHUNKS, REL, WINDOW, chunk_frame

# --- a fleet through a fake broker ----------------------------------------------------------------
TOPICS = Topics("default")


class FakeBroker:
    """Topic -> subscribed devices; a publish is queued for every subscriber of its topic."""

    def __init__(self, rng: random.Random, loss: float = 0.0) -> None:
        self.subs: dict[str, set[str]] = defaultdict(set)
        self.inbox: dict[str, deque[bytes]] = defaultdict(deque)  # per client, in order
        self.rng = rng
        self.loss = loss
        self.dropped = 0

    def subscribe(self, client: str, topic: str) -> None:
        self.subs[topic].add(client)

    def unsubscribe(self, client: str, topic: str) -> None:
        self.subs[topic].discard(client)

    def publish(self, topic: str, payload: bytes) -> None:
        for client in sorted(self.subs[topic]):
            if self.loss and self.rng.random() < self.loss:
                self.dropped += 1
                continue
            self.inbox[client].append(payload)


class FakeCoordinator:
    """Publishes each requested chunk on its block topic, with the PROTOCOL.md coalescing rule:
    skip a chunk already published after the requester subscribed to its block, unless repair."""

    name = "coordinator"

    def __init__(self, broker: FakeBroker, release: VerifiedManifest) -> None:
        self.broker = broker
        self.release = release
        self.clock = 0
        self.sub_time: dict[str, dict[int, int]] = {}
        self.published_at: dict[int, int] = {}
        self.sent = 0
        self.coalesced = 0

    def on_request(self, payload: bytes) -> None:
        req = ChunkRequest.decode(payload)
        m = self.release.manifest
        assert req.release_id == self.release.id[:16]
        self.clock += 1
        subs = self.sub_time.setdefault(req.device, {})
        if req.fresh:
            subs.clear()
        for block in req.subscribed:
            subs[block] = self.clock
        for i in req.indices():
            block = m.block_of(i)
            since = subs.get(block)
            if not req.repair and since is not None and self.published_at.get(i, -1) > since:
                self.coalesced += 1
                continue
            self.clock += 1
            self.published_at[i] = self.clock
            self.sent += 1
            self.broker.publish(TOPICS.chunk_block(m.name, m.version, block), chunk_frame(i))


@dataclass
class FakeDevice:
    name: str
    broker: FakeBroker
    release: VerifiedManifest
    window: int
    session: DownloadSession = field(init=False)
    buf: bytearray = field(init=False)

    def __post_init__(self) -> None:
        self.session = DownloadSession(self.release)
        self.buf = bytearray(self.release.manifest.size)

    def topic(self, block: int) -> str:
        return TOPICS.chunk_block(self.release.manifest.name, self.release.manifest.version, block)

    def pump(self, now: float) -> None:
        plan = self.session.plan(self.name, now, self.window)
        for b in plan.unsubscribe:
            self.broker.unsubscribe(self.name, self.topic(b))
        for b in plan.subscribe:
            self.broker.subscribe(self.name, self.topic(b))
        if plan.request is not None:
            self.broker.inbox[FakeCoordinator.name].append(plan.request.encode())

    def onchunk_frame(self, frame: bytes, now: float) -> None:
        vc = self.session.accept(frame)
        if vc is None:
            return
        self.buf[vc.offset : vc.offset + len(vc.data)] = vc.data
        self.session.commit(vc, now)
        if self.session.phase is Phase.COMPLETE:
            self.session.finish(hashlib.sha256(self.buf).digest())
        self.pump(now)

    def repair(self, now: float) -> None:
        req = self.session.repair(self.name, now)
        assert req is not None
        self.broker.inbox[FakeCoordinator.name].append(req.encode())


@dataclass
class Run:
    devices: list[FakeDevice]
    coordinator: FakeCoordinator
    broker: FakeBroker
    repairs: int


def _simulate(seed: int, *, loss: float = 0.0, stagger: int = 0, n_devices: int = 3) -> Run:
    """Random interleaving of per-client FIFO queues; devices may start ``stagger`` steps apart."""
    rng = random.Random(seed)
    broker = FakeBroker(rng, loss)
    coordinator = FakeCoordinator(broker, REL)
    devices = [FakeDevice(f"edge-{k}", broker, REL, WINDOW) for k in range(n_devices)]
    waiting = list(devices)
    now, repairs, step = 0.0, 0, 0
    timeout = 50.0
    while any(d.session.phase is not Phase.VERIFIED for d in devices):
        step += 1
        assert step < 100_000, "the download does not converge"
        if waiting and step >= stagger * (n_devices - len(waiting)):
            waiting.pop(0).pump(now)
        ready = [c for c, q in broker.inbox.items() if q]
        if not ready:
            if waiting:
                continue
            now += timeout  # nothing in flight: time passes, stalled devices repair
            for d in devices:
                if d.session.stalled(now, timeout):
                    d.repair(now)
                    repairs += 1
            continue
        client = rng.choice(sorted(ready))
        payload = broker.inbox[client].popleft()
        now += 0.01
        if client == FakeCoordinator.name:
            coordinator.on_request(payload)
        else:
            next(d for d in devices if d.name == client).onchunk_frame(payload, now)
    return Run(devices, coordinator, broker, repairs)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_three_devices_share_one_stream(seed: int) -> None:
    run = _simulate(seed)
    for d in run.devices:
        assert d.session.phase is Phase.VERIFIED
        assert bytes(d.buf) == DATA
        # each device's link carries little beyond the chunks it lacks
        assert d.session.received <= 3 * N_CHUNKS // 2
    assert run.repairs == 0
    # the coordinator sends each chunk about once, not once per device (3 * N_CHUNKS)
    assert N_CHUNKS <= run.coordinator.sent <= 3 * N_CHUNKS // 2
    assert run.coordinator.coalesced > N_CHUNKS  # the other two devices' requests, mostly


@pytest.mark.parametrize("seed", [0, 1])
def test_devices_a_little_apart_still_share(seed: int) -> None:
    run = _simulate(seed, stagger=5)
    assert all(d.session.phase is Phase.VERIFIED for d in run.devices)
    assert all(bytes(d.buf) == DATA for d in run.devices)
    assert run.repairs == 0
    assert run.coordinator.sent < 2 * N_CHUNKS


def test_devices_far_apart_each_get_exactly_their_chunks() -> None:
    """Pull-based: a device that starts when the others are done is served alone, and neither
    it nor the coordinator pays for anything it does not need."""
    run = _simulate(0, stagger=1_000)
    assert all(d.session.phase is Phase.VERIFIED for d in run.devices)
    assert run.repairs == 0
    assert run.coordinator.sent == 3 * N_CHUNKS
    assert [d.session.received for d in run.devices] == [N_CHUNKS] * 3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lossy_broker_recovers_by_repair(seed: int) -> None:
    run = _simulate(seed, loss=0.2)
    assert run.broker.dropped > 0
    assert run.repairs > 0
    for d in run.devices:
        assert d.session.phase is Phase.VERIFIED
        assert bytes(d.buf) == DATA


def test_without_coalescing_the_fleet_costs_one_stream_per_device() -> None:
    """The control experiment: the same fleet with a coordinator that never coalesces sends
    about three times as much, so the bound asserted above is the coalescing at work."""
    original = FakeCoordinator.on_request

    def no_coalescing(self: FakeCoordinator, payload: bytes) -> None:
        req = ChunkRequest.decode(payload)
        forced = ChunkRequest(
            req.device,
            req.name,
            req.version,
            req.release_id,
            req.ranges,
            req.subscribed,
            req.fresh,
            repair=True,
        )
        original(self, forced.encode())

    FakeCoordinator.on_request = no_coalescing  # type: ignore[method-assign]
    try:
        run = _simulate(0)
    finally:
        FakeCoordinator.on_request = original  # type: ignore[method-assign]
    assert all(d.session.phase is Phase.VERIFIED for d in run.devices)
    assert run.coordinator.sent >= 3 * N_CHUNKS - 2 * WINDOW
