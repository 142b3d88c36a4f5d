"""The NATS and RabbitMQ production profiles (``modelcast broker --kind nats|rabbitmq --secure``):
TLS only, no anonymous access or wrong password, every identity in its lane (the grants of the
Mosquitto ACL), and a whole delivery with each identity's own credentials.

"Not delivered" is proved by ordering where the broker keeps the connection: the offender
publishes the forbidden message, then an allowed marker on the same connection, and a
coordinator (allowed to see everything) waits for the marker. RabbitMQ closes a connection that
publishes where it may not; then the marker goes on a new connection of the same identity.
"""

from __future__ import annotations

import io
import json
import os
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from broker_admin.credstore import CredStore
from broker_admin.other_brokers import write_profile
from broker_admin.tlsca import answers_tls, ensure_tls
from coordinator.registry import Registry
from coordinator.service import Coordinator, CoordinatorConfig
from coordinator.telemetry_tail import run_tail
from runtime.credentials import ClientCreds
from runtime.files import sha256_file
from runtime.urls import format_broker_url
from testkit.broker_process import BrokerChild
from testkit.brokers import installed
from testkit.edge_process import EdgeProcess
from testkit.fleet_watch import FleetWatch
from testkit.local_broker import free_loopback_port
from testkit.mqtt_recorder import TopicRecorder
from testkit.nats_broker import find_nats_server
from testkit.plain_mqtt import plain_client
from testkit.rabbitmq_broker import RabbitMQBroker
from testkit.synthetic_models import make_model
from tests.support.fleet import make_keys, release_and_deploy

FLEET = "prod"
BASE = f"modelcast/{FLEET}"
HOST = "127.0.0.1"
TIMEOUT = 15.0
IDENTITIES = [
    ("coordinator", "coord"),
    ("coordinator", "watch"),  # the tests' own view of the fleet
    ("device", "d1"),
    ("device", "d2"),
    ("integrator", "integ"),
]


def _kinds() -> list[Any]:
    kinds = []
    for kind in ("nats", "rabbitmq"):
        required = os.environ.get(f"MODELCAST_REQUIRE_{kind.upper()}") == "1"
        skip = pytest.mark.skipif(not installed(kind) and not required, reason=f"needs {kind}")
        kinds.append(pytest.param(kind, marks=skip))
    return kinds


@dataclass
class ProfileBroker:
    kind: str
    state: Path
    port: int

    @property
    def url(self) -> str:
        return format_broker_url(HOST, self.port, tls=True)

    @property
    def ca_file(self) -> Path:
        return self.state / "ca.crt"

    def creds_path(self, name: str) -> Path:
        return self.state / "creds" / f"{name}.json"

    def password(self, name: str) -> str:
        return str(json.loads(self.creds_path(name).read_text())["password"])

    def recorder(self, name: str, topics: Sequence[str] | str = ()) -> TopicRecorder:
        return TopicRecorder(
            HOST,
            self.port,
            topics,
            tls_ca=self.ca_file,
            username=name,
            password=self.password(name),
            client_id=name,
            timeout=TIMEOUT,
        )


@contextmanager
def _run_nats(state: Path, port: int) -> Iterator[None]:
    [conf] = write_profile(state, "nats", port=port, bind=HOST)
    binary = find_nats_server()
    assert binary is not None
    child = BrokerChild("nats-server (production profile)", state / "nats.log")
    child.spawn(
        [binary, "-c", str(conf)],
        ready=lambda: answers_tls(HOST, port, state / "ca.crt"),
        timeout=30,
    )
    try:
        yield
    finally:
        child.stop()


@contextmanager
def _run_rabbitmq(state: Path, port: int) -> Iterator[None]:
    write_profile(state, "rabbitmq", port=port, bind=HOST)
    node = RabbitMQBroker(
        workdir=state / "rabbitmq-node",
        mqtt_port=port,
        conf=lambda _node: (state / "rabbitmq.conf").read_text(),
        ready=partial(answers_tls, ca_file=state / "ca.crt"),
    )
    with node:
        yield


