"""A small, typed MQTT session over paho-mqtt 2 shared by the coordinator and the edge.

What it adds to paho, and why:

* explicit client id and a persistent session (MQTT 3.1.1 ``clean_session=False``, the portable
  subset), so QoS 1 messages for a briefly disconnected device wait at the broker;
* reconnect with capped exponential backoff *with jitter*, so a fleet does not reconnect in lockstep
  after a broker restart (paho's own backoff has no jitter: we set its delay before each wait);
* bounded in-memory queues (paho's out-queue is unbounded by default) and delivery tracked with
  ``on_publish``, never ``wait_for_publish()`` (which deadlocks inside callbacks and raises for
  messages queued while offline);
* callbacks that only hand messages over: the caller's handler must not block;
* ``TCP_NODELAY`` on the socket: small packets (requests, acks) leave at once;
* TLS for ``mqtts://`` URLs (the server certificate and its host name are checked against
  ``tls_ca``, or the system's CAs) and a username/password (see ``runtime/credentials.py``);
* failover: given ``URL1,URL2,...`` (the nodes of one cluster), every failure (a connection
  lost, refused or never made) moves the next attempt to the next broker of the list, round
  robin, after the same backoff. The client stays on the broker that works: it does not go back
  to the first one when that returns. One paho client throughout, so the QoS 1 messages it holds
  are sent again on the new broker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from .errors import SetupError
from .urls import BrokerAddress, parse_broker_list

#: the name these lines always had (every client logs its connects and disconnects here)
log = logging.getLogger("modelcast.mqtt")

MessageHandler = Callable[[str, bytes, bool], None]
ConnectHandler = Callable[[bool], None]


@dataclass
class Backoff:
    """Capped exponential backoff with equal jitter: half the delay fixed, half random."""

    initial: float = 0.5
    cap: float = 30.0
    rng: random.Random | None = None
    attempts: int = 0

    def next(self) -> float:
        base = min(self.cap, self.initial * (2 ** min(self.attempts, 30)))
        self.attempts += 1
        rng = self.rng or random
        return float(base / 2 + rng.uniform(0, base / 2))

    def reset(self) -> None:
        self.attempts = 0


class Delivery:
    """Whether one published message has reached the broker (PUBACK for QoS 1). Polled, never
    waited on: ``wait_for_publish()`` deadlocks in callbacks and raises for offline messages."""

    __slots__ = ("_info",)

    def __init__(self, info: paho.MQTTMessageInfo) -> None:
        self._info = info

    @property
    def delivered(self) -> bool:
        return self._info.is_published()


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    retain: bool = True


class MqttSession:
    """One paho client, its network thread and its reconnect policy."""

    def __init__(
        self,
        url: str,
        client_id: str,
        *,
        on_message: MessageHandler,
        on_connect: ConnectHandler | None = None,
        on_disconnect: Callable[[], None] | None = None,
        clean_session: bool = False,
        keepalive: int = 30,
        will: Will | None = None,
        max_inflight: int = 64,
        max_queued: int = 1000,
        backoff: Backoff | None = None,
        tls_ca: str | os.PathLike[str] | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self._brokers = parse_broker_list(url)
        self._current = 0  # index in _brokers of the broker connected or tried next
        self.tls = self._brokers[0].tls
        if tls_ca is not None and not self.tls:
            raise SetupError(f"broker URL {url!r}: TLS credentials need an mqtts:// URL")
        if password is not None and username is None:
            raise SetupError("a password needs a username")
        self.client_id = client_id
        self.keepalive = keepalive
        self._on_message = on_message
        self._on_connect_cb = on_connect
        self._on_disconnect_cb = on_disconnect
        self._backoff = backoff or Backoff()
        self._pending = 0
        self._pending_lock = threading.Condition()
        self.connected = threading.Event()
        #: connected, and every SUBSCRIBE sent on this connection acknowledged (``subscribed``)
        self.subscribed = threading.Event()
        self._unacked_subs: set[int] = set()  # SUBSCRIBE packet ids without their SUBACK
        self._subs_lock = threading.Lock()
        self.reconnects = 0
        self.connects = 0
        self.failovers = 0
        self.bytes_received = 0
        self._client = self._paho_client(clean_session, tls_ca, username, password, url)
        self._client.max_inflight_messages_set(max_inflight)
        self._client.max_queued_messages_set(max_queued)
        if will is not None:
            self._client.will_set(will.topic, will.payload, qos=1, retain=will.retain)
        self._started = False
        self._stopping = False

    def _paho_client(
        self,
        clean_session: bool,
        tls_ca: str | os.PathLike[str] | None,
        username: str | None,
        password: str | None,
        url: str,
    ) -> paho.Client:
        """The paho client: MQTT 3.1.1, TLS and the login if asked, our callbacks."""
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=MQTTProtocolVersion.MQTTv311,
            clean_session=clean_session,
        )
        if self.tls:
            # CERT_REQUIRED and host name checking are paho's defaults once TLS is on.
            client.tls_set(ca_certs=os.fspath(tls_ca) if tls_ca is not None else None)
        if username is not None:
            if not self.tls:
                log.warning("%s: sending a password to %s without TLS", self.client_id, url)
            client.username_pw_set(username, password)
        client.on_connect = self._handle_connect
        client.on_connect_fail = self._handle_connect_fail
        client.on_disconnect = self._handle_disconnect
        client.on_message = self._handle_message
        client.on_publish = self._handle_publish
        client.on_subscribe = self._handle_subscribe
        client.on_socket_open = self._handle_socket_open
        return client

    # --- where ---------------------------------------------------------------------------
    @property
    def broker(self) -> BrokerAddress:
        """The broker connected, or the one the next attempt goes to."""
        return self._brokers[self._current]

    @property
    def host(self) -> str:
        return self.broker.host

    @property
    def port(self) -> int:
        return self.broker.port

    @property
    def url(self) -> str:
        return self.broker.url

    @property
    def brokers(self) -> tuple[BrokerAddress, ...]:
        return self._brokers

    @property
    def broker_list(self) -> str:
        """Every broker of the list, for a log line: ``mqtt://a:1883, mqtt://b:1883``."""
        return ", ".join(b.url for b in self._brokers)

    def _fail_over(self) -> None:
        """Network thread, after a failure: aim the next attempt at the next broker."""
        if len(self._brokers) == 1:
            return
        left = self.broker
        self._current = (self._current + 1) % len(self._brokers)
        self.failovers += 1
        # connect_async only records where to connect (the loop's reconnect does the rest); it
        # is the public way to change the host, which paho's setter refuses mid-connection.
        self._client.connect_async(self.host, self.port, keepalive=self.keepalive)
        log.warning(
            "%s: moving from broker %s to %s (%d of %d)",
            self.client_id,
            left.url,
            self.url,
            self._current + 1,
            len(self._brokers),
        )

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Connect in the background; reconnects forever until ``stop``."""
        self._reconnect_delay(self._backoff.initial, self._backoff.cap)
        self._client.connect_async(self.host, self.port, keepalive=self.keepalive)
        self._stopping = False
        self._client.loop_start()
        self._started = True

    def wait_connected(self, timeout: float) -> bool:
        return self.connected.wait(timeout)

    def wait_subscribed(self, timeout: float) -> bool:
        """Until connected with every subscription made so far acknowledged by the broker: from
        then on, what another client publishes to those topics reaches this one."""
        return self.subscribed.wait(timeout)

    def stop(
        self, final: list[tuple[str, bytes, bool]] | None = None, timeout: float = 3.0
    ) -> None:
        """Publish ``final`` messages (e.g. a clean ``online: false``), then disconnect."""
        if not self._started:
            return
        if final and self.connected.is_set():
            infos = [self._client.publish(t, p, qos=1, retain=r) for t, p, r in final]
            for info in infos:
                try:
                    info.wait_for_publish(timeout)
                except (RuntimeError, ValueError):
                    break
        self._stopping = True
        self._client.disconnect()
        self._client.loop_stop()
        self._started = False
        self.connected.clear()

    # --- publishing ----------------------------------------------------------------------
    def publish(
        self, topic: str, payload: bytes | bytearray, *, qos: int = 1, retain: bool = False
    ) -> Delivery | None:
        """Queue a message. None when paho's bounded queue is full (the caller decides what to
        drop), or for QoS 0 while offline; otherwise a handle that says when the broker has
        acknowledged it. A QoS 1 message queued while offline is sent after the reconnect and
        acknowledged then."""
        with self._pending_lock:
            self._pending += 1
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        # Offline, paho keeps a QoS 1 message for the reconnect but drops a QoS 0 one (and
        # never reports it to on_publish).
        dropped = qos == 0 and info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE or dropped:
            with self._pending_lock:
                self._pending -= 1
                self._pending_lock.notify_all()
            return None
        return Delivery(info)

    @property
    def pending(self) -> int:
        """Messages handed to paho and not yet acknowledged (QoS 1) or written (QoS 0)."""
        return self._pending

    def wait_below(self, limit: int, timeout: float) -> bool:
        """Block (never from a paho callback) until fewer than ``limit`` messages are pending."""
        with self._pending_lock:
            return self._pending_lock.wait_for(lambda: self._pending < limit, timeout)

    def subscribe(self, topics: list[str], qos: int = 1) -> None:
        if not topics:
            return
        # Held while paho queues the packet: its SUBACK (handled on the network thread, which
        # takes this lock) cannot be counted before its packet id is.
        with self._subs_lock:
            rc, mid = self._client.subscribe([(t, qos) for t in topics])
            if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and mid is not None:
                self._unacked_subs.add(mid)
                self.subscribed.clear()

    def unsubscribe(self, topics: list[str]) -> None:
        if topics:
            self._client.unsubscribe(topics)

    # --- paho callbacks (network thread: never block here) -------------------------------
    def _handle_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        # Nagle's algorithm holds a small packet (a chunk request, a PUBACK) until the previous
        # one is acknowledged, and the peer delays that ACK up to 40 ms: on a request/response
        # flow that is a 40 ms stall per round trip. paho leaves Nagle on; turn it off.
        # (not a TCP socket, e.g. a test double: nothing to do)
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _handle_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:  # paho closes the connection next: _handle_disconnect retries
            log.warning("%s: %s refused the connection: %s", self.client_id, self.url, reason)
            return
        self._backoff.reset()
        self._reconnect_delay(self._backoff.initial, self._backoff.cap)
        self.connects += 1
        if self.connects > 1:
            self.reconnects += 1
        session_present = bool(getattr(flags, "session_present", False))
        # With a list, a reconnect follows a failover: a cluster node may resume the session
        # another node held, but not all that was in flight there (QoS 0 requests are gone;
        # JetStream redelivers unacked QoS 1 messages after its ack wait, 30 s, and may drop a
        # client while it elects new stream leaders). Taking it as new makes the caller
        # subscribe again and ask at once for what it lacks; a duplicate later costs nothing.
        distrust = session_present and self.connects > 1 and len(self._brokers) > 1
        log.info(
            "%s: connected to %s:%d%s (session %s)%s",
            self.client_id,
            self.host,
            self.port,
            " over TLS" if self.tls else "",
            ("resumed, taken as new" if distrust else "resumed") if session_present else "new",
            f" (broker {self._current + 1} of {len(self._brokers)})" if self.failovers else "",
        )
        session_present = session_present and not distrust
        with self._subs_lock:  # a new connection: what was in flight on the last one is gone
            self._unacked_subs.clear()
        self.connected.set()
        if self._on_connect_cb is not None:
            self._on_connect_cb(session_present)
        self._check_subscribed()

    def _handle_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        delay = self._set_next_delay()
        log.info(
            "%s: cannot reach %s:%d, retrying in %.1fs", self.client_id, self.host, self.port, delay
        )
        self._fail_over()

    def _handle_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        was = self.connected.is_set()
        self.connected.clear()
        self.subscribed.clear()
        if self._stopping:
            log.info("%s: disconnected", self.client_id)
            return
        # connected, or not yet: refused, or closed before the CONNACK (a cluster node that
        # cannot reach its quorum does that): either way the backoff grows
        delay = self._set_next_delay()
        if was:
            log.warning(
                "%s: disconnected (%s), reconnecting in %.1fs", self.client_id, reason, delay
            )
            if self._on_disconnect_cb is not None:
                self._on_disconnect_cb()
        else:
            log.info("%s: %s did not let us in, retrying in %.1fs", self.client_id, self.url, delay)
        self._fail_over()

    def _set_next_delay(self) -> float:
        delay = self._backoff.next()
        # paho doubles its delay up to max before each wait; pinning min=max=delay makes the
        # next wait exactly our jittered value.
        self._reconnect_delay(delay, delay)
        return delay

    def _reconnect_delay(self, low: float, high: float) -> None:
        # paho annotates these as int, but only does float arithmetic with them; sub-second
        # jitter matters when a whole fleet reconnects at once.
        self._client.reconnect_delay_set(low, high)  # type: ignore[arg-type]

    def _handle_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        self.bytes_received += len(msg.payload)
        try:
            self._on_message(msg.topic, bytes(msg.payload), bool(msg.retain))
        except Exception:  # a handler bug must not kill the network thread
            log.exception("%s: message handler failed on %s", self.client_id, msg.topic)

    def _handle_subscribe(
        self, client: paho.Client, userdata: Any, mid: int, reasons: Any, properties: Any
    ) -> None:
        with self._subs_lock:
            self._unacked_subs.discard(mid)
        self._check_subscribed()

    def _check_subscribed(self) -> None:
        with self._subs_lock:
            if self.connected.is_set() and not self._unacked_subs:
                self.subscribed.set()

    def _handle_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason: Any, properties: Any
    ) -> None:
        with self._pending_lock:
            self._pending = max(0, self._pending - 1)
            self._pending_lock.notify_all()
