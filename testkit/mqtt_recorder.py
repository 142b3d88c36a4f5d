"""A plain paho-mqtt 2 client that records what it sees, for asserting on topics.

Deliberately independent of the project's own MQTT code (``runtime/mqtt.py``), so tests and
benchmarks observe the wire through a second, boring implementation. All waiting is on a
Condition or an Event with a timeout; nothing polls or sleeps.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, NamedTuple, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from .errors import RecorderError, WaitTimeout
from .plain_mqtt import plain_client

T = TypeVar("T")

#: a wait with a ``check`` runs it at least this often (a dead process ends the wait early)
CHECK_EVERY_S = 0.5


class Received(NamedTuple):
    topic: str
    payload: bytes
    retain: bool
    #: ``time.monotonic()`` when it arrived (on the network thread, before any waiter woke)
    at: float = 0.0


class TopicRecorder:
    """Subscribe to `topics` on host:port and record every message received.

    After a lost connection paho reconnects by itself and the recorder subscribes
    again (clean sessions lose subscriptions), so it survives broker restarts.
    ``tls_ca`` turns TLS on (the broker's certificate checked against that CA file);
    ``username``/``password`` log in.
    """

    def __init__(
        self,
        host: str,
        port: int,
        topics: Iterable[str] | str = (),
        *,
        qos: int = 1,
        client_id: str | None = None,
        timeout: float = 10.0,
        tls_ca: str | os.PathLike[str] | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.qos = qos
        self.timeout = timeout
        self.client_id = client_id or f"probe-{uuid.uuid4().hex[:12]}"
        self._filters: list[str] = [topics] if isinstance(topics, str) else list(topics)
        self._cond = threading.Condition()
        self._items: list[Received] = []
        self._subacks: dict[int, list[ReasonCode]] = {}
        self._connected = threading.Event()
        self._connect_result: ReasonCode | None = None
        self.connects = 0
        self.disconnects = 0
        #: set by every lost connection (and never cleared): "was it ever cut?"
        self.disconnected = threading.Event()
        self._client = plain_client(self.client_id)
        if tls_ca is not None:
            self._client.tls_set(ca_certs=os.fspath(tls_ca))
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        # Reconnect quickly after a broker restart or a proxy cut.
        self._client.reconnect_delay_set(min_delay=1, max_delay=2)

    # -- lifecycle ----------------------------------------------------------
    def start(self) -> TopicRecorder:
        """Connect, wait for CONNACK, then subscribe and wait for the SUBACK."""
        self._client.connect(self.host, self.port, keepalive=30)
        self._client.loop_start()
        if not self._connected.wait(self.timeout):
            self.close()
            raise RecorderError(f"no CONNACK from {self.host}:{self.port} in {self.timeout}s")
        if self._connect_result is not None and self._connect_result.is_failure:
            self.close()
            raise RecorderError(f"broker refused connection: {self._connect_result}")
        filters, self._filters = self._filters, []
        for topic_filter in filters:
            self.subscribe(topic_filter)
        return self

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> TopicRecorder:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- actions ------------------------------------------------------------
    def subscribe(self, topic_filter: str, qos: int | None = None) -> None:
        """Subscribe and block until the broker's SUBACK grants it."""
        self._filters.append(topic_filter)
        result, mid = self._client.subscribe(topic_filter, self.qos if qos is None else qos)
        if result != mqtt.MQTT_ERR_SUCCESS or mid is None:
            raise RecorderError(f"subscribe {topic_filter!r} failed: {mqtt.error_string(result)}")
        with self._cond:
            if not self._cond.wait_for(lambda: mid in self._subacks, self.timeout):
                raise RecorderError(f"no SUBACK for {topic_filter!r} in {self.timeout}s")
            codes = self._subacks.pop(mid)
        if any(code.is_failure for code in codes):
            raise RecorderError(f"subscription {topic_filter!r} refused: {codes}")

    def publish(
        self, topic: str, payload: bytes | str | None, qos: int = 1, retain: bool = False
    ) -> None:
        """Publish and wait until it is delivered to the broker (PUBACK for QoS 1).

        Must not be called from a paho callback: it blocks on the network thread.
        """
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(self.timeout)
        if not info.is_published():
            raise RecorderError(f"publish to {topic!r} not acknowledged in {self.timeout}s")

    def publish_many(
        self, items: Iterable[tuple[str, bytes]], qos: int = 0, retain: bool = False
    ) -> int:
        """Publish as fast as paho takes them (a flood), then wait until the last one has been
        handed to the broker (messages of one connection go out in order). Returns the count."""
        info = None
        count = 0
        for topic, payload in items:
            info = self._client.publish(topic, payload, qos=qos, retain=retain)
            count += 1
        if info is not None:
            info.wait_for_publish(max(self.timeout, 120.0))
            if not info.is_published():
                raise RecorderError(f"flood of {count} messages not sent in time")
        return count

    # -- observations -------------------------------------------------------
    @property
    def messages(self) -> list[Received]:
        with self._cond:
            return list(self._items)

    def clear(self) -> None:
        with self._cond:
            self._items.clear()

    def inspect(self, read: Callable[[Sequence[Received]], T]) -> T:
        """``read(every message recorded so far)``, under the recorder's lock (see
        ``wait_until``)."""
        with self._cond:
            return read(self._items)

    def wait_until(
        self,
        probe: Callable[[Sequence[Received]], T | None],
        timeout: float | None = None,
        *,
        check: Callable[[], None] | None = None,
    ) -> T | None:
        """Block until ``probe(every message recorded so far)`` returns something other than
        None, and return that; None after ``timeout``.

        ``probe`` runs under the recorder's lock, again after each message: it must be quick,
        must not call the recorder, and must not keep the sequence. ``check`` runs at least
        every ``CHECK_EVERY_S`` and may raise to give up early (a process it waits on died).
        """
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        with self._cond:
            while True:
                found = probe(self._items)
                if found is not None:
                    return found
                if check is not None:
                    check()
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left if check is None else min(left, CHECK_EVERY_S))

    def wait_for(
        self, predicate: Callable[[Received], bool], timeout: float | None = None
    ) -> Received:
        """First recorded message (already seen or arriving) matching predicate."""

        def first(items: Sequence[Received]) -> Received | None:
            return next((item for item in items if predicate(item)), None)

        found = self.wait_until(first, timeout)
        if found is None:
            with self._cond:
                seen = "\n  ".join(
                    f"{i.topic} retain={i.retain} {i.payload[:60]!r}" for i in self._items
                )
                count = len(self._items)
            limit = self.timeout if timeout is None else timeout
            raise WaitTimeout(f"no matching message within {limit}s; {count} seen:\n  {seen}")
        return found

    def wait_for_topic(self, topic: str, timeout: float | None = None) -> Received:
        return self.wait_for(lambda item: item.topic == topic, timeout)

    def wait_connected(self, timeout: float | None = None) -> None:
        """Block until connected (e.g. again, after a broker restart)."""
        if not self._connected.wait(self.timeout if timeout is None else timeout):
            raise WaitTimeout(f"not connected to {self.host}:{self.port}")

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # -- paho callbacks (network thread) -------------------------------------
    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._connect_result = reason_code
        if reason_code.is_failure:
            self._connected.set()  # let start() see the failure
            return
        self.connects += 1
        if self.connects > 1 and self._filters:
            # Reconnected with a clean session: subscriptions are gone, renew them.
            client.subscribe([(f, self.qos) for f in self._filters])
        self._connected.set()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._connected.clear()
        self.disconnects += 1
        self.disconnected.set()

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        with self._cond:
            self._subacks[mid] = reason_codes
            self._cond.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        received = Received(
            message.topic, bytes(message.payload), bool(message.retain), time.monotonic()
        )
        with self._cond:
            self._items.append(received)
            self._cond.notify_all()
