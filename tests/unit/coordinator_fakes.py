"""In-memory stand-ins for the coordinator's unit tests: a broker link that records what would
be published, and a fleet database with one small release."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from coordinator.keystore import ReleaseKeys, init_keys, load_release_keys
from coordinator.registry import Registry, ReleaseRecord
from protocol.textmodel import KIND_FILE

FLEET = "f"
CHUNK = 4096


@dataclass
class Published:
    topic: str
    payload: bytes
    retain: bool


@dataclass
class FakeLink:
    """A ``BrokerLink`` that records publishes; ``room`` is how many more it accepts (None:
    any number), as a client whose queue is full refuses the rest."""

    room: int | None = None
    published: list[Published] = field(default_factory=list)
    connected: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.connected.set()

    def publish(
        self, topic: str, payload: bytes | bytearray, *, qos: int = 1, retain: bool = False
    ) -> object:
        if self.room is not None:
            if self.room == 0:
                return None
            self.room -= 1
        self.published.append(Published(topic, bytes(payload), retain))
        return True

    def wait_below(self, limit: int, timeout: float) -> bool:
        return True

    @property
    def topics(self) -> list[str]:
        return [p.topic for p in self.published]


def make_keys(tmp: Path) -> ReleaseKeys:
    init_keys(tmp / "keys")
    return load_release_keys(tmp / "keys")


def add_release(
    registry: Registry,
    keys: ReleaseKeys,
    tmp: Path,
    version: int = 1,
    n_chunks: int = 40,
    data: bytes | None = None,
) -> ReleaseRecord:
    """A ``file`` release of ``data`` (default: ``n_chunks`` chunks of random bytes)."""
    model = tmp / f"m{version}.onnx"
    model.write_bytes(os.urandom(n_chunks * CHUNK) if data is None else data)
    return registry.add_release(
        model,
        model_kind=KIND_FILE,  # random bytes: never loaded
        name="m",
        version=version,
        keys=keys,
        fleet=FLEET,
        chunk_size=CHUNK,
    )