@pytest.fixture(scope="module", params=_kinds())
def profile(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProfileBroker]:
    kind: str = request.param
    state = tmp_path_factory.mktemp(f"{kind}-state")
    ensure_tls(state)
    store = CredStore(state)
    store.prepare()
    for role, name in IDENTITIES:
        store.add(role, name, fleet=FLEET)
    port = free_loopback_port()
    run = _run_nats if kind == "nats" else _run_rabbitmq
    with run(state, port):
        yield ProfileBroker(kind, state, port)


@dataclass
class Login:
    client: mqtt.Client
    answered: threading.Event
    subscribed: threading.Event
    closed: threading.Event
    connack: Any = None
    subacks: list[str] | None = None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def login(
    broker: ProfileBroker, name: str | None, password: str | None = None, client_id: str = ""
) -> Login:
    """A plain paho client over TLS, logged in as ``name`` (None: anonymous)."""
    client = plain_client(client_id or name or "anonymous-probe")
    client.tls_set(ca_certs=str(broker.ca_file))
    if name is not None:
        client.username_pw_set(name, password if password is not None else broker.password(name))
    out = Login(client, threading.Event(), threading.Event(), threading.Event())

    def on_connect(c: mqtt.Client, u: object, f: object, rc: Any, p: object) -> None:
        out.connack = rc
        out.answered.set()

    def on_subscribe(c: mqtt.Client, u: object, mid: int, codes: list[Any], p: object) -> None:
        out.subacks = [str(code) for code in codes]
        out.subscribed.set()

    def on_disconnect(*_args: object) -> None:
        out.closed.set()
        out.subscribed.set()  # no SUBACK will come

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_disconnect = on_disconnect
    client.connect(HOST, broker.port)
    client.loop_start()
    out.answered.wait(TIMEOUT)
    return out


def refused(outcome: Login) -> bool:
    outcome.client.loop_stop()
    return outcome.connack is None or bool(outcome.connack.is_failure)


