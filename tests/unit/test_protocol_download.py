"""The edge's download state machine (sans-IO), and a whole fleet download through a fake broker."""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict, deque
from dataclasses import dataclass, field

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol import (
    ChunkFrame,
    ChunkRejected,
    ChunkRequest,
    DigestMismatch,
    DownloadSession,
    MalformedMessage,
    Manifest,
    Phase,
    SequenceError,
    SigningKey,
    Topics,
    TrustedRoot,
    VerifiedChunk,
    VerifiedManifest,
    certify,
    hash_chunks,
    open_manifest,
)
from protocol.download import LOOKAHEAD_WINDOWS

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


def _release(pieces: list[bytes] = PIECES, block_chunks: int = BLOCK) -> VerifiedManifest:
    whole, hashes, size = hash_chunks(pieces)
    m = Manifest("default", "m", 5, size, whole, CHUNK, hashes, 1e9, 2e9, block_chunks=block_chunks)
    return open_manifest(TRUST, m.sign(RELEASE, CERT), now=NOW, fleet="default")


REL = _release()


def _frame(i: int, release: VerifiedManifest = REL, pieces: list[bytes] = PIECES) -> bytes:
    return ChunkFrame.encode(i, release.id, pieces[i])


def _take(s: DownloadSession, i: int, now: float = 0.0, buf: bytearray | None = None) -> None:
    """accept + (write) + commit one chunk, asserting it is new."""
    vc = s.accept(_frame(i))
    assert vc is not None
    assert vc.index == i and vc.offset == i * CHUNK and bytes(vc.data) == PIECES[i]
    if buf is not None:
        buf[vc.offset : vc.offset + len(vc.data)] = vc.data
    s.commit(vc, now)


# --- accept / commit / finish -------------------------------------------------------------------
def test_full_flow_to_verified() -> None:
    s = DownloadSession(REL)
    assert s.phase is Phase.DOWNLOADING
    buf = bytearray(SIZE)
    for i in range(N_CHUNKS):
        assert s.phase is Phase.DOWNLOADING
        _take(s, i, now=float(i), buf=buf)
        assert s.held_count == i + 1
    assert s.phase is Phase.COMPLETE
    assert s.bytes_held == SIZE
    assert s.missing() == []
    assert s.held_indices() == list(range(N_CHUNKS))
    assert bytes(buf) == DATA
    s.finish(hashlib.sha256(buf).digest())
    assert s.phase is Phase.VERIFIED
    assert s.received == N_CHUNKS and s.duplicates == 0
    assert s.last_progress == float(N_CHUNKS - 1)


def test_bytes_held_counts_the_short_last_chunk() -> None:
    s = DownloadSession(REL)
    assert s.bytes_held == 0
    _take(s, N_CHUNKS - 1)
    assert s.bytes_held == 1000
    _take(s, 0)
    assert s.bytes_held == CHUNK + 1000
    _take(s, 1)
    assert s.bytes_held == 2 * CHUNK + 1000


def test_commit_without_accept_is_a_sequence_error() -> None:
    s = DownloadSession(REL)
    with pytest.raises(SequenceError):
        s.commit(VerifiedChunk(0, 0, memoryview(PIECES[0])), 1.0)
    assert s.held_count == 0


def test_commit_twice_is_a_sequence_error() -> None:
    s = DownloadSession(REL)
    vc = s.accept(_frame(0))
    assert vc is not None
    s.commit(vc, 1.0)
    with pytest.raises(SequenceError):
        s.commit(vc, 1.0)
    assert s.held_count == 1


def test_finish_before_complete_is_a_sequence_error() -> None:
    s = DownloadSession(REL)
    for i in range(N_CHUNKS - 1):
        _take(s, i)
    with pytest.raises(SequenceError):
        s.finish(hashlib.sha256(DATA).digest())
    assert s.phase is Phase.DOWNLOADING


