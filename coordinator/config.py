"""``CoordinatorConfig``: every setting of a coordinator service, checked when it is made."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import protocol
from runtime.broker_kinds import DEFAULT_BROKER_KIND, check_broker_kind
from runtime.credentials import ClientCreds

from .deployer import check_index_lifetime
from .publishing import DEFAULT_POLL_INTERVAL
from .ratelimit import (
    DEFAULT_REPORT_BURST,
    DEFAULT_REPORT_RATE,
    DEFAULT_REQUEST_BURST,
    DEFAULT_REQUEST_RATE,
    DeviceLimits,
    check_rate,
)
from .telemetry_store import DEFAULT_RETENTION_DAYS, check_retention

DEFAULT_INDEX_EXPIRES_IN = 30 * 86400.0


@dataclass(frozen=True)
class CoordinatorConfig:
    """What ``Coordinator`` serves, where from, and how.

    ``max_pending``: chunk publishes unacknowledged at a time (flow control); ``fresh_hold``:
    seconds the sender waits after a fresh request for the other devices of a wave (see
    ``chunk_serving.FreshHold``); ``index_expires_in``: lifetime of a signed deployment index
    (renewed at half of it); ``retention_days``: telemetry kept; ``request_rate`` and
    ``request_burst``: each device's chunk-request token bucket; ``report_rate`` and
    ``report_burst``: each device's bucket for telemetry, state and status messages (see
    ``ratelimit`` for the honest rates and the backlog it lets through); ``client_id``: the MQTT
    client id (default: the credentials', else ``modelcast-coordinator-FLEET``);
    ``broker_kind``: mosquitto, nats or rabbitmq (``runtime.broker_kinds``: on RabbitMQ the
    coordinator also subscribes to the exact status and state topics of the devices it knows).
    """

    broker_url: str
    db_path: Path
    keydir: Path
    fleet: str = "default"
    poll_interval: float = DEFAULT_POLL_INTERVAL
    max_pending: int = 32
    fresh_hold: float = 0.3
    index_expires_in: float = DEFAULT_INDEX_EXPIRES_IN
    client_id: str | None = None
    retention_days: float = DEFAULT_RETENTION_DAYS
    creds: ClientCreds | None = None
    request_rate: float = DEFAULT_REQUEST_RATE
    request_burst: float = DEFAULT_REQUEST_BURST
    report_rate: float = DEFAULT_REPORT_RATE
    report_burst: float = DEFAULT_REPORT_BURST
    broker_kind: str = DEFAULT_BROKER_KIND

    def __post_init__(self) -> None:
        check_broker_kind(self.broker_kind)
        if self.max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        protocol.check_name(self.fleet, "fleet")
        check_index_lifetime(self.index_expires_in)
        check_retention(self.retention_days)
        check_rate(self.request_rate, self.request_burst)
        check_rate(self.report_rate, self.report_burst)

    def device_limits(self) -> DeviceLimits:
        """Fresh (full) token buckets of both per-device limits."""
        return DeviceLimits.make(
            self.request_rate, self.request_burst, self.report_rate, self.report_burst
        )

    @property
    def mqtt_client_id(self) -> str:
        if self.client_id:
            return self.client_id
        return self.creds.client_id if self.creds else f"modelcast-coordinator-{self.fleet}"
