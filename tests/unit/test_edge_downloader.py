"""The edge's downloader on a temp dir and an in-memory wire: a whole download, resume, the
write back-off after storage errors, starting over, stalls, late resends."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

import edge_node.storage as storage
from edge_node.config import EdgeConfig
from edge_node.downloader import Downloader, write_backoff
from edge_node.errors import StorageError
from edge_node.storage import FINAL
from protocol import ChunkRequest, Target, UpdateState, VerifiedChunk, VerifiedManifest
from tests.support.edge_fakes import CHUNK, DEVICE, TOPICS, Room, frame, pieces, release, room

CHUNKS = pieces(8)
REL = release(chunks=CHUNKS)


@dataclass
class Setup:
    room: Room
    downloader: Downloader

    def requests(self) -> list[ChunkRequest]:
        return [ChunkRequest.decode(p) for p in self.room.wire.on(TOPICS.request(DEVICE))]

    def chunk(self, i: int, rel: VerifiedManifest = REL) -> object:
        topic = TOPICS.chunk_block(rel.manifest.name, rel.manifest.version, i // 4)
        return self.downloader.on_chunk(topic, frame(rel, i, CHUNKS))


def setup(tmp_path: Path, **config: object) -> Setup:
    r = room(tmp_path / "data")
    edge = EdgeConfig("mqtt://unused", DEVICE, r.data, Path("unused"), **config)  # type: ignore[arg-type]
    d = Downloader(
        edge, topics=TOPICS, clock=r.clock, wire=r.wire, slots=r.slots, reporter=r.reporter
    )
    return Setup(r, d)


def fail_writes(s: Setup) -> list[int]:
    """Make the part file's writes fail; returns the indices tried."""
    tried: list[int] = []
    dl = s.room.slots.download
    assert dl is not None

    def refuse(chunk: VerifiedChunk) -> None:
        tried.append(chunk.index)
        raise StorageError("writing chunk: [Errno 28] No space left on device")

    dl.part.write = refuse  # type: ignore[method-assign]
    return tried


def heal_writes(s: Setup) -> None:
    dl = s.room.slots.download
    assert dl is not None
    del dl.part.write  # the class's own again


def test_a_whole_download_is_verified_and_handed_over(tmp_path: Path) -> None:
    s = setup(tmp_path, window=4)
    assert s.downloader.begin(REL) is None
    assert s.room.wire.subscribed == [TOPICS.chunk_block("m", 2, 0), TOPICS.chunk_block("m", 2, 1)]
    assert s.requests()[0].indices() == [0, 1, 2, 3]
    results = [s.chunk(i) for i in range(8)]
    assert results[:-1] == [None] * 7
    verified = results[-1]
    assert verified is not None and verified.release is REL  # type: ignore[attr-defined]
    path: Path = verified.path  # type: ignore[attr-defined]
    assert path.name == FINAL and path.read_bytes() == b"".join(CHUNKS)
    assert s.room.slots.download is None
    assert sorted(s.room.wire.unsubscribed) == sorted(s.room.wire.subscribed)
    states = [st.state for st in s.room.wire.states()]
    assert states[0] == UpdateState.DOWNLOADING and states[-2:] == [
        UpdateState.VERIFYING,
        UpdateState.VERIFIED,
    ]
    assert [e.event for e, _ in s.room.events.got] == ["downloading", "verified"]


def test_a_download_resumes_from_the_part_file(tmp_path: Path) -> None:
    first = setup(tmp_path)
    first.downloader.begin(REL)
    for i in (0, 1, 2, 5):
        first.chunk(i)
    first.downloader.close()  # a stop: synced and closed

    again = setup(tmp_path)
    again.downloader.begin(REL)
    resumed = again.room.events.named("resumed")
    assert [e.detail for e in resumed] == ["4/8 chunks on disk"]
    assert again.requests()[0].indices() == [3, 4, 6, 7]


def test_a_release_verified_on_disk_is_handed_over_without_downloading(tmp_path: Path) -> None:
    first = setup(tmp_path)
    first.downloader.begin(REL)
    verified = [first.chunk(i) for i in range(8)][-1]
    assert verified is not None

    again = setup(tmp_path)
    assert again.downloader.begin(REL) == verified
    assert again.room.wire.published == [] and again.room.slots.download is None


def test_a_corrupt_verified_file_is_repaired_by_fetching_only_its_damaged_chunks(
    tmp_path: Path,
) -> None:
    first = setup(tmp_path)
    first.downloader.begin(REL)
    verified = [first.chunk(i) for i in range(8)][-1]
    assert verified is not None
    path: Path = verified.path  # type: ignore[attr-defined]
    rotten = bytearray(path.read_bytes())
    for offset in (CHUNK + 7, 6 * CHUNK + 300):  # bit rot in chunks 1 and 6
        rotten[offset] ^= 0x10
    path.write_bytes(bytes(rotten))

    again = setup(tmp_path)
    assert again.downloader.begin(REL) is None  # no longer verified: repaired
    (repairing,) = again.room.events.named("repairing")
    assert repairing.detail == "2 of 8 chunks no longer match their hashes: fetching them again"
    assert not again.room.events.named("resumed") and not path.exists()
    assert [r.indices() for r in again.requests()] == [[1, 6]]
    assert again.chunk(1) is None
    repaired = again.chunk(6)
    assert repaired is not None and repaired.path.read_bytes() == b"".join(CHUNKS)  # type: ignore[attr-defined]