def test_finish_after_verified_is_a_sequence_error() -> None:
    s = DownloadSession(REL, held=range(N_CHUNKS))
    s.finish(hashlib.sha256(DATA).digest())
    with pytest.raises(SequenceError):
        s.finish(hashlib.sha256(DATA).digest())


def test_duplicate_chunk_returns_none_and_is_counted() -> None:
    s = DownloadSession(REL)
    _take(s, 3)
    assert s.accept(_frame(3)) is None
    assert s.accept(_frame(3)) is None
    assert (s.received, s.duplicates, s.held_count) == (3, 2, 1)


def test_rejected_chunk_is_not_counted_as_received() -> None:
    s = DownloadSession(REL)
    bad = bytearray(_frame(2))
    bad[-1] ^= 1
    with pytest.raises(ChunkRejected) as exc:
        s.accept(bytes(bad))
    assert exc.value.reason == "hash-mismatch"
    with pytest.raises(ChunkRejected) as exc:
        s.accept(ChunkFrame.encode(N_CHUNKS, REL.id, PIECES[0]))
    assert exc.value.reason == "index-out-of-range"
    with pytest.raises(MalformedMessage):
        s.accept(b"MCCH")
    assert (s.received, s.held_count) == (0, 0)
    _take(s, 2)  # the genuine chunk is still welcome


def test_chunk_of_another_release_is_refused() -> None:
    other = _release(block_chunks=8)  # same bytes, another manifest body: another release id
    assert other.id != REL.id
    s = DownloadSession(REL)
    with pytest.raises(ChunkRejected) as exc:
        s.accept(_frame(0, release=other))
    assert exc.value.reason == "wrong-release"


def test_out_of_order_chunks() -> None:
    s = DownloadSession(REL)
    order = list(range(N_CHUNKS))
    random.Random(7).shuffle(order)
    buf = bytearray(SIZE)
    for i in order:
        _take(s, i, buf=buf)
    assert s.phase is Phase.COMPLETE
    s.finish(hashlib.sha256(buf).digest())
    assert s.phase is Phase.VERIFIED


def test_accepted_chunks_may_be_committed_in_any_order() -> None:
    s = DownloadSession(REL)
    a, b = s.accept(_frame(0)), s.accept(_frame(1))
    assert a is not None and b is not None
    s.commit(b, 1.0)
    s.commit(a, 2.0)
    assert s.held_indices() == [0, 1]


def test_release_accepted_forgets_the_chunk() -> None:
    s = DownloadSession(REL)
    plan = s.plan("d", 0.0, WINDOW)
    assert plan.request is not None and 0 in plan.request.indices()
    vc = s.accept(_frame(0))
    assert vc is not None
    s.release_accepted(vc)  # the write failed
    with pytest.raises(SequenceError):
        s.commit(vc, 1.0)
    assert not s.is_held(0)
    assert 0 not in s.outstanding
    again = s.plan("d", 1.0, WINDOW)
    assert again.request is not None and again.request.indices() == [0]
    # it came and was lost here: a plain request would be coalesced away by the coordinator
    assert again.request.repair is True


def test_finish_with_the_wrong_digest_resets() -> None:
    s = DownloadSession(REL)
    for i in range(N_CHUNKS):
        _take(s, i)
    with pytest.raises(DigestMismatch) as exc:
        s.finish(hashlib.sha256(b"something else").digest())
    assert exc.value.reason == "digest-mismatch"
    assert s.phase is Phase.DOWNLOADING
    assert s.held_count == 0 and s.bytes_held == 0
    assert s.missing() == list(range(N_CHUNKS))
    # it starts over: chunk 0 is new again, and the first plan asks from the beginning
    plan = s.plan("d", 5.0, WINDOW)
    assert plan.request is not None and plan.request.indices() == [0, 1, 2]
    _take(s, 0)
    assert s.held_count == 1


