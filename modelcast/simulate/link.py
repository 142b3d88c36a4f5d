"""One virtual device's MQTT connection, on the process's ``ClientMux``.

Like the edge's session (``runtime.mqtt.MqttSession``): its own client id, a persistent session
(MQTT 3.1.1, ``clean_session`` false), a will that says ``online: false`` (retained), capped
exponential reconnect backoff with jitter (``runtime.mqtt.Backoff``). Unlike it, no thread: the
mux calls paho, and paho calls back here, on the process's one loop thread.

Connects are paced (``WavePacer``: at most ``rate`` a second in the process, jittered), the
first ones and the reconnects alike, so that a thousand devices starting (or coming back after
a broker restart) do not flood the broker's accept queue. Each failed attempt is counted by
reason, so that a broker that refuses connections can be named: ``refused`` (nothing listens),
``closed-before-connack`` (the broker accepted the TCP connection and closed it: Mosquitto does
that at ``max_connections`` and when it is out of file descriptors), ``no-connack`` (no answer
within ``connack_timeout``), ``connack: REASON`` (refused by the broker, e.g. not authorized),
``file-descriptors`` (this process is out of them).
"""

from __future__ import annotations

import errno
import random
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from runtime.mqtt import Backoff, Will

from .mux import ClientMux

#: what paho may hold for one device: the edge's own settings (``edge_node.agent``)
MAX_INFLIGHT = 20
MAX_QUEUED = 200


class LinkHandler(Protocol):
    """What a link tells its device (on the loop thread)."""

    def on_connect(self, session_present: bool) -> None: ...

    def on_disconnect(self) -> None: ...

    def on_message(self, topic: str, payload: bytes) -> None: ...


class WavePacer:
    """When the next connect of this process may start: at most ``rate`` a second, each slot
    jittered within its interval, so connects come in a steady, uneven stream."""

    def __init__(self, rate: float, clock: Callable[[], float], rng: random.Random) -> None:
        self._gap = 1.0 / rate
        self._clock = clock
        self._rng = rng
        self._next = 0.0

    def slot(self, not_before: float = 0.0) -> float:
        start = max(self._clock(), self._next, not_before)
        self._next = start + self._gap
        return start + self._rng.uniform(0.0, self._gap)


