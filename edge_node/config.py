"""Edge agent settings. Every field has a CLI flag and an environment variable
(``modelcast/cli/services.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from protocol import DEFAULT_LIMITS, DEFAULT_WINDOW, Limits
from runtime.credentials import ClientCreds


@dataclass(frozen=True)
class EdgeConfig:
    broker_url: str
    device_id: str
    data_dir: Path
    trust_path: Path
    fleet: str = "default"
    #: chunks asked for and not yet received, at most (pull-based flow control)
    window: int = DEFAULT_WINDOW
    #: re-ask for outstanding chunks after this long without progress (grows with slow links)
    stall_timeout: float = 10.0
    keepalive: int = 30
    #: reconnect backoff: the first delay, doubled per failed attempt up to the cap, jittered
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0
    #: at most one progress message per this many seconds (state changes go out at once)
    state_interval: float = 0.5
    #: written chunks are fsynced and journalled in batches this far apart
    sync_interval: float = 0.5
    #: MQTT messages waiting for the worker, at most; beyond it the network thread waits (and
    #: after 0.5 s drops the message). Twice the window: a full window of chunks plus what
    #: arrives for devices ahead on the same blocks (16 MiB at most with 512 KiB chunks)
    inbox_size: int = 2 * DEFAULT_WINDOW
    #: seconds between metrics samples
    telemetry_interval: float = 60.0
    #: telemetry messages kept on disk while the broker is unreachable (oldest dropped beyond)
    telemetry_queue: int = 10_000
    #: Laplace noise on drift samples for epsilon-differential privacy per inference
    #: (docs/DRIFT.md); None: exact window statistics
    drift_epsilon: float | None = None
    #: the local inference endpoint, (host, port); port 0 picks a free one; None: no endpoint
    http: tuple[str, int] | None = ("127.0.0.1", 8470)
    #: free-form labels reported in the device profile (site=plant-3, class=gateway)
    tags: dict[str, str] = field(default_factory=dict)
    #: local policy (a pushed fleet configuration overrides it): activate new versions only
    #: inside this daily UTC window "HH:MM-HH:MM"; hold these versions {model: version}
    maintenance_window: str | None = None
    pins: dict[str, int] = field(default_factory=dict)
    limits: Limits = field(default=DEFAULT_LIMITS)
    #: broker credentials (TLS, username/password; the client id is then their username)
    creds: ClientCreds | None = None
