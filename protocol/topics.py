"""Every MQTT topic modelcast uses, in one place. See docs/PROTOCOL.md for payloads.

All topics live under ``modelcast/{fleet}/``. Coordinator-to-device traffic: ``releases/...`` and
``chunks/...``; device-to-coordinator traffic: ``devices/{id}/...``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .names import check_name, is_valid_name

ROOT = "modelcast"


@dataclass(frozen=True)
class Topics:
    """Topic names of one fleet."""

    fleet: str = "default"

    def __post_init__(self) -> None:
        check_name(self.fleet, "fleet")

    @property
    def base(self) -> str:
        return f"{ROOT}/{self.fleet}"

    # --- coordinator -> devices -------------------------------------------------------------
    def index(self) -> str:
        """Retained, signed deployment index: which version of each model the fleet should run."""
        return f"{self.base}/releases/index"

    def manifest(self, name: str, version: int, variant: str | None = None) -> str:
        """Retained, signed release manifest (of one variant, when the release has several)."""
        topic = f"{self.base}/releases/{check_name(name)}/{int(version)}"
        return f"{topic}/{check_name(variant, 'variant')}" if variant else topic

    def root_chain(self) -> str:
        """Retained chain of root rotations (each signed by the old and the new root)."""
        return f"{self.base}/releases/root"

    def revocations(self) -> str:
        """Retained, root-signed list of revoked release keys."""
        return f"{self.base}/releases/revocations"

    def report_request(self) -> str:
        """Signed requests that every device publish its status and state again (never
        retained): what a coordinator sends on connect, for brokers that do not deliver retained
        messages through wildcard subscriptions."""
        return f"{self.base}/releases/report"

    def commands(self, device: str) -> str:
        """Signed commands for one device."""
        return f"{self.base}/commands/{check_name(device, 'device id')}"

    def fleet_commands(self) -> str:
        """Signed commands for every device of the fleet."""
        return f"{self.base}/commands"

    def chunk_block(
        self,
        name: str,
        version: int,
        block: int,
        variant: str | None = None,
        stream: str | None = None,
    ) -> str:
        """Chunks of one block of a release, published once and fanned out by the broker.
        ``stream``: of a delta to that release (``Manifest.stream``) instead."""
        return f"{self.chunk_prefix(name, version, variant, stream)}{int(block)}"

    def chunk_prefix(
        self, name: str, version: int, variant: str | None = None, stream: str | None = None
    ) -> str:
        """What every chunk topic of one release (variant), or of a delta to it, starts with."""
        topic = f"{self.base}/chunks/{check_name(name)}/{int(version)}/"
        if variant:
            topic = f"{topic}{check_name(variant, 'variant')}/"
        return f"{topic}{_check_stream(stream)}/" if stream else topic

    def resend(self, device: str) -> str:
        """Chunks published again for this one device (any release: frames carry the release
        id), so the other devices on the chunk's block do not receive it twice."""
        return f"{self.base}/resends/{check_name(device, 'device id')}"

    # --- devices -> coordinator -------------------------------------------------------------
    def device(self, device_id: str) -> str:
        return f"{self.base}/devices/{check_name(device_id, 'device id')}"

    def status(self, device_id: str) -> str:
        """Retained online/offline flag; also the MQTT will."""
        return f"{self.device(device_id)}/status"

    def state(self, device_id: str) -> str:
        """Retained update state: downloading with progress, verified, active, failed, rejected."""
        return f"{self.device(device_id)}/state"

    def request(self, device_id: str) -> str:
        """Chunk requests (ranges of chunk indices the device lacks)."""
        return f"{self.device(device_id)}/request"

    def telemetry(self, device_id: str, kind: str) -> str:
        return f"{self.device(device_id)}/telemetry/{check_name(kind, 'telemetry kind')}"

    # --- wildcards the coordinator subscribes to --------------------------------------------
    def all_status(self) -> str:
        return f"{self.base}/devices/+/status"

    def all_state(self) -> str:
        return f"{self.base}/devices/+/state"

    def all_requests(self) -> str:
        return f"{self.base}/devices/+/request"

    def all_events(self) -> str:
        return f"{self.base}/devices/+/telemetry/events"

    def all_metrics(self) -> str:
        return f"{self.base}/devices/+/telemetry/metrics"

    def all_drift(self) -> str:
        return f"{self.base}/devices/+/telemetry/drift"

    def all_telemetry(self) -> str:
        return f"{self.base}/devices/+/telemetry/+"

    def device_of(self, topic: str) -> str | None:
        """The device id in a ``devices/{id}/...`` topic of this fleet, or None (also when the id
        is not a valid name, so it can never be spliced into another topic)."""
        prefix = f"{self.base}/devices/"
        if not topic.startswith(prefix):
            return None
        device_id = topic[len(prefix) :].split("/", 1)[0]
        return device_id if is_valid_name(device_id) else None


def _check_stream(stream: str) -> str:
    """A delta stream's topic level: ``~delta-`` and 16 hex digits (never a valid name, so it
    never meets a variant's level)."""
    tail = stream.removeprefix("~delta-")
    if len(tail) != 16 or tail.strip("0123456789abcdef"):
        raise ValueError(f"{stream!r} is not a delta stream")
    return stream