class Link:
    def __init__(
        self,
        mux: ClientMux,
        pacer: WavePacer,
        *,
        brokers: tuple[tuple[str, int], ...],
        client_id: str,
        will: Will,
        keepalive: int,
        backoff: Backoff,
        connack_timeout: float,
    ) -> None:
        self._mux = mux
        self._pacer = pacer
        if not brokers:
            raise ValueError("a link needs at least one broker")
        self._brokers = brokers
        self._current = 0  # the broker the next attempt goes to (``--broker URL1,URL2``)
        self._dialled: tuple[str, int] | None = None  # the broker paho was last connected to
        self._moved = False  # this connection is on another broker than the last one
        self.failovers = 0
        self._keepalive = keepalive
        self._backoff = backoff
        self._connack_timeout = connack_timeout
        self._handler: LinkHandler | None = None
        self._attempt = 0  # numbers connect attempts, so a stale timer can tell it is stale
        self._counted = False  # this attempt's failure is counted already
        self._started = False
        self._stopping = False
        self.connected = False
        self.ever_connected = False
        self.connects = 0
        self.acked = 0  # QoS 1 messages the broker acknowledged
        self._unacked: set[int] = set()
        self.failures: Counter[str] = Counter()
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv311,
            clean_session=False,
        )
        self.client.max_inflight_messages_set(MAX_INFLIGHT)
        self.client.max_queued_messages_set(MAX_QUEUED)
        self.client.will_set(will.topic, will.payload, qos=1, retain=will.retain)
        self.client.connect_timeout = min(connack_timeout, 5.0)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        mux.attach(self.client)

    def start(self, handler: LinkHandler) -> None:
        """Connect at the next free slot of the wave, and stay connected until ``stop``."""
        self._handler = handler
        self._schedule(0.0)

    @property
    def reconnects(self) -> int:
        return max(0, self.connects - 1)

    @property
    def unacked(self) -> int:
        """QoS 1 messages handed to paho and not acknowledged by the broker yet."""
        return len(self._unacked)

    # --- the wire (``edge_node.shared.Wire``) --------------------------------------------
    def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> int | None:
        """Hand a message to paho; its message id, or None when paho refused it (its queue is
        full, or QoS 0 while offline)."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        # offline, paho keeps a QoS 1 message for the reconnect but drops a QoS 0 one
        dropped = qos == 0 and info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE or dropped:
            return None
        if qos:
            self._unacked.add(info.mid)
        return info.mid

    def subscribe(self, topics: list[str], qos: int = 1) -> None:
        if topics and self.connected:
            self.client.subscribe([(t, qos) for t in topics])

    def unsubscribe(self, topics: list[str]) -> None:
        if topics and self.connected:
            self.client.unsubscribe(topics)

    def stop(self, final: list[tuple[str, bytes]]) -> None:
        """Publish ``final`` (retained, QoS 1: a clean ``online: false``) and disconnect; the
        loop must run on for them to leave."""
        self._stopping = True
        if self.connected:
            for topic, payload in final:
                self.client.publish(topic, payload, qos=1, retain=True)
            self.client.disconnect()

    # --- connecting ----------------------------------------------------------------------
    def _schedule(self, delay: float) -> None:
        self._attempt += 1
        attempt = self._attempt
        when = self._pacer.slot(self._mux.now() + delay)
        self._mux.call_at(when, lambda: self._connect(attempt))

    def _connect(self, attempt: int) -> None:
        if attempt != self._attempt or self._stopping:
            return
        self._counted = False
        broker = self._brokers[self._current]
        try:
            if self._started and broker == self._dialled:
                self.client.reconnect()
            else:
                self._started = True
                self._moved = self._dialled is not None
                self._dialled = broker
                self.client.connect(*broker, keepalive=self._keepalive)
        except OSError as exc:
            self._failed(_os_reason(exc))
            return
        self._mux.call_later(self._connack_timeout, lambda: self._check_connack(attempt))

    def _check_connack(self, attempt: int) -> None:
        """No CONNACK yet: give this attempt up (the disconnect schedules the next)."""
        if attempt == self._attempt and not self.connected and not self._stopping:
            self._count("no-connack")
            if self.client.disconnect() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._next_broker()
                self._schedule(self._backoff.next())  # no socket: no disconnect callback

    def _count(self, reason: str) -> None:
        self.failures[reason] += 1
        self._counted = True

    def _failed(self, reason: str) -> None:
        self._count(reason)
        self._next_broker()
        self._schedule(self._backoff.next())

    def _next_broker(self) -> None:
        """After a failure, the next attempt goes to the next broker of the list (as
        ``runtime.mqtt.MqttSession`` does); with one broker, nothing changes."""
        if len(self._brokers) > 1:
            self._current = (self._current + 1) % len(self._brokers)
            self.failovers += 1

    # --- paho callbacks (the loop thread) ------------------------------------------------
    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            self._count(f"connack: {reason}")
            return  # paho closes the socket: _on_disconnect schedules the next attempt
        self._backoff.reset()
        self.connected = True
        self.ever_connected = True
        self.connects += 1
        if self._handler is not None:
            # on another broker, the session (and what was in flight) stayed on the old one
            present = bool(getattr(flags, "session_present", False)) and not self._moved
            self._handler.on_connect(present)

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        was = self.connected
        self.connected = False
        if was and self._handler is not None:
            self._handler.on_disconnect()
        if self._stopping:
            return
        if not was and not self._counted:
            self._count("closed-before-connack")
        self._next_broker()
        self._schedule(self._backoff.next())

    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason: Any, properties: Any
    ) -> None:
        if mid in self._unacked:
            self._unacked.discard(mid)
            self.acked += 1

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        if self._handler is not None:
            self._handler.on_message(msg.topic, bytes(msg.payload))


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, TimeoutError):
        return "connect-timeout"
    if exc.errno in (errno.EMFILE, errno.ENFILE):
        return "file-descriptors"
    return errno.errorcode.get(exc.errno or 0, type(exc).__name__)
