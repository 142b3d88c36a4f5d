"""The edge's download state machine (sans-IO): accepting, committing and finishing chunks, and
resuming from the chunks already on disk."""

from __future__ import annotations

import hashlib
import random

import pytest

from protocol import (
    ChunkFrame,
    ChunkRejected,
    ChunkRequest,
    DigestMismatch,
    DownloadSession,
    MalformedMessage,
    Phase,
    SequenceError,
    VerifiedChunk,
)
from tests.support.download_release import (
    CHUNK,
    DATA,
    N_CHUNKS,
    PIECES,
    REL,
    SIZE,
    WINDOW,
    chunk_frame,
    make_release,
    take_chunk,
)


# --- accept / commit / finish -------------------------------------------------------------------
def test_full_flow_to_verified() -> None:
    s = DownloadSession(REL)
    assert s.phase is Phase.DOWNLOADING
    buf = bytearray(SIZE)
    for i in range(N_CHUNKS):
        assert s.phase is Phase.DOWNLOADING
        take_chunk(s, i, now=float(i), buf=buf)
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


def test_every_chunk_verified_is_enough_to_finish() -> None:
    """Without a whole-file digest: each chunk matched its signed hash on the way in."""
    s = DownloadSession(REL)
    for i in reversed(range(N_CHUNKS)):
        with pytest.raises(SequenceError):
            s.finish()
        take_chunk(s, i)
    s.finish()
    assert s.phase is Phase.VERIFIED


def test_bytes_held_counts_the_short_last_chunk() -> None:
    s = DownloadSession(REL)
    assert s.bytes_held == 0
    take_chunk(s, N_CHUNKS - 1)
    assert s.bytes_held == 1000
    take_chunk(s, 0)
    assert s.bytes_held == CHUNK + 1000
    take_chunk(s, 1)
    assert s.bytes_held == 2 * CHUNK + 1000


def test_commit_without_accept_is_a_sequence_error() -> None:
    s = DownloadSession(REL)
    with pytest.raises(SequenceError):
        s.commit(VerifiedChunk(0, 0, memoryview(PIECES[0])), 1.0)
    assert s.held_count == 0


def test_commit_twice_is_a_sequence_error() -> None:
    s = DownloadSession(REL)
    vc = s.accept(chunk_frame(0))
    assert vc is not None
    s.commit(vc, 1.0)
    with pytest.raises(SequenceError):
        s.commit(vc, 1.0)
    assert s.held_count == 1


def test_finish_before_complete_is_a_sequence_error() -> None:
    s = DownloadSession(REL)
    for i in range(N_CHUNKS - 1):
        take_chunk(s, i)
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
    take_chunk(s, 3)
    assert s.accept(chunk_frame(3)) is None
    assert s.accept(chunk_frame(3)) is None
    assert (s.received, s.duplicates, s.held_count) == (3, 2, 1)


def test_rejected_chunk_is_not_counted_as_received() -> None:
    s = DownloadSession(REL)
    bad = bytearray(chunk_frame(2))
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
    take_chunk(s, 2)  # the genuine chunk is still welcome


def test_chunk_of_another_release_is_refused() -> None:
    other = make_release(block_chunks=8)  # same bytes, another manifest body: another release id
    assert other.id != REL.id
    s = DownloadSession(REL)
    with pytest.raises(ChunkRejected) as exc:
        s.accept(chunk_frame(0, release=other))
    assert exc.value.reason == "wrong-release"


def test_out_of_order_chunks() -> None:
    s = DownloadSession(REL)
    order = list(range(N_CHUNKS))
    random.Random(7).shuffle(order)
    buf = bytearray(SIZE)
    for i in order:
        take_chunk(s, i, buf=buf)
    assert s.phase is Phase.COMPLETE
    s.finish(hashlib.sha256(buf).digest())
    assert s.phase is Phase.VERIFIED


def test_accepted_chunks_may_be_committed_in_any_order() -> None:
    s = DownloadSession(REL)
    a, b = s.accept(chunk_frame(0)), s.accept(chunk_frame(1))
    assert a is not None and b is not None
    s.commit(b, 1.0)
    s.commit(a, 2.0)
    assert s.held_indices() == [0, 1]


def test_release_accepted_forgets_the_chunk() -> None:
    s = DownloadSession(REL)
    plan = s.plan("d", 0.0, WINDOW)
    assert plan.request is not None and 0 in plan.request.indices()
    vc = s.accept(chunk_frame(0))
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
        take_chunk(s, i)
    with pytest.raises(DigestMismatch) as exc:
        s.finish(hashlib.sha256(b"something else").digest())
    assert exc.value.reason == "digest-mismatch"
    assert s.phase is Phase.DOWNLOADING
    assert s.held_count == 0 and s.bytes_held == 0
    assert s.missing() == list(range(N_CHUNKS))
    # it starts over: chunk 0 is new again, and the first plan asks from the beginning
    plan = s.plan("d", 5.0, WINDOW)
    assert plan.request is not None and plan.request.indices() == [0, 1, 2]
    take_chunk(s, 0)
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
        take_chunk(s, i)
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
            take_chunk(s, i, now)
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
    assert s.accept(chunk_frame(4)) is None
    assert s.duplicates == 1