def test_only_tls_and_a_known_password_get_in(profile: ProfileBroker) -> None:
    assert refused(login(profile, None))
    assert refused(login(profile, "d1", password="not-the-password"))
    allowed = login(profile, "d1")
    assert not refused(allowed), allowed.connack
    allowed.close()
    # plain MQTT on the TLS port: never a CONNACK
    with socket.create_connection((HOST, profile.port), timeout=3) as raw:
        raw.sendall(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")
        try:
            answer = raw.recv(4)
        except OSError:
            answer = b""
    assert not answer.startswith(b"\x20"), answer


def _forbidden_is_not_delivered(
    profile: ProfileBroker, offender: str, topic: str, coord: TopicRecorder
) -> None:
    """``offender`` publishes to ``topic``; then d1 publishes a marker on the same connection
    (or a new one where the broker closed it, or where the offender is not d1)."""
    conn = login(profile, offender)
    conn.client.publish(topic, b"forbidden", qos=1)
    if offender != "d1":
        conn.close()
        conn = login(profile, "d1")
    marker = conn.client.publish(f"{BASE}/devices/d1/telemetry/marker", b"marker", qos=1)
    deadline = time.monotonic() + TIMEOUT
    # acknowledged, or the connection closed (paho has no event that says either)
    while not marker.is_published() and not conn.closed.wait(0.05):
        assert time.monotonic() < deadline, "the marker was neither acknowledged nor refused"
    if not marker.is_published():  # the broker closed the connection for the forbidden one
        conn.close()
        conn = login(profile, "d1")
        conn.client.publish(f"{BASE}/devices/d1/telemetry/marker", b"marker", qos=1)
    coord.wait_for(lambda m: m.payload == b"marker")
    conn.close()
    assert not [m for m in coord.messages if m.payload == b"forbidden"], (offender, topic)
    coord.clear()


def test_each_identity_publishes_only_in_its_lane(profile: ProfileBroker) -> None:
    with profile.recorder("coord", [f"{BASE}/#"]) as coord:
        own = login(profile, "d1")
        own.client.publish(f"{BASE}/devices/d1/state", b"mine", qos=1)
        assert coord.wait_for_topic(f"{BASE}/devices/d1/state").payload == b"mine"
        own.close()
        coord.clear()
        for offender, topic in (
            ("d1", f"{BASE}/devices/d2/state"),
            ("d1", f"{BASE}/releases/index"),
            ("d1", f"{BASE}/commands/d2"),
            ("integ", f"{BASE}/devices/d1/status"),
        ):
            _forbidden_is_not_delivered(profile, offender, topic, coord)


@pytest.mark.parametrize(
    ("name", "topic", "allowed"),
    [
        ("d1", f"{BASE}/releases/index", True),
        ("d1", f"{BASE}/chunks/m/1/0", True),
        ("d1", f"{BASE}/commands/d1", True),
        ("d1", f"{BASE}/devices/d2/state", False),
        ("d1", f"{BASE}/commands/d2", False),
        ("d1", f"{BASE}/devices/+/status", False),
        ("integ", f"{BASE}/devices/+/telemetry/metrics", True),
        ("integ", f"{BASE}/devices/+/status", True),
        ("integ", f"{BASE}/releases/index", False),
        ("integ", f"{BASE}/devices/+/request", False),
    ],
)
def test_each_identity_subscribes_only_in_its_lane(
    profile: ProfileBroker, name: str, topic: str, allowed: bool
) -> None:
    conn = login(profile, name)
    try:
        conn.client.subscribe(topic, qos=1)
        # a refused subscription: a failed SUBACK (NATS) or a closed connection (RabbitMQ)
        assert conn.subscribed.wait(TIMEOUT), "neither a SUBACK nor a closed connection"
        granted = conn.subacks == ["Granted QoS 1"] and not conn.closed.is_set()
        assert granted == allowed, (conn.subacks, conn.closed.is_set())
    finally:
        conn.close()


def test_rabbitmq_refuses_a_client_id_other_than_the_username(profile: ProfileBroker) -> None:
    if profile.kind != "rabbitmq":
        pytest.skip("NATS cannot tie a client id to a username (docs/BROKERS.md)")
    conn = login(profile, "d1", client_id="d2")
    try:
        # the session queue is named after the client id: d1 may declare only its own
        conn.client.subscribe(f"{BASE}/releases/index", qos=1)
        assert conn.subscribed.wait(TIMEOUT), "neither a SUBACK nor a closed connection"
        assert conn.closed.is_set() or conn.subacks != ["Granted QoS 1"], conn.subacks
    finally:
        conn.close()
    # its own client id works (the same login, the same subscription)
    same = login(profile, "d1", client_id="d1")
    try:
        same.client.subscribe(f"{BASE}/releases/index", qos=1)
        assert same.subscribed.wait(TIMEOUT) and same.subacks == ["Granted QoS 1"]
    finally:
        same.close()


def test_a_delivery_through_the_profile(profile: ProfileBroker, tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys")
    registry = Registry(tmp_path / "coord.db")
    model = make_model(tmp_path / "m.onnx", 300_000, seed=7)
    coordinator = Coordinator(
        CoordinatorConfig(
            broker_url=profile.url,
            db_path=tmp_path / "coord.db",
            keydir=keys.dir,
            fleet=FLEET,
            creds=ClientCreds.load(profile.creds_path("coord")),
            broker_kind=profile.kind,
        )
    )
    edge = EdgeProcess(
        "d2",
        broker_url=profile.url,
        data=tmp_path / "edge",
        trust=keys.root_pub,
        fleet=FLEET,
        log_dir=tmp_path,
        extra=("--creds", str(profile.creds_path("d2"))),
    )
    watch = FleetWatch(profile.recorder("watch", [f"{BASE}/devices/#"]), FLEET)
    with watch:
        coordinator.start()
        edge.start()
        try:
            release_and_deploy(registry, keys, model, "m", 1, FLEET, chunk_size=64 * 1024)
            watch.wait_active("d2", "m", 1, timeout=60)
            assert sha256_file(edge.model_path("m", 1)) == sha256_file(model)
            out = io.StringIO()
            printed = run_tail(
                profile.url,
                FLEET,
                device="d2",
                kind="status",
                count=1,
                out=out,
                creds=ClientCreds.load(profile.creds_path("integ")),
            )
            assert printed == 1 and "d2" in out.getvalue()
        finally:
            coordinator.stop()
            edge.stop()
            print(f"----- edge log (tail) -----\n{edge.log()[-3000:]}")
