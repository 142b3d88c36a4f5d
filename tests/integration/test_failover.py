"""Broker lists and failover (issue 16): every client takes ``--broker URL1,URL2,...`` and, when
its broker fails, moves to the next one with the usual backoff. Two real Mosquittos, not bridged:
here every client lists both, so when the first dies they all meet on the second (which starts
empty: the coordinator publishes its retained state again, the edges subscribe again and ask for
what they lack). A clustered broker, where the nodes share sessions and retained messages, is
in test_nats_cluster.py.

Nothing here sleeps to wait for a condition: every wait is on a recorded MQTT message, an event
or a process, with a timeout.
"""

from __future__ import annotations

import io
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from broker_admin.mosquitto import find_mosquitto
from coordinator.telemetry_tail import run_tail
from modelcast.dashboard.broker_watch import BrokerWatch
from protocol import DeviceStatus, Topics
from runtime.credentials import ClientCreds, session_auth
from runtime.files import sha256_file
from runtime.mqtt import MqttSession
from runtime.urls import format_broker_url
from testkit.faultproxy import FaultProxy
from testkit.fleet_watch import FleetWatch
from testkit.local_broker import LocalBroker, free_loopback_port
from testkit.mqtt_recorder import TopicRecorder
from testkit.synthetic_models import make_model
from tests.support.env import Env, running_env
from tests.support.failover import FAST_RECONNECT, assert_resumed, start_transfer, wait_quarter
from tests.support.secure_broker import secure_broker

MB = 1 << 20
QUICK_STALL = ("--stall-timeout", "2")


@pytest.fixture
def two_brokers(tmp_path: Path) -> Iterator[tuple[LocalBroker, LocalBroker]]:
    """Two Mosquittos of this test's own, which it may kill."""
    if find_mosquitto() is None:
        pytest.skip("needs a local mosquitto binary (apt-get install mosquitto)")
    with (
        LocalBroker(workdir=tmp_path / "b1") as b1,
        LocalBroker(workdir=tmp_path / "b2") as b2,
    ):
        yield b1, b2


def _dead_url() -> str:
    """A loopback port nothing listens on (a node that is down)."""
    return format_broker_url("127.0.0.1", free_loopback_port())


def _eventually(predicate: Callable[[], bool], timeout: float) -> bool:
    """Re-check ``predicate`` every 50 ms until it holds or ``timeout`` passes."""
    tick = threading.Event()
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return True
        tick.wait(0.05)
    return predicate()


# --- one session ----------------------------------------------------------------------------
def test_a_session_skips_a_dead_broker_of_its_list(
    two_brokers: tuple[LocalBroker, LocalBroker],
) -> None:
    _, b2 = two_brokers
    session = MqttSession(f"{_dead_url()},{b2.url}", "skipper", on_message=lambda *_: None)
    session.start()
    try:
        assert session.wait_connected(30), "never connected to the second broker"
        assert session.url == b2.url
        assert session.failovers >= 1
    finally:
        session.stop()


def test_a_session_moves_when_its_broker_dies_and_subscribes_again(
    two_brokers: tuple[LocalBroker, LocalBroker],
) -> None:
    b1, b2 = two_brokers
    got: list[tuple[str, bytes]] = []
    arrived = threading.Event()
    on_b2 = threading.Event()
    connected_to: list[str] = []

    def on_message(topic: str, payload: bytes, retained: bool) -> None:
        got.append((topic, payload))
        arrived.set()

    def on_connect(_present: bool) -> None:
        connected_to.append(session.url)
        session.subscribe(["failover/t"])
        if session.url == b2.url:
            on_b2.set()

    session = MqttSession(
        f"{b1.url},{b2.url}", "mover", on_message=on_message, on_connect=on_connect
    )
    session.start()
    try:
        assert session.wait_subscribed(30)
        assert session.url == b1.url
        b1.kill()
        assert on_b2.wait(30), f"never moved to broker 2: {connected_to}"
        # subscribed again on broker 2 (the event was cleared by the disconnect): one publish
        # from another client must now arrive
        assert session.wait_subscribed(30)
        with TopicRecorder(b2.host, b2.port) as probe:
            probe.publish("failover/t", b"hello from b2")
            assert arrived.wait(10), "the subscription made again on broker 2 was not in place"
        assert got and got[0] == ("failover/t", b"hello from b2"), got
        assert connected_to[:1] == [b1.url] and b2.url in connected_to, connected_to
    finally:
        session.stop()


