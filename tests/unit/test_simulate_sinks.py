"""Where virtual devices put verified chunks: in memory (hashed as they stream in, bounded) or
on disk, laid out exactly as the edge lays out its data directory."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from edge_node.errors import StorageError
from edge_node.storage import FINAL, release_dir
from modelcast.simulate.sinks import MemorySink, disk_sinks
from protocol import DownloadSession, VerifiedChunk
from tests.support.edge_fakes import CHUNK, frame, pieces, release


def chunk(i: int, data: list[bytes]) -> VerifiedChunk:
    return VerifiedChunk(i, i * CHUNK, memoryview(data[i]))


def test_memory_hashes_the_whole_file_whatever_the_order() -> None:
    data = pieces(6)
    rel = release(chunks=data)
    sink = MemorySink(rel.manifest)
    for i in (0, 2, 1, 5, 4, 3):
        sink.write(chunk(i, data))
    assert sink.sha256() == hashlib.sha256(b"".join(data)).digest() == rel.manifest.sha256
    assert sink.waiting_bytes == 0


def test_memory_refuses_a_chunk_beyond_what_it_may_keep_waiting() -> None:
    data = pieces(6)
    sink = MemorySink(release(chunks=data).manifest, max_waiting=2 * CHUNK)
    sink.write(chunk(1, data))
    sink.write(chunk(2, data))
    with pytest.raises(StorageError):
        sink.write(chunk(3, data))  # asked for again later, as a repair
    assert sink.waiting_bytes == 2 * CHUNK
    sink.write(chunk(0, data))  # the prefix catches up: nothing waits
    assert sink.waiting_bytes == 0


def test_memory_will_not_give_a_hash_before_every_chunk_is_in() -> None:
    data = pieces(3)
    sink = MemorySink(release(chunks=data).manifest)
    sink.write(chunk(0, data))
    with pytest.raises(StorageError):
        sink.sha256()


def test_disk_writes_the_edge_s_layout_and_resumes(tmp_path: Path) -> None:
    data = pieces(5)
    rel = release(version=3, chunks=data)
    open_sink = disk_sinks(tmp_path, "sim-7")
    sink = open_sink(rel)
    session = DownloadSession(rel, sink.recover())
    for i in (0, 1):
        accepted = session.accept(frame(rel, i, data))
        assert accepted is not None
        sink.write(accepted)
        session.commit(accepted, 0.0)
    sink.close()
    again = open_sink(rel)
    assert again.recover() == [0, 1]  # hashed again from the part file
    for i in (2, 3, 4):
        again.write(chunk(i, data))
    assert again.sha256() == rel.manifest.sha256
    again.finalize()
    final = release_dir(tmp_path / "sim-7", "m", 3) / FINAL
    assert final.read_bytes() == b"".join(data)