def test_the_write_backoff_doubles_to_a_cap() -> None:
    assert [write_backoff(n) for n in (1, 2, 3, 7, 8, 20)] == [0.5, 1.0, 2.0, 30.0, 30.0, 30.0]


def test_a_storage_error_pauses_writing_then_the_download_goes_on(tmp_path: Path) -> None:
    s = setup(tmp_path, window=4)
    s.downloader.begin(REL)
    tried = fail_writes(s)
    s.chunk(0)
    assert tried == [0]
    state = s.room.wire.states()[-1]
    assert state.state == UpdateState.FAILED and state.reason is not None
    assert state.reason.startswith("write-failed: ")
    (failed,) = s.room.events.named("write-failed")
    assert (failed.reason, failed.model, failed.version) == ("write-failed", "m", 2)

    s.chunk(1)  # within the back-off: dropped, not written, not another failure
    assert tried == [0] and len(s.room.events.named("write-failed")) == 1
    asked = len(s.requests())
    s.downloader.pump()  # nothing is asked for during the back-off
    assert len(s.requests()) == asked
    heal_writes(s)
    s.room.clock.now += 0.4
    s.downloader.tick(s.room.clock.now)
    assert len(s.requests()) == asked  # still paused
    s.room.clock.now += 0.1
    s.downloader.tick(s.room.clock.now)
    again = s.requests()[-1]
    assert again.indices() == [0, 1] and again.repair  # what was dropped, asked for again
    for i in range(8):
        s.chunk(i)
    assert s.room.events.named("verified")


def test_failures_in_a_row_back_off_longer_and_a_write_that_succeeds_resets(
    tmp_path: Path,
) -> None:
    s = setup(tmp_path)
    s.downloader.begin(REL)
    fail_writes(s)
    s.chunk(0)
    s.room.clock.now += 0.5
    s.chunk(1)  # the second failure in a row: 1 s
    s.room.clock.now += 0.9
    s.chunk(2)
    assert len(s.room.events.named("write-failed")) == 2  # chunk 2 came within the back-off
    s.room.clock.now += 0.1
    heal_writes(s)
    s.chunk(3)
    fail_writes(s)
    s.chunk(4)  # a failure after a success: 0.5 s again
    s.room.clock.now += 0.5
    s.chunk(5)
    assert len(s.room.events.named("write-failed")) == 4


def test_a_part_file_that_cannot_be_finished_is_started_over_after_the_backoff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = setup(tmp_path)
    s.downloader.begin(REL)
    for i in range(7):
        s.chunk(i)
    dl = s.room.slots.download
    assert dl is not None

    def read_only() -> Path:
        raise StorageError("finalizing model.onnx: [Errno 30] Read-only file system")

    monkeypatch.setattr(dl.part, "finalize", read_only)
    assert s.chunk(7) is None
    assert s.room.slots.download is None
    assert s.room.slots.pending == ("m", Target(2, REL.id, variant=None))
    assert not s.downloader.tick(s.room.clock.now + 0.4)
    assert s.downloader.tick(s.room.clock.now + 0.5)  # choose it again now
    assert not s.downloader.tick(s.room.clock.now + 0.6)  # once


def test_completion_trusts_the_verified_chunks_and_reads_nothing_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every chunk matched its signed hash on arrival: the last one makes the release verified
    without the file being read back or hashed whole (docs/PROTOCOL.md, "Verified")."""
    s = setup(tmp_path, window=4)
    s.downloader.begin(REL)
    for i in range(7):
        s.chunk(i)

    def refuse(*args: object) -> bytes:
        raise AssertionError("the part file was read back")

    monkeypatch.setattr(storage.os, "pread", refuse)
    verified = s.chunk(7)
    assert verified is not None and verified.release.id == REL.id
    assert verified.path.read_bytes() == b"".join(CHUNKS)
    assert s.room.wire.states()[-1].state == UpdateState.VERIFIED


def test_a_stalled_download_asks_again_for_what_is_outstanding(tmp_path: Path) -> None:
    s = setup(tmp_path, window=4, stall_timeout=10.0)
    s.downloader.begin(REL)
    s.chunk(0)
    s.downloader.tick(s.room.clock.now + 9.9)
    assert s.downloader.stalls == 0
    s.downloader.tick(s.room.clock.now + 10.0)
    assert s.downloader.stalls == 1
    repair = s.requests()[-1]
    assert repair.repair and repair.indices() == [1, 2, 3]


def test_late_resends_of_a_finished_release_are_dropped_quietly(tmp_path: Path) -> None:
    s = setup(tmp_path)
    s.downloader.begin(REL)
    for i in range(8):
        s.chunk(i)
    # the next one downloads (other bytes: the same ones would be copied from m@2, chunk reuse)
    s.downloader.begin(release(version=3, chunks=pieces(8, seed=b"next")))
    resend = TOPICS.resend(DEVICE)
    assert s.downloader.on_resend(resend, frame(REL, 3, CHUNKS)) is None
    assert s.downloader.late_resends == 1 and s.room.reporter.rejections == {}
    # a resend of a release never seen here is checked like any chunk, and refused
    stranger = release(version=9, chunks=CHUNKS)
    s.downloader.on_resend(resend, frame(stranger, 3, CHUNKS))
    assert s.downloader.late_resends == 1 and sum(s.room.reporter.rejections.values()) == 1
