"""Chunk serving without a broker: requests into the scheduler, the fresh-request hold and its
askers (pruned when a release is retired), and the sender's publishing with flow control (a
chunk the client's queue refuses is put back)."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import protocol
from coordinator.chunk_serving import ChunkServer, FreshHold
from coordinator.chunkstore import ChunkSource
from coordinator.errors import ChunkSourceError
from coordinator.progress import Progress
from coordinator.registry import Registry, ReleaseRecord
from coordinator.release_cache import ReleaseCache
from tests.unit.coordinator_fakes import CHUNK, FLEET, FakeLink, add_release, make_keys

T = protocol.Topics(FLEET)


# --- the fresh hold (pure) -------------------------------------------------------------------
def test_a_lone_device_is_never_held() -> None:
    hold = FreshHold(0.3)
    hold.on_request(b"r" * 16, "d1", fresh=True, expected=frozenset({"d1"}), now=100.0)
    assert hold.remaining(100.0) <= 0


def test_a_fresh_request_holds_while_another_expected_device_has_not_asked() -> None:
    hold = FreshHold(0.3)
    rid = b"r" * 16
    hold.on_request(rid, "d1", fresh=True, expected=frozenset({"d1", "d2"}), now=100.0)
    assert hold.remaining(100.0) == pytest.approx(0.3)
    hold.on_request(rid, "d1", fresh=False, expected=frozenset({"d1", "d2"}), now=100.1)
    assert hold.remaining(100.1) == pytest.approx(0.2)  # a later request does not extend it
    hold.on_request(rid, "d2", fresh=True, expected=frozenset({"d1", "d2"}), now=100.2)
    assert hold.remaining(100.2) <= 0  # the last of the wave: nobody left to wait for
    assert hold.askers(rid) == {"d1", "d2"}


def test_askers_are_per_release_and_forgotten_with_it() -> None:
    hold = FreshHold(0.3)
    a, b = b"a" * 16, b"b" * 16
    hold.on_request(a, "d1", fresh=True, expected=frozenset({"d1", "d2"}), now=0.0)
    hold.on_request(b, "d2", fresh=True, expected=frozenset({"d1", "d2"}), now=0.0)
    assert hold.askers(a) == {"d1"} and hold.askers(b) == {"d2"} and hold.releases == 2
    hold.forget([a])
    assert hold.askers(a) == frozenset() and hold.releases == 1
    # a device asking again for a forgotten release is held for the others once more
    hold.on_request(a, "d2", fresh=True, expected=frozenset({"d1", "d2"}), now=10.0)
    assert hold.remaining(10.0) > 0


# --- the server ------------------------------------------------------------------------------
@dataclass
class Setup:
    server: ChunkServer
    record: ReleaseRecord
    progress: Progress
    online: set[str]
    stopping: threading.Event


@pytest.fixture(name="s")
def setup(tmp_path: Path) -> Iterator[Setup]:
    registry = Registry(tmp_path / "c.db")
    record = add_release(registry, make_keys(tmp_path), tmp_path)
    online: set[str] = set()
    progress, stopping = Progress(), threading.Event()
    server = ChunkServer(
        T,
        ReleaseCache(registry, FLEET),
        lambda rid: frozenset(online),
        progress,
        stopping,
        max_pending=4,
        fresh_hold=0.0,
    )
    yield Setup(server, record, progress, online, stopping)
    server.close()
    registry.close()


def request(
    record: ReleaseRecord, device: str, ranges: tuple[tuple[int, int], ...], **kw: object
) -> protocol.ChunkRequest:
    return protocol.ChunkRequest(
        device=device,
        name=record.name,
        version=record.version,
        release_id=record.short_id,
        ranges=ranges,
        **kw,  # type: ignore[arg-type]
    )


def test_requested_chunks_are_published_on_their_block(s: Setup) -> None:
    s.server.on_request(request(s.record, "d1", ((0, 3), (16, 1))))
    link = FakeLink()
    batch = s.server.next_batch(link)
    assert [(index, device) for _, index, device in batch] == [
        (0, None),
        (1, None),
        (2, None),
        (16, None),
    ]
    s.server.publish(link, batch)
    assert link.topics == [T.chunk_block("m", 1, 0)] * 3 + [T.chunk_block("m", 1, 1)]
    frames = [protocol.ChunkFrame.decode(p.payload) for p in link.published]
    assert [f.index for f in frames] == [0, 1, 2, 16]
    assert all(f.release_id == s.record.release_id[:16] for f in frames)
    blob = Path(s.record.blob_path).read_bytes()
    for frame, pub in zip(frames, link.published, strict=True):
        assert bytes(frame.payload) == blob[frame.index * CHUNK : (frame.index + 1) * CHUNK]
        assert not pub.retain
    assert s.progress.published == (4, sum(len(p.payload) for p in link.published))
    assert s.server.stats().pending == 0


def test_a_chunk_the_client_queue_refuses_is_put_back(
    s: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    s.server.on_request(request(s.record, "d1", ((0, 5),)))
    link = FakeLink(room=2)
    with caplog.at_level(logging.WARNING):
        s.server.publish(link, s.server.next_batch(link))
    assert len(link.published) == 2
    assert "MQTT client queue full, chunk 2 put back" in caplog.text
    assert s.server.stats().pending == 3 and s.progress.published[0] == 2
    link.room = None
    s.server.publish(link, s.server.next_batch(link))
    frames = [protocol.ChunkFrame.decode(p.payload).index for p in link.published]
    assert frames == [0, 1, 2, 3, 4]
    assert s.server.stats().chunks_sent == 5


def test_requests_for_unknown_or_other_builds_are_refused(s: Setup) -> None:
    unknown = protocol.ChunkRequest("d1", "m", 9, s.record.short_id, ((0, 1),))
    with pytest.raises(protocol.MalformedMessage) as exc:
        s.server.on_request(unknown)
    assert exc.value.reason == "unknown-release"
    wrong = protocol.ChunkRequest("d1", "m", 1, b"\x00" * 16, ((0, 1),))
    with pytest.raises(protocol.MalformedMessage) as exc:
        s.server.on_request(wrong)
    assert exc.value.reason == "wrong-release"
    assert s.server.stats().requests == 0


def test_askers_are_pruned_when_the_release_is_retired(s: Setup) -> None:
    s.online.update({"d1", "d2"})
    s.server.on_request(request(s.record, "d1", ((0, 2),), fresh=True))
    assert s.server.askers(s.record.short_id) == {"d1"}
    s.server.forget({s.record.short_id})
    assert s.server.askers(s.record.short_id) == frozenset()
    assert s.server.stats().pending == 0  # the scheduler forgot it too
    assert s.server.next_batch(FakeLink()) == []


def test_the_sender_holds_after_a_fresh_request_while_others_may_ask(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "c.db")
    record = add_release(registry, make_keys(tmp_path), tmp_path)
    server = ChunkServer(
        T,
        ReleaseCache(registry, FLEET),
        lambda rid: frozenset({"d1", "d2"}),
        Progress(),
        threading.Event(),
        max_pending=4,
        fresh_hold=0.5,
    )
    try:
        server.on_request(request(record, "d1", ((0, 2),), fresh=True))
        started = time.monotonic()
        assert server.next_batch(FakeLink()) == []  # held: d2 may be about to ask
        assert time.monotonic() - started >= 0.4
        server.on_request(request(record, "d2", ((0, 2),), fresh=True))
        started = time.monotonic()
        assert [i for _, i, _ in server.next_batch(FakeLink())] == [0, 1]  # the wave is in
        assert time.monotonic() - started < 0.4
    finally:
        server.close()
        registry.close()


def test_the_sender_thread_publishes_and_stops(s: Setup) -> None:
    link = FakeLink()
    sender = threading.Thread(target=s.server.serve, args=(link,))
    sender.start()
    try:
        s.server.on_request(request(s.record, "d1", ((0, 10),)))
        assert s.progress.wait_until(lambda: s.progress.published[0] == 10, timeout=10)
    finally:
        s.stopping.set()
        s.server.wake()
        sender.join(10)
    assert not sender.is_alive()


def test_compressible_chunks_go_out_compressed_once_and_raw_to_an_older_device(
    tmp_path: Path,
) -> None:
    registry = Registry(tmp_path / "c.db")
    half = bytes(CHUNK // 2)
    data = b"".join(half + os.urandom(CHUNK // 2) for _ in range(8))
    record = add_release(registry, make_keys(tmp_path), tmp_path, data=data)
    server = ChunkServer(
        T,
        ReleaseCache(registry, FLEET),
        lambda _rid: frozenset(),
        Progress(),
        threading.Event(),
        max_pending=4,
        fresh_hold=0.0,
    )
    try:
        link = FakeLink()
        zstd = ("zstd",)
        server.on_request(request(record, "new", ((0, 8),), codecs=zstd))
        server.publish(link, server.next_batch(link))
        server.on_request(request(record, "new", ((0, 2),), codecs=zstd, repair=True))
        server.publish(link, server.next_batch(link))  # resent to "new" alone: still compressed
        server.on_request(request(record, "old", ((0, 1),), repair=True))
        server.publish(link, server.next_batch(link))  # resent to "old": raw
        frames = [protocol.ChunkFrame.decode(p.payload) for p in link.published]
        assert [f.compressed for f in frames] == [True] * 8 + [True] * 2 + [False]
        assert link.topics[-1] == T.resend("old")
        for f in frames:
            chunk = data[f.index * CHUNK : (f.index + 1) * CHUNK]
            got = (
                protocol.decompress_chunk(f.payload, CHUNK, f.index) if f.compressed else f.payload
            )
            assert bytes(got) == chunk
            assert not f.compressed or len(f.payload) < 0.6 * CHUNK
        stats = server.codec_stats()
        assert stats.compressions == 8 and stats.compressed_sent == 10 and stats.raw_sent == 1
    finally:
        server.close()
        registry.close()


def test_chunks_are_read_into_their_frames_and_a_short_blob_is_refused(s: Setup) -> None:
    blob = Path(s.record.blob_path).read_bytes()
    last = s.record.n_chunks - 1
    with ChunkSource() as chunks:
        for index in (0, last):
            frame = chunks.read_frame(s.record, index)
            data = blob[index * CHUNK : (index + 1) * CHUNK]
            assert frame == protocol.ChunkFrame.encode(index, s.record.release_id, data)
        with pytest.raises(IndexError):
            chunks.read_frame(s.record, last + 1)
        Path(s.record.blob_path).write_bytes(blob[: last * CHUNK + 1])
        with pytest.raises(ChunkSourceError, match="is short"):
            chunks.read_frame(s.record, last)