def test_after_a_digest_mismatch_the_device_subscribes_again() -> None:
    """Once complete, plan() unsubscribes every block; after the reset they must come back,
    or the device would ask for chunks on topics it no longer listens to."""
    window = 20  # 2 * window covers every block
    s = DownloadSession(REL)
    subscribed: set[int] = set()  # what the broker has, as the caller applies the plans

    def apply(now: float) -> ChunkRequest | None:
        plan = s.plan("d", now, window)
        assert not set(plan.subscribe) & subscribed, "subscribing twice"
        assert set(plan.unsubscribe) <= subscribed, "unsubscribing what was never subscribed"
        subscribed.difference_update(plan.unsubscribe)
        subscribed.update(plan.subscribe)
        return plan.request

    assert apply(0.0) is not None
    assert subscribed == set(range(10))
    for i in range(N_CHUNKS):  # all arrive (some published for other devices) before a plan
        _take(s, i)
    apply(1.0)
    assert subscribed == set()
    apply(2.0)  # asking twice changes nothing
    assert subscribed == set()
    with pytest.raises(DigestMismatch):
        s.finish(b"\x00" * 32)
    req = apply(3.0)
    assert req is not None
    assert subscribed == set(range(10))
    assert req.subscribed == tuple(range(10))


# --- resume ---------------------------------------------------------------------------------------
def test_resume_with_held_chunks() -> None:
    held = {0, 1, 2, 5, 9, 17, N_CHUNKS - 1}
    s = DownloadSession(REL, held=held)
    assert s.held_count == len(held)
    assert s.missing() == [i for i in range(N_CHUNKS) if i not in held]
    assert all(s.is_held(i) for i in held)
    asked: list[int] = []
    now = 0.0
    while s.phase is Phase.DOWNLOADING:
        plan = s.plan("d", now, WINDOW)
        assert plan.request is not None
        asked += plan.request.indices()
        for i in plan.request.indices():
            _take(s, i, now)
        now += 1
    assert not set(asked) & held
    assert sorted(asked) == [i for i in range(N_CHUNKS) if i not in held]
    assert len(asked) == len(set(asked))


def test_resume_ignores_out_of_range_and_repeated_indices() -> None:
    s = DownloadSession(REL, held=[0, 0, 1, -1, N_CHUNKS, 10**9])
    assert s.held_count == 2
    assert s.held_indices() == [0, 1]


def test_resume_with_everything_held_is_complete() -> None:
    s = DownloadSession(REL, held=range(N_CHUNKS))
    assert s.phase is Phase.COMPLETE
    plan = s.plan("d", 0.0, WINDOW)
    assert plan.request is None and plan.subscribe == ()
    s.finish(hashlib.sha256(DATA).digest())
    assert s.phase is Phase.VERIFIED


def test_duplicate_of_a_resumed_chunk() -> None:
    s = DownloadSession(REL, held=[4])
    assert s.accept(_frame(4)) is None
    assert s.duplicates == 1


# --- plan -----------------------------------------------------------------------------------------
def test_first_plan_subscribes_ahead_and_asks_for_a_window() -> None:
    s = DownloadSession(REL)
    plan = s.plan("dev", 1.0, WINDOW)
    # LOOKAHEAD_WINDOWS * WINDOW = 24 chunks ahead: 0..23, in blocks 0..5
    assert LOOKAHEAD_WINDOWS * WINDOW == 24
    assert plan.subscribe == (0, 1, 2, 3, 4, 5)
    assert plan.unsubscribe == ()
    req = plan.request
    assert req is not None
    assert req.indices() == [0, 1, 2]
    assert req.ranges == ((0, 3),)
    assert req.fresh is True and req.repair is False
    assert req.subscribed == (0, 1, 2, 3, 4, 5)
    assert (req.device, req.name, req.version, req.release_id) == ("dev", "m", 5, REL.id[:16])
    assert s.outstanding == {0, 1, 2}
    assert s.subscribed == {0, 1, 2, 3, 4, 5}
    # it is a valid wire message
    assert ChunkRequest.decode(req.encode()) == req


