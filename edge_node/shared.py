"""What the edge's rooms share: the releases in each slot of the update pipeline, and the MQTT
calls they make.

The rooms (``reporter``, ``downloader``, ``activator``, ``trust_updates``, ``index_follower``,
``pushed_config``)
are driven by the agent's worker thread, and so is everything here, with one exception:
``Slots.connected`` is set to False by the MQTT network thread when the connection drops (a
plain bool, read by the worker; the worker sets it back to True when it handles the reconnect).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol

from protocol import DownloadSession, Target, VerifiedManifest

from .storage import PartialDownload

if TYPE_CHECKING:  # delta_updates reports through the reporter, which imports this module
    from .delta_updates import DeltaPlan


class Wire(Protocol):
    """The MQTT calls the rooms make (``runtime.mqtt.MqttSession``; a recording fake in tests)."""

    def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> object: ...

    def subscribe(self, topics: list[str], qos: int = 1) -> None: ...

    def unsubscribe(self, topics: list[str]) -> None: ...


@dataclass
class Download:
    """The release being downloaded: its part file on disk and its download state machine."""

    release: VerifiedManifest
    part: PartialDownload
    session: DownloadSession
    chunk_prefix: str  # what the topic of each of its chunks starts with
    #: set when ``release`` is the chunk stream of a delta to ``delta.target``
    delta: DeltaPlan | None = None

    @property
    def target(self) -> VerifiedManifest:
        """The release this download installs (the delta's target, for a delta)."""
        return self.release if self.delta is None else self.delta.target

    @property
    def label(self) -> str:
        if self.delta is not None:
            return f"{self.release.manifest.release} (delta from v{self.delta.ref.base_version})"
        return self.release.manifest.release


class Verified(NamedTuple):
    """A release whose whole file matched its manifest: ready to activate."""

    release: VerifiedManifest
    path: Path


@dataclass
class Slots:
    """Where each release of the update pipeline is, and whether the broker is reachable."""

    #: the network thread sets it False on a disconnect; the worker True on a (re)connect
    connected: bool = False
    #: written by the downloader only
    download: Download | None = None
    #: the model and target whose manifest is awaited: set and cleared by the index follower;
    #: set by the downloader for a release to start over once its write back-off ends
    pending: tuple[str, Target] | None = None
    #: a verified release waiting for the maintenance window: set and cleared by the activator;
    #: cleared by the index follower when the index no longer targets it
    deferred: Verified | None = None
