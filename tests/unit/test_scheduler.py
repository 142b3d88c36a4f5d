"""The coalescing rule of docs/PROTOCOL.md ("Chunk request"), one behaviour per test.

Each test is built so that it fails if the rule it names is removed: e.g. the coalescing test
asks again *after* the chunks were handed out (so the pending-set dedup cannot hide a missing
rule), and the resend tests would coalesce if subscription times were ignored.
"""

from __future__ import annotations

import pytest

from coordinator.scheduler import ChunkScheduler, Scheduled
from protocol import ChunkRequest

RID = bytes(range(16))
OTHER = bytes(range(16, 32))
N_CHUNKS = 40
BLOCK = 16  # blocks: 0 -> chunks 0..15, 1 -> 16..31, 2 -> 32..39


def req(
    device: str,
    ranges: list[tuple[int, int]],
    *,
    subscribed: tuple[int, ...] = (),
    fresh: bool = False,
    repair: bool = False,
    rid: bytes = RID,
) -> ChunkRequest:
    return ChunkRequest(
        device=device,
        name="m",
        version=1,
        release_id=rid,
        ranges=tuple(ranges),
        subscribed=subscribed,
        fresh=fresh,
        repair=repair,
    )


def drain(s: ChunkScheduler) -> list[tuple[bytes, int]]:
    """(release, chunk) of everything due, wherever it goes (block or one device)."""
    return [(rid, index) for rid, index, _ in s.next_batch(10_000)]


def drain_all(s: ChunkScheduler) -> list[Scheduled]:
    return s.next_batch(10_000)


def chunks(batch: list[tuple[bytes, int]]) -> list[int]:
    return [index for _, index in batch]


def test_a_request_is_scheduled_in_ascending_order_once() -> None:
    s = ChunkScheduler()
    s.on_request(req("a", [(5, 3), (0, 2), (6, 1)], subscribed=(0,), fresh=True), N_CHUNKS, BLOCK)
    assert chunks(drain(s)) == [0, 1, 5, 6, 7]
    assert drain(s) == []
    assert s.stats().chunks_sent == 5


def test_two_devices_subscribed_before_the_send_cause_one_publish() -> None:
    s = ChunkScheduler()
    s.on_request(req("a", [], subscribed=(0,), fresh=True), N_CHUNKS, BLOCK)
    s.on_request(req("b", [], subscribed=(0,), fresh=True), N_CHUNKS, BLOCK)
    s.on_request(req("a", [(0, 8)]), N_CHUNKS, BLOCK)
    assert chunks(drain(s)) == list(range(8))
    # b subscribed before those chunks were handed out: they are on their way to b as well.
    s.on_request(req("b", [(0, 8)]), N_CHUNKS, BLOCK)
    assert drain(s) == []
    stats = s.stats()
    assert stats.chunks_coalesced == 8
    assert stats.chunks_sent == 8


def test_requests_before_the_send_share_the_pending_publish() -> None:
    s = ChunkScheduler()
    s.on_request(req("a", [(0, 4)], subscribed=(0,), fresh=True), N_CHUNKS, BLOCK)
    s.on_request(req("b", [(2, 4)], subscribed=(0,), fresh=True), N_CHUNKS, BLOCK)
    assert chunks(drain(s)) == [0, 1, 2, 3, 4, 5]


def test_a_device_that_subscribed_after_the_send_gets_a_resend() -> None:
    s = ChunkScheduler()
    s.on_request(req("a", [(0, 4)], subscribed=(0,), fresh=True), N_CHUNKS, BLOCK)
    assert chunks(drain(s)) == [0, 1, 2, 3]
    # b joins the block only now: the earlier publish did not reach it.
    s.on_request(req("b", [(0, 4)], subscribed=(0,), fresh=True), N_CHUNKS, BLOCK)
    assert chunks(drain(s)) == [0, 1, 2, 3]
    assert s.stats().chunks_coalesced == 0


def test_a_device_that_never_reported_the_subscription_gets_a_resend() -> None:
    s = ChunkScheduler()
    s.on_request(req("a", [(0, 4)], subscribed=(0,), fresh=True), N_CHUNKS, BLOCK)
    drain(s)
    s.on_request(req("b", [(0, 4)], fresh=True), N_CHUNKS, BLOCK)  # no block listed
    assert chunks(drain(s)) == [0, 1, 2, 3]


