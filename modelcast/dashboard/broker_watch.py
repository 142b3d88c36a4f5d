"""What the broker says: whether it can be reached, and the chunk bytes the coordinator
publishes, counted as one more subscriber of the fleet's chunk and resend topics (QoS 0: the
broker sends the dashboard each chunk once, as it would one more device).

Each frame's header names its release (``protocol.chunks.frame_release_id``), so the bytes are
counted per release; the releases page and ``/metrics`` match them to the releases by id.
Counted since the dashboard started; Prometheus copes with a counter that starts again. An
``integrator`` identity (``--creds``) may not read chunk topics: the counts stay at zero, and
the broker's reachability is still shown.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from protocol import Topics
from protocol.chunks import frame_release_id
from runtime.credentials import ClientCreds, session_auth
from runtime.mqtt import MqttSession

#: release ids counted apart at most; frames of any further ones count as "other"
MAX_RELEASES = 1000


@dataclass(frozen=True)
class BrokerState:
    url: str
    connected: bool
    since: float  # when it connected, or when it was last lost (or first tried)
    bytes: dict[str, int] = field(default_factory=dict)  # short release id (hex) -> bytes
    chunks: dict[str, int] = field(default_factory=dict)


class BrokerWatch:
    """One MQTT session (clean, its own client id) of the dashboard."""

    def __init__(
        self,
        url: str,
        fleet: str,
        creds: ClientCreds | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        base = Topics(fleet).base
        self.url = url
        self._topics = [f"{base}/chunks/#", f"{base}/resends/+"]
        self._clock = clock
        self._lock = threading.Lock()  # guards the counters and the connection state
        self._bytes: Counter[str] = Counter()
        self._chunks: Counter[str] = Counter()
        self._connected = False
        self._since = clock()
        client_id = creds.client_id if creds is not None else f"dashboard-{uuid.uuid4().hex[:12]}"
        self._session = MqttSession(
            url,
            client_id,
            on_message=self.on_message,
            on_connect=self._on_connect,
            on_disconnect=self._on_disconnect,
            clean_session=True,
            **session_auth(creds, url),
        )

    def start(self) -> None:
        self._session.start()

    def stop(self) -> None:
        self._session.stop()

    def state(self) -> BrokerState:
        with self._lock:
            return BrokerState(
                self.url, self._connected, self._since, dict(self._bytes), dict(self._chunks)
            )

    # --- the MQTT network thread ---------------------------------------------------------
    def on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        release = frame_release_id(payload)
        if release is None:
            return
        key = release.hex()
        with self._lock:
            if key not in self._bytes and len(self._bytes) >= MAX_RELEASES:
                key = "other"  # anyone who may publish there could invent release ids
            self._bytes[key] += len(payload)
            self._chunks[key] += 1

    def _on_connect(self, _session_present: bool) -> None:
        self._session.subscribe(self._topics, qos=0)
        with self._lock:
            self._connected, self._since = True, self._clock()

    def _on_disconnect(self) -> None:
        with self._lock:
            self._connected, self._since = False, self._clock()