def test_plan_keeps_at_most_window_outstanding() -> None:
    s = DownloadSession(REL)
    s.plan("d", 0.0, WINDOW)
    again = s.plan("d", 1.0, WINDOW)
    assert again.request is None  # the window is full
    assert s.outstanding == {0, 1, 2}
    _take(s, 1)
    nxt = s.plan("d", 2.0, WINDOW)
    assert nxt.request is not None and nxt.request.indices() == [3]
    assert len(s.outstanding) == WINDOW


def test_plan_asks_in_batches_of_half_a_window() -> None:
    s = DownloadSession(REL)
    first = s.plan("d", 0.0, 8).request
    assert first is not None and first.indices() == list(range(8))
    for i in range(3):
        _take(s, i)
        assert s.plan("d", 1.0, 8).request is None  # 3 free slots: not yet worth a request
    _take(s, 3)
    batch = s.plan("d", 2.0, 8).request
    assert batch is not None and batch.indices() == [8, 9, 10, 11]


def test_plan_with_a_larger_window_later() -> None:
    s = DownloadSession(REL)
    s.plan("d", 0.0, 2)
    req = s.plan("d", 0.0, 5).request
    assert req is not None and req.indices() == [2, 3, 4]
    assert len(s.outstanding) == 5


def test_subscribed_lists_new_blocks_once_and_fresh_only_first() -> None:
    s = DownloadSession(REL)
    first = s.plan("d", 0.0, WINDOW).request
    assert first is not None and first.fresh and first.subscribed == (0, 1, 2, 3, 4, 5)
    for i in range(3):
        _take(s, i)
    second = s.plan("d", 1.0, WINDOW)
    # ahead is now 3..26: blocks 0..6; only 6 is new
    assert second.subscribe == (6,)
    assert second.request is not None
    assert second.request.subscribed == (6,)
    assert second.request.fresh is False


def test_new_subscriptions_wait_for_the_next_request() -> None:
    """A plan that subscribes but cannot ask (window full) reports the block in the next request."""
    s = DownloadSession(REL)
    s.plan("d", 0.0, WINDOW)
    for i in (3, 4, 5):  # chunks that came anyway (published for another device)
        _take(s, i)
    plan = s.plan("d", 1.0, WINDOW)  # ahead: 0,1,2,6..26 -> block 6 is new; 0..2 outstanding
    assert plan.subscribe == (6,)
    assert plan.request is None
    _take(s, 0)
    req = s.plan("d", 2.0, WINDOW).request
    assert req is not None and req.indices() == [6]
    assert req.subscribed == (6,)


def test_completed_blocks_are_unsubscribed() -> None:
    s = DownloadSession(REL)
    s.plan("d", 0.0, WINDOW)
    for i in range(4):  # block 0 complete
        _take(s, i)
    plan = s.plan("d", 1.0, WINDOW)
    assert plan.unsubscribe == (0,)
    assert 0 not in s.subscribed
    assert s.plan("d", 2.0, WINDOW).unsubscribe == ()  # only once


def test_block_completed_out_of_order_is_unsubscribed_when_done() -> None:
    s = DownloadSession(REL)
    s.plan("d", 0.0, WINDOW)  # subscribed to 0..5
    for i in (4, 5, 6, 7):
        _take(s, i)
    plan = s.plan("d", 1.0, WINDOW)  # ahead: 0..3, 8..27 -> block 6 is new
    assert plan.unsubscribe == (1,)
    assert s.subscribed == {0, 2, 3, 4, 5, 6}


def test_plan_never_asks_for_held_chunks() -> None:
    s = DownloadSession(REL)
    s.plan("d", 0.0, WINDOW)
    for i in (3, 4, 5, 6):
        _take(s, i)
    for i in (0, 1, 2):
        _take(s, i)
    req = s.plan("d", 1.0, WINDOW).request
    assert req is not None and req.indices() == [7, 8, 9]


