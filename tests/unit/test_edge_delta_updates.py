"""The edge's choice of a delta (edge_node/delta_updates.py) on a temp dir: which base, when a
whole download is cheaper, and every way a delta falls back to the release with its reason."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest

import edge_node.delta_updates as delta_updates
import edge_node.write_behind as write_behind
from edge_node.delta_updates import DeltaFailed, DeltaUpdates
from edge_node.storage import FINAL, MANIFEST, release_dir
from protocol import DeltaRef, Manifest, VerifiedManifest, hash_chunks, open_manifest
from protocol.delta_encode import encode_delta
from tests.support.edge_fakes import CERT, CHUNK, DEVICE, NOW, RELEASE, TRUST, Room, room
from tests.unit.test_protocol_delta import model_bytes, scaled, weights


def signed(version: int, data: bytes, deltas: tuple[DeltaRef, ...] = ()) -> VerifiedManifest:
    whole, hashes, size = hash_chunks(data[i : i + CHUNK] for i in range(0, len(data), CHUNK))
    m = Manifest("default", "m", version, size, whole, CHUNK, hashes, 1e9, 2e9, deltas=deltas)
    return open_manifest(TRUST, m.sign(RELEASE, CERT), now=NOW, fleet="default")


def ref_for(base: bytes, base_release: VerifiedManifest, delta: bytes) -> DeltaRef:
    whole, hashes, size = hash_chunks(delta[i : i + CHUNK] for i in range(0, len(delta), CHUNK))
    return DeltaRef(
        base=base_release.id,
        base_version=base_release.manifest.version,
        base_sha256=hashlib.sha256(base).digest(),
        size=size,
        sha256=whole,
        chunks=hashes,
    )


class Edge:
    """An edge that runs m@1 (``v1``) and is offered m@2 (``v2``) with a delta from it."""

    def __init__(self, tmp: Path) -> None:
        w = weights()
        self.v1, self.v2 = model_bytes(w), model_bytes(scaled(w, {"b2"}, 1e-2))
        self.room: Room = room(tmp / "data")
        self.first = signed(1, self.v1)
        path = release_dir(self.room.data, "m", 1) / FINAL
        path.parent.mkdir(parents=True)
        path.write_bytes(self.v1)
        self.room.actives.switch("m", 1, path, hashlib.sha256(self.v1).hexdigest())
        self.delta = b"".join(encode_delta(self.v1, self.v2))
        self.ref = ref_for(self.v1, self.first, self.delta)
        self.second = signed(2, self.v2, (self.ref,))
        self.deltas = DeltaUpdates(DEVICE, self.room.data, self.room.actives, self.room.reporter)

    def fallbacks(self) -> list[str | None]:
        return [e.reason for e in self.room.events.named("delta-fallback")]


@pytest.fixture
def edge(tmp_path: Path) -> Edge:
    return Edge(tmp_path)


def test_an_edge_holding_the_base_downloads_the_delta_and_applies_it(edge: Edge) -> None:
    plan = edge.deltas.plan(edge.second)
    assert plan is not None and plan.ref == edge.ref
    assert plan.stream.manifest.size == len(edge.delta) and plan.stream.id != edge.second.id
    plan.directory.mkdir(parents=True)
    (plan.directory / FINAL).write_bytes(edge.delta)  # as the stream's download leaves it
    made = edge.deltas.apply(plan, plan.directory / FINAL)
    assert made == release_dir(edge.room.data, "m", 2) / FINAL
    assert made.read_bytes() == edge.v2
    assert (made.parent / MANIFEST).read_bytes() == edge.second.envelope
    assert not plan.directory.exists()  # the delta is gone once applied
    (applied,) = edge.room.events.named("delta-applied")
    assert applied.detail is not None and applied.detail.endswith("(delta from m@1)")
    assert edge.fallbacks() == []


def test_an_apply_syncs_its_output_behind_the_writes(
    edge: Edge, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Like a download's part file, the file a delta makes is synced (and dropped from the
    page cache) behind its writes (``WriteBehind``, tested with the part file), not all at the
    end: every byte written is handed to it, and it is stopped before the file is closed."""
    seen: list[tuple[str, int]] = []

    class Recording(write_behind.WriteBehind):
        def wrote(self, n: int) -> None:
            seen.append(("wrote", n))
            super().wrote(n)

        def close(self) -> None:
            seen.append(("close", 0))
            super().close()

    monkeypatch.setattr(delta_updates, "WriteBehind", Recording)
    plan = edge.deltas.plan(edge.second)
    assert plan is not None
    plan.directory.mkdir(parents=True)
    (plan.directory / FINAL).write_bytes(edge.delta)
    made = edge.deltas.apply(plan, plan.directory / FINAL)
    assert made.read_bytes() == edge.v2
    assert sum(n for what, n in seen if what == "wrote") == len(edge.v2)
    assert seen[-1] == ("close", 0)


