"""The edge's part file: the whole-file sha256 computed on the way (in order, out of order,
resumed, and read back after a mismatch), the background flusher, and the journal."""

from __future__ import annotations

import hashlib
import os
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import edge_node.storage as storage
import edge_node.whole_hash as whole_hash
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


def _no_read_back(part: PartialDownload) -> None:
    def refuse(block: int = 0) -> Iterator[bytes]:
        raise AssertionError("the whole file was read back")

    part.iter_file = refuse  # type: ignore[method-assign]


def test_in_order_the_digest_needs_no_read_back(tmp_path: Path) -> None:
    part = _part(tmp_path)
    part.recover()
    for i in range(N_CHUNKS):
        part.write(_chunk(i))
    _no_read_back(part)
    assert part.sha256() == hashlib.sha256(DATA).digest()
    part.close()


@pytest.mark.parametrize("seed", range(5))
def test_out_of_order_the_digest_is_right(tmp_path: Path, seed: int) -> None:
    order = list(range(N_CHUNKS))
    random.Random(seed).shuffle(order)
    part = _part(tmp_path)
    part.recover()
    for i in order:
        part.write(_chunk(i))
    assert part.sha256() == hashlib.sha256(DATA).digest()
    part.close()


def test_resumed_chunks_are_read_back_for_the_digest(tmp_path: Path) -> None:
    first = _part(tmp_path)
    first.recover()
    for i in (0, 1, 2, 5, 7):
        first.write(_chunk(i))
    first.sync()
    first.close()
    again = _part(tmp_path)
    held = again.recover()
    assert held == [0, 1, 2, 5, 7]
    for i in range(N_CHUNKS):
        if i not in held:
            again.write(_chunk(i))
    assert again.sha256() == hashlib.sha256(DATA).digest()
    again.close()


def test_after_a_first_digest_the_file_is_read_back(tmp_path: Path) -> None:
    part = _part(tmp_path)
    part.recover()
    for i in range(N_CHUNKS):
        part.write(_chunk(i))
    assert part.sha256() == hashlib.sha256(DATA).digest()
    # what a mismatch would be about: the disk now differs from what was written
    path = tmp_path / "r" / PART
    with path.open("r+b") as f:
        f.seek(5)
        f.write(b"X")
    assert part.sha256() == hashlib.sha256(path.read_bytes()).digest()
    part.close()


def test_the_flusher_runs_behind_the_writes_and_stops_on_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage, "FLUSH_BEHIND_BYTES", CHUNK)
    part = _part(tmp_path)
    part.recover()
    for i in range(N_CHUNKS):
        part.write(_chunk(i))
    flusher = part._flusher
    assert flusher is not None and flusher.is_alive()
    part.close()
    assert not flusher.is_alive()
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


def test_a_short_part_file_fails_the_digest_with_a_storage_error(tmp_path: Path) -> None:
    """The background hasher reads back chunks written out of order; a file cut short under it
    (another process, a broken disk) is a StorageError at completion, not a wrong digest."""
    part = _part(tmp_path)
    part.recover()
    for i in range(1, N_CHUNKS):
        part.write(_chunk(i))
    os.truncate(tmp_path / "r" / PART, SIZE - 100)
    part.write(_chunk(0))
    with pytest.raises(StorageError, match="short"):
        part.sha256()
    part.close()


def test_the_hash_queue_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Received chunks wait for the hasher in memory: past the cap the writer waits."""
    monkeypatch.setattr(whole_hash, "MAX_QUEUED_BYTES", 2 * CHUNK)
    release = threading.Event()
    hashed: list[int] = []

    class SlowHash:
        def update(self, data: bytes) -> None:
            release.wait(10)
            hashed.append(len(data))

    part = _part(tmp_path)
    part.recover()
    assert part._whole is not None
    part._whole._hash = SlowHash()  # type: ignore[assignment]
    fed = threading.Event()

    def writer() -> None:
        for i in range(4):
            part.write(_chunk(i))
        fed.set()

    t = threading.Thread(target=writer)
    t.start()
    assert not fed.wait(0.5), "four chunks were queued past a cap of two"
    release.set()
    assert fed.wait(10)
    t.join()
    part.close()


def test_finalize_leaves_the_model_and_its_manifest_and_no_journal(tmp_path: Path) -> None:
    part = _part(tmp_path)
    part.recover()
    for i in range(N_CHUNKS // 2):
        part.write(_chunk(i))
    part.sync()  # a periodic journal sync mid-download
    assert (tmp_path / "r" / BITMAP).exists()
    for i in range(N_CHUNKS // 2, N_CHUNKS):
        part.write(_chunk(i))
    assert part.sha256() == hashlib.sha256(DATA).digest()
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
    assert part.sha256() == hashlib.sha256(DATA).digest()
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
