"""The download state machine's plans (sans-IO): which blocks to subscribe to and which chunks to
ask for, within the window; stalls and their repair."""

from __future__ import annotations

from protocol import ChunkRequest, DownloadSession
from protocol.download import LOOKAHEAD_WINDOWS
from tests.support.download_release import N_CHUNKS, REL, WINDOW, take_chunk


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
    take_chunk(s, 1)
    nxt = s.plan("d", 2.0, WINDOW)
    assert nxt.request is not None and nxt.request.indices() == [3]
    assert len(s.outstanding) == WINDOW


def test_plan_asks_in_batches_of_half_a_window() -> None:
    s = DownloadSession(REL)
    first = s.plan("d", 0.0, 8).request
    assert first is not None and first.indices() == list(range(8))
    for i in range(3):
        take_chunk(s, i)
        assert s.plan("d", 1.0, 8).request is None  # 3 free slots: not yet worth a request
    take_chunk(s, 3)
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
        take_chunk(s, i)
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
        take_chunk(s, i)
    plan = s.plan("d", 1.0, WINDOW)  # ahead: 0,1,2,6..26 -> block 6 is new; 0..2 outstanding
    assert plan.subscribe == (6,)
    assert plan.request is None
    take_chunk(s, 0)
    req = s.plan("d", 2.0, WINDOW).request
    assert req is not None and req.indices() == [6]
    assert req.subscribed == (6,)


def test_completed_blocks_are_unsubscribed() -> None:
    s = DownloadSession(REL)
    s.plan("d", 0.0, WINDOW)
    for i in range(4):  # block 0 complete
        take_chunk(s, i)
    plan = s.plan("d", 1.0, WINDOW)
    assert plan.unsubscribe == (0,)
    assert 0 not in s.subscribed
    assert s.plan("d", 2.0, WINDOW).unsubscribe == ()  # only once


def test_block_completed_out_of_order_is_unsubscribed_when_done() -> None:
    s = DownloadSession(REL)
    s.plan("d", 0.0, WINDOW)  # subscribed to 0..5
    for i in (4, 5, 6, 7):
        take_chunk(s, i)
    plan = s.plan("d", 1.0, WINDOW)  # ahead: 0..3, 8..27 -> block 6 is new
    assert plan.unsubscribe == (1,)
    assert s.subscribed == {0, 2, 3, 4, 5, 6}


def test_plan_never_asks_for_held_chunks() -> None:
    s = DownloadSession(REL)
    s.plan("d", 0.0, WINDOW)
    for i in (3, 4, 5, 6):
        take_chunk(s, i)
    for i in (0, 1, 2):
        take_chunk(s, i)
    req = s.plan("d", 1.0, WINDOW).request
    assert req is not None and req.indices() == [7, 8, 9]


def test_plan_when_complete_unsubscribes_everything_and_asks_nothing() -> None:
    s = DownloadSession(REL)
    s.plan("d", 0.0, 20)  # subscribed to blocks 0..9
    for i in range(N_CHUNKS):
        take_chunk(s, i)
    plan = s.plan("d", 1.0, 20)
    assert plan.request is None and plan.subscribe == ()
    assert set(plan.unsubscribe) == set(range(10))
    assert s.plan("d", 2.0, 20).unsubscribe == ()
    assert s.subscribed == frozenset()


def test_forget_subscriptions() -> None:
    s = DownloadSession(REL)
    s.plan("d", 0.0, WINDOW)
    take_chunk(s, 0)
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
    take_chunk(s, 1)
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
    take_chunk(s, 0, now=14.0)  # progress resets the clock
    assert not s.stalled(18.9, 5.0)
    assert s.stalled(19.0, 5.0)


def test_a_new_request_resets_the_stall_clock() -> None:
    s = DownloadSession(REL, now=0.0)
    s.plan("d", 0.0, WINDOW)
    take_chunk(s, 0, now=1.0)
    s.plan("d", 4.0, WINDOW)  # asks for chunk 3
    assert not s.stalled(8.9, 5.0)
    assert s.stalled(9.0, 5.0)


def test_repair_asks_again_for_the_same_outstanding_set() -> None:
    s = DownloadSession(REL, now=0.0)
    first = s.plan("d", 0.0, WINDOW).request
    assert first is not None
    take_chunk(s, 1, now=1.0)
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