def test_plan_when_complete_unsubscribes_everything_and_asks_nothing() -> None:
    s = DownloadSession(REL)
    s.plan("d", 0.0, 20)  # subscribed to blocks 0..9
    for i in range(N_CHUNKS):
        _take(s, i)
    plan = s.plan("d", 1.0, 20)
    assert plan.request is None and plan.subscribe == ()
    assert set(plan.unsubscribe) == set(range(10))
    assert s.plan("d", 2.0, 20).unsubscribe == ()
    assert s.subscribed == frozenset()


def test_forget_subscriptions() -> None:
    s = DownloadSession(REL)
    s.plan("d", 0.0, WINDOW)
    _take(s, 0)
    s.plan("d", 1.0, WINDOW)
    s.forget_subscriptions()
    assert s.subscribed == frozenset() and s.outstanding == frozenset()
    plan = s.plan("d", 2.0, WINDOW)
    assert plan.subscribe == (0, 1, 2, 3, 4, 5, 6)  # everything wanted (ahead: 1..24), again
    assert plan.unsubscribe == ()
    req = plan.request
    assert req is not None
    assert req.fresh is True
    assert req.subscribed == (0, 1, 2, 3, 4, 5, 6)
    assert req.indices() == [1, 2, 3]  # outstanding ones asked for again
    nxt = s.plan("d", 3.0, WINDOW)
    assert nxt.request is None
    _take(s, 1)
    later = s.plan("d", 4.0, WINDOW).request
    assert later is not None and later.fresh is False and later.subscribed == ()


# --- stalls and repair ----------------------------------------------------------------------------
def test_not_stalled_without_outstanding_chunks() -> None:
    s = DownloadSession(REL, now=0.0)
    assert not s.stalled(1000.0, 5.0)
    s2 = DownloadSession(REL, held=range(N_CHUNKS))
    assert not s2.stalled(1000.0, 5.0)


def test_stalled_after_timeout_without_progress() -> None:
    s = DownloadSession(REL, now=0.0)
    s.plan("d", 10.0, WINDOW)
    assert not s.stalled(14.9, 5.0)
    assert s.stalled(15.0, 5.0)
    _take(s, 0, now=14.0)  # progress resets the clock
    assert not s.stalled(18.9, 5.0)
    assert s.stalled(19.0, 5.0)


def test_a_new_request_resets_the_stall_clock() -> None:
    s = DownloadSession(REL, now=0.0)
    s.plan("d", 0.0, WINDOW)
    _take(s, 0, now=1.0)
    s.plan("d", 4.0, WINDOW)  # asks for chunk 3
    assert not s.stalled(8.9, 5.0)
    assert s.stalled(9.0, 5.0)


def test_repair_asks_again_for_the_same_outstanding_set() -> None:
    s = DownloadSession(REL, now=0.0)
    first = s.plan("d", 0.0, WINDOW).request
    assert first is not None
    _take(s, 1, now=1.0)
    assert s.stalled(10.0, 5.0)
    req = s.repair("d", 10.0)
    assert req is not None
    assert req.repair is True
    assert set(req.indices()) == {0, 2} == set(s.outstanding)
    assert req.fresh is False and req.subscribed == ()
    assert not s.stalled(14.9, 5.0)  # re-asking restarts the clock
    assert s.stalled(15.0, 5.0)
    assert s.outstanding == {0, 2}  # repair does not add anything


def test_repair_with_nothing_outstanding() -> None:
    s = DownloadSession(REL)
    assert s.repair("d", 1.0) is None


def test_repair_after_reconnect_carries_fresh_and_new_blocks() -> None:
    s = DownloadSession(REL)
    s.plan("d", 0.0, WINDOW)
    s.forget_subscriptions()
    plan = s.plan("d", 1.0, WINDOW)
    assert plan.request is not None and plan.request.fresh
    assert s.repair("d", 9.0) is not None


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
            self.broker.publish(TOPICS.chunk_block(m.name, m.version, block), _frame(i))


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

    def on_frame(self, frame: bytes, now: float) -> None:
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
            next(d for d in devices if d.name == client).on_frame(payload, now)
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
