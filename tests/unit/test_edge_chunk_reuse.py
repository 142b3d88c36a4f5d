"""Chunk reuse on the edge: the chunks of a new release that another verified release of the
same model holds on disk are copied (verified by hash), never asked for."""

from __future__ import annotations

from pathlib import Path

from edge_node.chunk_reuse import bytes_to_fetch, find_sources
from edge_node.storage import FINAL, MANIFEST, release_dir
from protocol import ChunkRequest, DownloadSession, UpdateState, VerifiedManifest
from tests.support.edge_fakes import CHUNK, DEVICE, TOPICS, frame, pieces, release
from tests.unit.test_edge_downloader import Setup, setup

OLD = pieces(8)
NEW = OLD[:6] + pieces(8, seed=b"retrained")[6:]  # only the tail changed


def install(data: Path, rel: VerifiedManifest, chunks: list[bytes]) -> Path:
    """A verified release on the device's disk, as the downloader leaves it."""
    m = rel.manifest
    directory = release_dir(data, m.name, m.version, m.variant)
    directory.mkdir(parents=True)
    (directory / MANIFEST).write_bytes(rel.envelope)
    (directory / FINAL).write_bytes(b"".join(chunks))
    return directory / FINAL


def requested(s: Setup) -> list[int]:
    asks = [ChunkRequest.decode(p) for p in s.room.wire.on(TOPICS.request(DEVICE))]
    return sorted(i for r in asks for i in r.indices())


def test_only_the_changed_chunks_are_asked_for_and_the_rest_is_copied(tmp_path: Path) -> None:
    s = setup(tmp_path, window=8)
    install(s.room.data, release(version=1, chunks=OLD), OLD)
    new = release(version=2, chunks=NEW)
    assert s.downloader.begin(new) is None
    assert requested(s) == [6, 7]
    state = s.room.wire.states()[-1]
    assert state.bytes_reused == 6 * CHUNK and state.chunks_held == 6
    reused = s.room.events.named("reused")
    assert len(reused) == 1 and reused[0].detail is not None
    assert reused[0].detail.startswith(f"reused {6 * CHUNK} of {new.manifest.size} bytes")
    assert "from m@1" in reused[0].detail
    topic = TOPICS.chunk_block("m", 2, 1)
    assert s.downloader.on_chunk(topic, frame(new, 6, NEW)) is None
    done = s.downloader.on_chunk(topic, frame(new, 7, NEW))
    assert done is not None and done.path.read_bytes() == b"".join(NEW)


def test_an_identical_release_needs_nothing_from_the_network(tmp_path: Path) -> None:
    s = setup(tmp_path)
    install(s.room.data, release(version=1, chunks=OLD), OLD)
    done = s.downloader.begin(release(version=2, chunks=OLD))
    assert done is not None and done.path.read_bytes() == b"".join(OLD)
    assert requested(s) == []
    assert s.room.wire.states()[-1].state is UpdateState.VERIFIED


def test_a_local_copy_that_rotted_is_asked_for_instead(tmp_path: Path) -> None:
    s = setup(tmp_path, window=8)
    path = install(s.room.data, release(version=1, chunks=OLD), OLD)
    data = bytearray(path.read_bytes())
    data[2 * CHUNK + 10] ^= 0xFF
    path.write_bytes(bytes(data))
    assert s.downloader.begin(release(version=2, chunks=NEW)) is None
    assert requested(s) == [2, 6, 7]
    detail = next(e.detail for e in s.room.events.named("reused"))
    assert detail is not None and "1 local chunks no longer matched" in detail


def test_any_variant_and_moved_chunks_are_found(tmp_path: Path) -> None:
    s = setup(tmp_path, window=8)
    install(s.room.data, release(version=1, chunks=OLD, variant="int8"), OLD)
    shifted = [OLD[1], OLD[0], *NEW[2:]]  # two chunks swapped places
    assert s.downloader.begin(release(version=2, chunks=shifted)) is None
    assert requested(s) == [6, 7]


def test_sources_of_another_chunk_size_or_model_are_skipped(tmp_path: Path) -> None:
    s = setup(tmp_path)
    install(s.room.data, release(version=1, chunks=OLD, chunk_size=2 * CHUNK), OLD)
    install(s.room.data, release(name="other", version=1, chunks=OLD), OLD)
    new = release(version=2, chunks=NEW)
    target = release_dir(s.room.data, "m", 2)
    assert find_sources(s.room.data / "models" / "m", target, new.manifest) == []
    assert s.downloader.begin(new) is None
    assert requested(s) == list(range(8))
    assert not s.room.events.named("reused")


def test_the_session_counts_reused_chunks_as_held_and_apart() -> None:
    rel = release(version=2, chunks=NEW)
    session = DownloadSession(rel, [0], reused=[0, 1, 7, 99])
    assert session.held_count == 3 and session.reused_count == 2
    assert session.bytes_reused == CHUNK + rel.manifest.chunk_length(7)
    plan = session.plan(DEVICE, 0.0, 8)
    assert plan.request is not None and plan.request.indices() == [2, 3, 4, 5, 6]


def test_what_a_whole_download_would_fetch_counts_only_chunks_held_nowhere(
    tmp_path: Path,
) -> None:
    """The figure the edge weighs a delta against (``DeltaUpdates.plan(fetch_whole=...)``)."""
    data = tmp_path / "data"
    new = release(version=2, chunks=NEW)
    target = release_dir(data, "m", 2)
    assert bytes_to_fetch(target, new.manifest) == new.manifest.size  # nothing on disk
    install(data, release(version=1, chunks=OLD), OLD)
    assert bytes_to_fetch(target, new.manifest) == CHUNK + len(NEW[7])  # chunks 6 and 7


def test_a_deltas_own_download_is_no_source(tmp_path: Path) -> None:
    """``VERSION/.delta-HEX`` keeps the target's manifest beside the delta's bytes: counted as a
    source, every chunk of the target would look local and the delta never be chosen."""
    data = tmp_path / "data"
    new = release(version=2, chunks=NEW)
    target = release_dir(data, "m", 2)
    stream = target / ".delta-0011223344556677"
    stream.mkdir(parents=True)
    (stream / MANIFEST).write_bytes(new.envelope)
    (stream / FINAL).write_bytes(b"the delta's bytes")
    assert find_sources(data / "models" / "m", target, new.manifest) == []
    assert bytes_to_fetch(target, new.manifest) == new.manifest.size