# --- the clients that take --broker -----------------------------------------------------------
def test_telemetry_tail_and_the_dashboard_take_a_list(
    two_brokers: tuple[LocalBroker, LocalBroker], mqtt_fleet: str
) -> None:
    _, b2 = two_brokers
    topics = Topics(mqtt_fleet)
    status = DeviceStatus(device="d1", online=True, ts=1.0, agent="fake/1")
    with TopicRecorder(b2.host, b2.port) as probe:
        probe.publish(topics.status("d1"), status.encode(), retain=True)
    brokers = f"{_dead_url()},{b2.url}"

    out = io.StringIO()
    stop = threading.Event()
    timer = threading.Timer(30, stop.set)  # a bound on the wait, not a sleep
    timer.start()
    try:
        assert run_tail(brokers, mqtt_fleet, kind="status", count=1, out=out, stop=stop) == 1
    finally:
        timer.cancel()
    assert "d1" in out.getvalue() and "(retained)" in out.getvalue(), out.getvalue()

    watch = BrokerWatch(brokers, mqtt_fleet)
    watch.start()
    try:
        # BrokerWatch says so from its on_connect, just after the session's event
        assert watch._session.wait_connected(30)
        assert _eventually(lambda: watch.state().connected, 10)
    finally:
        watch.stop()


# --- a whole fleet moves mid-transfer ---------------------------------------------------------
@pytest.fixture
def env_b1(
    tmp_path: Path, two_brokers: tuple[LocalBroker, LocalBroker], mqtt_fleet: str
) -> Iterator[Env]:
    with running_env(tmp_path, two_brokers[0], mqtt_fleet) as e:
        yield e


def test_broker_killed_mid_transfer_every_client_moves_and_every_edge_finishes(
    env_b1: Env, two_brokers: tuple[LocalBroker, LocalBroker]
) -> None:
    """Three edges download 8 MB through broker 1 (behind a 6 MB/s link, so the transfer lasts);
    broker 1 is SIGKILLed when every edge holds a quarter. The coordinator and the edges move to
    broker 2 on their own; each edge resumes (asks broker 2 only for chunks it lacked at the kill,
    in the same process, the same boot) and activates the exact bytes.

    The brokers share nothing, so an edge that reaches broker 2 before the coordinator has
    subscribed there loses its first request, and asks again after a stall timeout (2 s here,
    10 s by default): the cost of independent brokers, which a cluster does not have."""
    env = env_b1
    b1, b2 = two_brokers
    model = make_model(env.tmp / "m1.onnx", 8 * MB, seed=41)
    devices = ["fo-0", "fo-1", "fo-2"]
    with FaultProxy(b1.host, b1.port, rate_bytes_per_s=6 * MB) as slow_b1:
        edges, n = start_transfer(
            env,
            model,
            devices,
            edge_url=f"{slow_b1.url},{b2.url}",
            coordinator_url=f"{b1.url},{b2.url}",
            extra=(*FAST_RECONNECT, *QUICK_STALL),
        )
        with FleetWatch(b2.url, env.fleet) as after:
            held = wait_quarter(env.watch, devices, n)
            b1.kill()
            for d in devices:
                after.wait_active(d, "m", 1, timeout=90)
            assert env.coordinator is not None and env.coordinator.connected
            assert env.coordinator._session.url == b2.url
            assert_resumed(after, after.recorder.messages, held, n)
    for e in edges:
        assert sha256_file(e.model_path("m", 1)) == sha256_file(model), e.device
        assert "moving from broker" in e.log(), e.device


# --- over TLS, logged in ------------------------------------------------------------------------
def test_a_tls_session_with_credentials_fails_over_to_the_second_node(tmp_path: Path) -> None:
    """Two secure brokers sharing one CA and one user base (the second runs on a copy of the
    first's state, as the nodes of a cluster share theirs): a device logged in over TLS with its
    credentials moves to the second when the first stops, checking its certificate there."""
    first_state = tmp_path / "node1"
    with secure_broker(first_state, [("device", "d1", "f")]) as node1:
        second_state = tmp_path / "node2"
        shutil.copytree(
            first_state, second_state, ignore=shutil.ignore_patterns("broker.pid", "*.log")
        )
        with secure_broker(second_state) as node2:
            brokers = f"{node1.url},{node2.url}"
            creds = ClientCreds.load(node1.creds_path("d1"))
            session = MqttSession(
                brokers,
                creds.client_id,
                on_message=lambda *_: None,
                **session_auth(creds, brokers),
            )
            session.start()
            try:
                assert session.wait_connected(30)
                assert session.url == node1.url
                node1.stop()
                assert _eventually(lambda: session.connects == 2, 30), session.connects
                assert session.url == node2.url and session.tls
            finally:
                session.stop()
