"""The edge's part file: chunks in any order or resumed make the release's file without it being
read back, the background flusher (which drops what it synced from the page cache), and the
journal."""

from __future__ import annotations

import hashlib
import os
import random
import threading
from pathlib import Path

import pytest

import edge_node.storage as storage
import edge_node.write_behind as write_behind
from edge_node.errors import StorageError
from edge_node.storage import BITMAP, FINAL, MANIFEST, PART, PartialDownload, salvage_final
from protocol import Manifest, VerifiedChunk, hash_chunks
from tests.support.disk import flip
from tests.support.edge_fakes import CHUNK as FAKE_CHUNK
from tests.support.edge_fakes import pieces, release

CHUNK = 4096
N_CHUNKS = 12
SIZE = CHUNK * (N_CHUNKS - 1) + 777  # a short last chunk
DATA = hashlib.shake_256(b"storage").digest(SIZE)
PIECES = [DATA[i : i + CHUNK] for i in range(0, SIZE, CHUNK)]


def _manifest() -> Manifest:
    whole, hashes, size = hash_chunks(PIECES)
    return Manifest("default", "m", 1, size, whole, CHUNK, hashes, 1e9, 2e9, block_chunks=4)


def _chunk(i: int) -> VerifiedChunk:
    return VerifiedChunk(i, i * CHUNK, memoryview(PIECES[i]))


def _part(tmp_path: Path) -> PartialDownload:
    return PartialDownload(tmp_path / "r", _manifest(), b"envelope")


def _complete(part: PartialDownload, order: list[int], monkeypatch: pytest.MonkeyPatch) -> Path:
    """Write ``order``'s chunks and finalize, with every read of the part file refused: the
    chunks were verified on arrival, completion must not hash the file again."""
    for i in order:
        part.write(_chunk(i))

    def refuse(fd: int, length: int, offset: int) -> bytes:
        raise AssertionError(f"the part file was read back at {offset}")

    with monkeypatch.context() as m:
        m.setattr(storage.os, "pread", refuse)
        return part.finalize()


@pytest.mark.parametrize("seed", [None, *range(5)])
def test_chunks_in_any_order_make_the_file_without_a_read_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int | None
) -> None:
    order = list(range(N_CHUNKS))
    if seed is not None:
        random.Random(seed).shuffle(order)
    part = _part(tmp_path)
    part.recover()
    assert _complete(part, order, monkeypatch).read_bytes() == DATA


def test_resumed_chunks_are_hashed_once_on_resume_and_the_rest_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _part(tmp_path)
    first.recover()
    for i in (0, 1, 2, 5, 7):
        first.write(_chunk(i))
    first.sync()
    first.close()
    flip(tmp_path / "r" / PART, 5 * CHUNK + 9)  # chunk 5 rots on the disk meanwhile
    again = _part(tmp_path)
    held = again.recover()
    assert held == [0, 1, 2, 7]
    missing = [i for i in range(N_CHUNKS) if i not in held]
    assert _complete(again, missing, monkeypatch).read_bytes() == DATA


def test_the_flusher_runs_behind_the_writes_drops_what_it_synced_and_stops_on_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(write_behind, "FLUSH_BEHIND_BYTES", CHUNK)
    dropped = threading.Event()
    monkeypatch.setattr(write_behind, "drop_cached", lambda fd: dropped.set())
    part = _part(tmp_path)
    part.recover()
    assert not part._behind.running  # nothing written yet: no thread
    for i in range(N_CHUNKS):
        part.write(_chunk(i))
    assert part._behind.running
    assert dropped.wait(10), "the flusher did not drop the synced pages"
    part.close()
    assert not part._behind.running
    assert (tmp_path / "r" / PART).read_bytes() == DATA


def test_a_fresh_download_writes_no_empty_journal(tmp_path: Path) -> None:
    part = _part(tmp_path)
    assert part.recover() == []
    part.sync()
    assert not (tmp_path / "r" / BITMAP).exists()
    part.write(_chunk(3))
    part.sync()
    journal = (tmp_path / "r" / BITMAP).read_bytes()
    assert [i for i, b in enumerate(journal) if b] == [3]
    part.close()


def test_a_part_file_cut_short_fails_completion_with_a_storage_error(tmp_path: Path) -> None:
    """A file cut short under the download (another process, a broken disk) is a StorageError
    at completion, not a model."""
    part = _part(tmp_path)
    part.recover()
    for i in range(N_CHUNKS):
        part.write(_chunk(i))
    os.truncate(tmp_path / "r" / PART, SIZE - 100)
    with pytest.raises(StorageError, match=f"has {SIZE - 100} bytes, the release {SIZE}"):
        part.finalize()
    assert not (tmp_path / "r" / FINAL).exists()


def test_finalize_leaves_the_model_and_its_manifest_and_no_journal(tmp_path: Path) -> None:
    part = _part(tmp_path)
    part.recover()
    for i in range(N_CHUNKS // 2):
        part.write(_chunk(i))
    part.sync()  # a periodic journal sync mid-download
    assert (tmp_path / "r" / BITMAP).exists()
    for i in range(N_CHUNKS // 2, N_CHUNKS):
        part.write(_chunk(i))
    final = part.finalize()
    assert final.read_bytes() == DATA
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == [MANIFEST, final.name]
    assert (tmp_path / "r" / MANIFEST).read_bytes() == b"envelope"


def test_a_longer_part_file_left_by_another_build_is_cut_to_the_release(tmp_path: Path) -> None:
    """A part file longer than this release (left by another build, e.g. a variant that no
    longer applies) cannot leave its tail in the model: it is cut to the release's size."""
    directory = tmp_path / "r"
    directory.mkdir()
    (directory / PART).write_bytes(b"\xff" * (SIZE + 50_000))
    part = _part(tmp_path)
    part.recover()
    for i in range(N_CHUNKS):
        part.write(_chunk(i))
    assert part.finalize().read_bytes() == DATA


def test_variants_of_one_version_live_apart(tmp_path: Path) -> None:
    assert storage.release_dir(tmp_path, "m", 5) == tmp_path / "models" / "m" / "5"
    fp32 = storage.release_dir(tmp_path, "m", 5, "fp32")
    int8 = storage.release_dir(tmp_path, "m", 5, "int8")
    assert fp32 != int8 and fp32.parent == int8.parent == tmp_path / "models" / "m" / "5"


# --- a corrupt verified file, reused for its repair ------------------------------------
def test_a_corrupt_final_file_becomes_the_part_file_and_only_damaged_chunks_are_missing(
    tmp_path: Path,
) -> None:
    chunks = pieces(8)
    rel = release(chunks=chunks)
    directory = tmp_path / "release"
    directory.mkdir()
    final = directory / FINAL
    final.write_bytes(b"".join(chunks))
    (directory / BITMAP).write_bytes(b"\x01" * 8)  # a stale journal claims everything
    flip(final, 2 * FAKE_CHUNK + 100)
    flip(final, 6 * FAKE_CHUNK - 4)  # straddles chunks 5 and 6
    assert salvage_final(directory)
    assert not final.exists() and (directory / PART).exists()
    assert not (directory / BITMAP).exists()
    part = PartialDownload(directory, rel.manifest, rel.envelope)
    try:
        assert part.recover() == [0, 1, 3, 4, 7]
    finally:
        part.close()
    assert not salvage_final(directory)  # nothing left to salvage