def test_the_subscription_is_per_block() -> None:
    s = ChunkScheduler()
    s.on_request(req("a", [], subscribed=(0,), fresh=True), N_CHUNKS, BLOCK)
    s.on_request(req("x", [(14, 4)], subscribed=(0, 1), fresh=True), N_CHUNKS, BLOCK)
    drain(s)
    # a listens to block 0 only: 14 and 15 are on their way, 16 and 17 (block 1) are not.
    s.on_request(req("a", [(14, 4)]), N_CHUNKS, BLOCK)
    assert chunks(drain(s)) == [16, 17]


def test_the_send_is_stamped_when_handed_out_not_when_requested() -> None:
    s = ChunkScheduler()
    s.on_request(req("a", [(0, 2)], subscribed=(0,), fresh=True), N_CHUNKS, BLOCK)
    # b subscribes while the chunks are still pending, i.e. before they are published.
    s.on_request(req("b", [], subscribed=(0,), fresh=True), N_CHUNKS, BLOCK)
    assert chunks(drain(s)) == [0, 1]
    s.on_request(req("b", [(0, 2)]), N_CHUNKS, BLOCK)
    assert drain(s) == []


def test_repair_always_resends() -> None:
    s = ChunkScheduler()
    s.on_request(req("a", [(0, 4)], subscribed=(0,), fresh=True), N_CHUNKS, BLOCK)
    drain(s)
    s.on_request(req("a", [(0, 4)], repair=True), N_CHUNKS, BLOCK)
    assert chunks(drain(s)) == [0, 1, 2, 3]
    s.on_request(req("a", [(0, 4)]), N_CHUNKS, BLOCK)  # the same, without repair: coalesced
    assert drain(s) == []


def test_fresh_forgets_the_earlier_subscriptions() -> None:
    s = ChunkScheduler()
    s.on_request(req("a", [(0, 4)], subscribed=(0,), fresh=True), N_CHUNKS, BLOCK)
    drain(s)
    # a reconnected with a new session: its subscription to block 0 is gone, so what was sent
    # after it is not on its way any more.
    s.on_request(req("a", [(0, 4)], fresh=True), N_CHUNKS, BLOCK)
    assert chunks(drain(s)) == [0, 1, 2, 3]


def test_fresh_only_affects_the_device_that_sent_it() -> None:
    s = ChunkScheduler()
    s.on_request(req("a", [], subscribed=(0,), fresh=True), N_CHUNKS, BLOCK)
    s.on_request(req("b", [(0, 4)], subscribed=(0,), fresh=True), N_CHUNKS, BLOCK)
    drain(s)
    s.on_request(req("b", [(8, 1)], fresh=True), N_CHUNKS, BLOCK)
    drain(s)
    s.on_request(req("a", [(0, 4)]), N_CHUNKS, BLOCK)
    assert drain(s) == []


def test_out_of_range_chunks_are_ignored_and_counted() -> None:
    s = ChunkScheduler()
    s.on_request(req("a", [(38, 5), (100, 2)], subscribed=(2,), fresh=True), N_CHUNKS, BLOCK)
    assert chunks(drain(s)) == [38, 39]
    stats = s.stats()
    assert stats.chunks_out_of_range == 5
    assert stats.chunks_requested == 7


def test_a_single_request_adds_at_most_the_cap() -> None:
    s = ChunkScheduler(max_request_chunks=10)
    s.on_request(req("a", [(0, 8), (20, 8)], fresh=True), N_CHUNKS, BLOCK)
    assert chunks(drain(s)) == [*range(8), 20, 21]
    assert s.stats().chunks_dropped == 6
    s.on_request(req("a", [(22, 6)]), N_CHUNKS, BLOCK)  # asking again gets the rest
    assert chunks(drain(s)) == list(range(22, 28))


def test_the_default_cap_is_256() -> None:
    s = ChunkScheduler()
    s.on_request(req("a", [(0, 300)]), 400, BLOCK)
    assert len(drain(s)) == 256
    assert s.stats().chunks_dropped == 44


def test_batches_are_bounded_and_take_turns_across_releases() -> None:
    s = ChunkScheduler()
    s.on_request(req("a", [(0, 6)], fresh=True), N_CHUNKS, BLOCK)
    s.on_request(req("b", [(10, 2)], fresh=True, rid=OTHER), N_CHUNKS, BLOCK)
    first = s.next_batch(3)
    assert first == [(RID, 0, None), (OTHER, 10, None), (RID, 1, None)]
    assert drain(s) == [(OTHER, 11), (RID, 2), (RID, 3), (RID, 4), (RID, 5)]
    assert not s.has_pending


