"""In-memory stand-ins for the edge rooms' unit tests: a wire that records what would be
published, an event sink, a settable clock, and a signed release to download."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from edge_node.active import ActiveModels
from edge_node.reporter import Reporter
from edge_node.shared import Slots
from protocol import (
    ChunkFrame,
    DeviceEvent,
    DeviceState,
    Manifest,
    Topics,
    VerifiedManifest,
    hash_chunks,
    open_manifest,
)
from tests.support.download_release import CERT, NOW, RELEASE, TRUST

TOPICS = Topics("default")
DEVICE = "d1"
CHUNK = 4096


@dataclass
class Clock:
    now: float = NOW

    def __call__(self) -> float:
        return self.now


@dataclass
class Wire:
    """Records every publish, subscribe and unsubscribe, in order."""

    published: list[tuple[str, bytes, int, bool]] = field(default_factory=list)
    subscribed: list[str] = field(default_factory=list)
    unsubscribed: list[str] = field(default_factory=list)

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        self.published.append((topic, payload, qos, retain))

    def subscribe(self, topics: list[str], qos: int = 1) -> None:
        self.subscribed.extend(topics)

    def unsubscribe(self, topics: list[str]) -> None:
        self.unsubscribed.extend(topics)

    def on(self, topic: str) -> list[bytes]:
        return [payload for t, payload, _, _ in self.published if t == topic]

    def states(self) -> list[DeviceState]:
        return [DeviceState.decode(p) for p in self.on(TOPICS.state(DEVICE))]


@dataclass
class Events:
    got: list[tuple[DeviceEvent, bool]] = field(default_factory=list)

    def event(self, event: DeviceEvent, *, connected: bool) -> None:
        self.got.append((event, connected))

    def named(self, name: str) -> list[DeviceEvent]:
        return [e for e, _ in self.got if e.event == name]


@dataclass
class Room:
    """A reporter and what it reports to: the pieces every room test starts from."""

    data: Path
    clock: Clock
    wire: Wire
    events: Events
    slots: Slots
    actives: ActiveModels
    reporter: Reporter


def room(data: Path, *, state_interval: float = 0.5, connected: bool = True) -> Room:
    data.mkdir(parents=True, exist_ok=True)
    clock, wire, events = Clock(), Wire(), Events()
    slots = Slots(connected=connected)
    actives = ActiveModels(data)
    reporter = Reporter(
        device=DEVICE,
        boot="boot1",
        topics=TOPICS,
        clock=clock,
        wire=wire,
        slots=slots,
        actives=actives,
        events=events,
        profile={},
        state_interval=state_interval,
    )
    return Room(data, clock, wire, events, slots, actives, reporter)


def pieces(n_chunks: int, seed: bytes = b"model") -> list[bytes]:
    size = CHUNK * (n_chunks - 1) + 1000  # a short last chunk
    data = hashlib.shake_256(seed).digest(size)
    return [data[i : i + CHUNK] for i in range(0, size, CHUNK)]


def release(
    name: str = "m",
    version: int = 2,
    *,
    chunks: list[bytes] | None = None,
    block_chunks: int = 4,
    variant: str | None = None,
    chunk_size: int = CHUNK,
) -> VerifiedManifest:
    """A signed release of ``chunks`` (``CHUNK`` bytes each); ``chunk_size``: cut them anew."""
    data = b"".join(chunks if chunks is not None else pieces(8))
    cut = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)]
    whole, hashes, size = hash_chunks(cut)
    m = Manifest(
        "default",
        name,
        version,
        size,
        whole,
        chunk_size,
        hashes,
        1e9,
        2e9,
        block_chunks=block_chunks,
        variant=variant,
    )
    return open_manifest(TRUST, m.sign(RELEASE, CERT), now=NOW, fleet="default")


def frame(rel: VerifiedManifest, index: int, chunks: list[bytes]) -> bytes:
    return ChunkFrame.encode(index, rel.id, chunks[index])