def test_a_whole_download_cheaper_than_the_delta_is_preferred(edge: Edge) -> None:
    assert edge.deltas.plan(edge.second, fetch_whole=len(edge.delta)) is None
    assert edge.deltas.plan(edge.second, fetch_whole=len(edge.delta) + 1) is not None
    assert edge.fallbacks() == []  # a choice, not a failure


def test_a_base_that_no_longer_verifies_is_refused(edge: Edge) -> None:
    active = edge.room.actives.get("m")
    assert active is not None
    active.path.write_bytes(edge.v1[:-1] + b"\x00")
    assert edge.deltas.plan(edge.second) is None
    assert edge.fallbacks() == ["delta-base-corrupt"]
    assert edge.deltas.plan(edge.second) is None  # refused for good: no second event
    assert edge.fallbacks() == ["delta-base-corrupt"]


def test_a_delta_from_a_base_not_held_here_is_refused(edge: Edge) -> None:
    stranger = replace(edge.ref, base_sha256=b"\x01" * 32, base_version=7)
    offered = signed(2, edge.v2, (stranger,))
    assert edge.deltas.plan(offered) is None
    assert edge.fallbacks() == ["delta-base-unknown"]


def test_a_fresh_edge_says_nothing_and_downloads_whole(tmp_path: Path) -> None:
    fresh = Edge(tmp_path)
    fresh.room.actives._models.clear()  # holds nothing
    assert fresh.deltas.plan(fresh.second) is None
    assert fresh.fallbacks() == []


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda d: d[:-10], "delta-malformed"),  # truncated
        (lambda d: b"NOTDELTA" + d[8:], "delta-malformed"),
    ],
)
def test_a_delta_that_does_not_apply_is_refused(edge: Edge, damage, reason: str) -> None:  # type: ignore[no-untyped-def]
    plan = edge.deltas.plan(edge.second)
    assert plan is not None
    plan.directory.mkdir(parents=True)
    (plan.directory / FINAL).write_bytes(damage(edge.delta))
    with pytest.raises(DeltaFailed) as failed:
        edge.deltas.apply(plan, plan.directory / FINAL)
    assert failed.value.reason == reason
    assert edge.fallbacks() == [reason]
    assert not (release_dir(edge.room.data, "m", 2) / FINAL).exists()
    assert edge.deltas.plan(edge.second) is None  # the release, whole, from now on


def test_a_delta_that_makes_another_file_is_refused(edge: Edge) -> None:
    other = b"".join(encode_delta(edge.v1, edge.v1 + b"x"))  # a valid delta, for another file
    plan = edge.deltas.plan(edge.second)
    assert plan is not None
    plan.directory.mkdir(parents=True)
    (plan.directory / FINAL).write_bytes(other)
    with pytest.raises(DeltaFailed) as failed:
        edge.deltas.apply(plan, plan.directory / FINAL)
    assert failed.value.reason == "delta-result-mismatch"


def test_a_delta_that_stalls_three_times_without_a_chunk_is_given_up(edge: Edge) -> None:
    plan = edge.deltas.plan(edge.second)
    assert plan is not None
    assert not edge.deltas.stalled(plan, held=0)
    assert not edge.deltas.stalled(plan, held=1)  # progress: the count starts again
    assert not edge.deltas.stalled(plan, held=1)
    assert not edge.deltas.stalled(plan, held=1)
    assert edge.deltas.stalled(plan, held=1)
    assert edge.fallbacks() == ["delta-stalled"]