def test_requeue_puts_a_chunk_back() -> None:
    s = ChunkScheduler()
    s.on_request(req("a", [(0, 2)], subscribed=(0,), fresh=True), N_CHUNKS, BLOCK)
    batch = drain(s)
    s.requeue(RID, 1)
    assert drain(s) == [(RID, 1)]
    assert s.stats().chunks_sent == len(batch)


def test_forget_drops_a_release() -> None:
    s = ChunkScheduler()
    s.on_request(req("a", [(0, 2)], fresh=True), N_CHUNKS, BLOCK)
    s.on_request(req("b", [(0, 2)], fresh=True, rid=OTHER), N_CHUNKS, BLOCK)
    s.forget([RID])
    assert drain(s) == [(OTHER, 0), (OTHER, 1)]


def test_counters() -> None:
    s = ChunkScheduler()
    s.on_request(req("a", [(0, 2)], subscribed=(0,), fresh=True), N_CHUNKS, BLOCK)
    s.on_request(req("a", [(2, 2)]), N_CHUNKS, BLOCK)
    s.on_request(req("b", [(0, 2)]), N_CHUNKS, BLOCK)
    stats = s.stats()
    assert stats.requests == 3
    assert stats.device_requests == {"a": 2, "b": 1}
    assert stats.chunks_requested == 6
    assert stats.pending == 4


def test_the_cap_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ChunkScheduler(max_request_chunks=0)


def test_a_resend_for_one_device_goes_to_that_device_only() -> None:
    """A chunk that already went out on its block, asked again by one device (a late joiner, or
    one whose copy was lost in a cut), is sent to that device's own topic: the others on the
    block had it already."""
    s = ChunkScheduler()
    s.on_request(req("a", [(0, 4)], subscribed=(0,), fresh=True), N_CHUNKS, BLOCK)
    assert chunks(drain(s)) == [0, 1, 2, 3]
    s.on_request(req("b", [(1, 2)], subscribed=(0,), fresh=True), N_CHUNKS, BLOCK)
    s.on_request(req("a", [(3, 1)], repair=True), N_CHUNKS, BLOCK)
    assert drain_all(s) == [(RID, 1, "b"), (RID, 2, "b"), (RID, 3, "a")]
    assert s.stats().chunks_direct == 3


def test_a_direct_resend_does_not_count_as_sent_on_the_block() -> None:
    """After a direct resend to b, c (subscribed to the block before it) still gets the chunk:
    the direct send did not reach it."""
    s = ChunkScheduler()
    s.on_request(req("a", [(0, 1)], subscribed=(0,), fresh=True), N_CHUNKS, BLOCK)
    drain(s)
    s.on_request(req("c", [], subscribed=(0,), fresh=True), N_CHUNKS, BLOCK)
    s.on_request(req("b", [(0, 1)], subscribed=(0,), fresh=True), N_CHUNKS, BLOCK)
    assert drain_all(s) == [(RID, 0, "b")]
    s.on_request(req("c", [(0, 1)]), N_CHUNKS, BLOCK)
    assert drain_all(s) == [(RID, 0, "c")]


def test_a_resend_asked_for_by_two_devices_goes_to_the_block_once() -> None:
    s = ChunkScheduler()
    s.on_request(req("a", [(0, 2)], subscribed=(0,), fresh=True), N_CHUNKS, BLOCK)
    drain(s)
    s.on_request(req("b", [(0, 2)], subscribed=(0,), fresh=True), N_CHUNKS, BLOCK)
    s.on_request(req("c", [(1, 1)], subscribed=(0,), fresh=True), N_CHUNKS, BLOCK)
    assert drain_all(s) == [(RID, 0, "b"), (RID, 1, None)]


def test_a_requeued_direct_resend_keeps_its_device() -> None:
    s = ChunkScheduler()
    s.on_request(req("a", [(0, 1)], subscribed=(0,), fresh=True), N_CHUNKS, BLOCK)
    drain(s)
    s.on_request(req("b", [(0, 1)], subscribed=(0,), fresh=True), N_CHUNKS, BLOCK)
    assert drain_all(s) == [(RID, 0, "b")]
    s.requeue(RID, 0, "b")
    assert s.stats().chunks_direct == 0
    assert drain_all(s) == [(RID, 0, "b")]
    assert s.stats().chunks_direct == 1
