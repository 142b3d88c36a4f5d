"""The production broker profile, attacked: TLS only, no anonymous access, every identity kept
to its lane by the ACL, revocation and rotation effective at once, and a whole delivery through it.

Mosquitto acknowledges an unauthorized MQTT 3.1.1 PUBLISH like any other and drops it, so "it
was not delivered" is proved by ordering: the attacker publishes the forbidden messages, then an
allowed marker, on one connection; a subscriber allowed to see everything waits for the marker.
The broker handles one connection's packets in order and queues them to a subscriber in that
order, so anything forbidden that got through would have arrived before the marker. Where the
forbidden sender can publish nothing at all (an integrator), the broker's debug log line
"Denied PUBLISH" (written before its PUBACK) is the direct proof, and a device's marker sent
after the integrator's PUBACKs the ordering one (this relies on Mosquitto routing a message
before acknowledging it, which it does: one thread, routing inside the PUBLISH handler).
"""

from __future__ import annotations

import functools
import io
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker_admin.credstore import CredStore
from broker_admin.profiles import render_production
from broker_admin.tlsca import answers_tls, ensure_tls, make_ca
from coordinator.registry import Registry
from coordinator.service import Coordinator, CoordinatorConfig
from coordinator.telemetry_tail import run_tail
from protocol import Topics
from runtime.credentials import ClientCreds
from runtime.files import sha256_file
from runtime.mqtt import MqttSession
from testkit.edge_process import EdgeProcess
from testkit.fleet_watch import FleetWatch
from testkit.local_broker import LocalBroker
from testkit.synthetic_models import make_model
from tests.support.fleet import make_keys, release_and_deploy
from tests.support.secure_broker import (
    SecureBroker,
    attempt_connect,
    needs_mosquitto,
    secure_broker,
)

FLEET = "f"
OTHER_FLEET = "e2e"
T = Topics(FLEET)

IDENTITIES = [
    ("coordinator", "coord", FLEET),  # publishes what coordinators publish
    ("coordinator", "watch", FLEET),  # sees everything of the fleet: the referee
    ("device", "d1", FLEET),
    ("device", "d2", FLEET),
    ("integrator", "integ", FLEET),
    ("device", "victim", FLEET),  # revoked by its test
    ("device", "rotated", FLEET),  # given a new password by its test
    ("coordinator", "e2e-coord", OTHER_FLEET),
    ("coordinator", "e2e-watch", OTHER_FLEET),
    ("device", "e2e-dev", OTHER_FLEET),
    ("integrator", "e2e-integ", OTHER_FLEET),
]

pytestmark = needs_mosquitto()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    state = tmp_path_factory.mktemp("secure-broker")
    with secure_broker(state, IDENTITIES) as running:
        try:
            yield running
        finally:
            print("----- broker log (tail) -----\n" + running.log_text()[-4000:])


def nonce() -> bytes:
    return uuid.uuid4().hex.encode()


def refused_publish(broker: SecureBroker, who: str, topic: str, since: int) -> bool:
    """Whether the broker logged refusing ``who``'s PUBLISH to ``topic`` after log offset
    ``since`` (the line is written before the PUBACK, so it is there once the publish returned)."""
    return any(
        f"Denied PUBLISH from {who} " in line and f"'{topic}'" in line
        for line in broker.log_text()[since:].splitlines()
    )


# --- who may connect ------------------------------------------------------------------------
def test_anonymous_connection_is_refused(broker: SecureBroker) -> None:
    outcome = attempt_connect(broker.host, broker.port, ca_file=broker.ca_file)
    assert not outcome.connected, outcome
    assert "Not authorized" in outcome.detail


def test_anonymous_connection_is_refused_by_allow_anonymous_alone(tmp_path: Path) -> None:
    """Two settings refuse a client without a username: ``allow_anonymous false``, and
    ``use_username_as_clientid`` (no username, no client id). With the second switched off, the
    first must still hold, or the test above could not tell it was gone."""
    with secure_broker(tmp_path / "state", extra_conf="use_username_as_clientid false\n") as alone:
        assert "use_username_as_clientid false" in (alone.state / "mosquitto.conf").read_text()
        outcome = attempt_connect(alone.host, alone.port, ca_file=alone.ca_file)
        assert not outcome.connected, outcome
        assert "Not authorized" in outcome.detail


def test_wrong_password_is_refused(broker: SecureBroker) -> None:
    outcome = attempt_connect(
        broker.host, broker.port, ca_file=broker.ca_file, username="d1", password="guess"
    )
    assert not outcome.connected, outcome
    # and the right one is accepted (so the refusal is about the password)
    c = broker.creds("d1")
    ok = attempt_connect(
        broker.host, broker.port, ca_file=c["ca_file"], username="d1", password=c["password"]
    )
    assert ok.connected, ok


def test_plaintext_mqtt_is_refused(broker: SecureBroker) -> None:
    # valid credentials, sent without TLS: the listener speaks only TLS, so no CONNACK ever
    c = broker.creds("d1")
    outcome = attempt_connect(broker.host, broker.port, username="d1", password=c["password"])
    assert not outcome.connected, outcome
    # and on the wire: an MQTT CONNECT gets the connection closed, never a CONNACK (0x20)
    connect = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00"
    with socket.create_connection((broker.host, broker.port), timeout=10) as sock:
        sock.sendall(connect)
        try:
            answer = sock.recv(4)
        except ConnectionResetError:
            answer = b""
    assert not answer.startswith(b"\x20"), answer


def test_client_refuses_a_broker_its_ca_did_not_certify(
    broker: SecureBroker, tmp_path: Path
) -> None:
    """The network attacker's case: a man in the middle with another CA's certificate."""
    from cryptography.hazmat.primitives import serialization

    _key, other = make_ca("someone else's CA")
    other_ca = tmp_path / "other-ca.crt"
    other_ca.write_bytes(other.public_bytes(serialization.Encoding.PEM))
    failed = threading.Event()

    class Session(MqttSession):
        def _handle_connect_fail(self, client: object, userdata: object) -> None:
            failed.set()
            super()._handle_connect_fail(client, userdata)  # type: ignore[arg-type]

    c = broker.creds("d1")
    session = Session(
        broker.url,
        "d1",
        on_message=lambda *_: None,
        tls_ca=other_ca,
        username="d1",
        password=c["password"],
    )
    session.start()
    try:
        assert failed.wait(15), "the TLS handshake with an unknown CA did not fail"
        assert not session.connected.is_set()
    finally:
        session.stop()
    # the same session with the right CA connects: the failure was the certificate
    good = MqttSession(
        broker.url,
        "d1",
        on_message=lambda *_: None,
        tls_ca=c["ca_file"],
        username="d1",
        password=c["password"],
    )
    good.start()
    try:
        assert good.wait_connected(15)
    finally:
        good.stop()


# --- what each identity may publish ---------------------------------------------------------
def test_device_cannot_publish_releases_commands_or_as_another_device(
    broker: SecureBroker,
) -> None:
    mark = nonce()
    forbidden = [
        T.index(),
        T.manifest("m", 1),
        T.root_chain(),
        T.revocations(),
        T.chunk_block("m", 1, 0),
        T.fleet_commands(),
        T.commands("d2"),
        T.status("d2"),
        T.state("d2"),
        T.request("d2"),
        T.telemetry("d2", "events"),
        Topics(OTHER_FLEET).status("d1"),  # its own id, another fleet
        f"{T.base}/anything",
        "$SYS/broker/forged",
    ]
    marker = T.telemetry("d1", "events")
    with (
        broker.recorder("watch", ["modelcast/#"]) as watch,
        broker.recorder("d1") as attacker,
    ):
        since = len(broker.log_text())
        attacker.publish_all([(topic, b"forged " + mark) for topic in forbidden], retain=True)
        attacker.publish(marker, mark)
        watch.wait_for(lambda m: m.topic == marker and m.payload == mark)
        leaked = [m.topic for m in watch.messages if m.payload == b"forged " + mark]
        assert leaked == []
        for topic in forbidden:
            assert refused_publish(broker, "d1", topic, since), topic


def test_device_may_publish_under_its_own_topics(broker: SecureBroker) -> None:
    mark = nonce()
    own = [T.status("d1"), T.state("d1"), T.request("d1"), T.telemetry("d1", "metrics")]
    with broker.recorder("watch", [f"{T.base}/devices/#"]) as watch, broker.recorder("d1") as d1:
        d1.publish_all([(topic, mark) for topic in own])
        for topic in own:
            watch.wait_for(lambda m, t=topic: m.topic == t and m.payload == mark)  # type: ignore[misc]


def test_integrator_cannot_publish_anything(broker: SecureBroker) -> None:
    mark = nonce()
    forbidden = [
        T.status("d1"),
        T.telemetry("d1", "events"),
        T.index(),
        T.commands("d1"),
        T.fleet_commands(),
        T.request("d1"),
        f"{T.base}/devices/integ/status",
    ]
    marker = T.telemetry("d1", "metrics")
    with (
        broker.recorder("watch", ["modelcast/#"]) as watch,
        broker.recorder("integ") as integ,
        broker.recorder("d1") as d1,
    ):
        since = len(broker.log_text())
        integ.publish_all([(topic, b"forged " + mark) for topic in forbidden])
        # every PUBACK is back: the broker has routed (or dropped) them all; now the marker
        d1.publish(marker, mark)
        watch.wait_for(lambda m: m.topic == marker and m.payload == mark)
        assert [m.topic for m in watch.messages if m.payload == b"forged " + mark] == []
        for topic in forbidden:
            assert refused_publish(broker, "integ", topic, since), topic


# --- what each identity may read ------------------------------------------------------------
def test_device_reads_releases_chunks_and_its_commands_but_not_another_devices(
    broker: SecureBroker,
) -> None:
    mark = nonce()
    not_for_d1 = [
        T.commands("d2"),
        T.state("d2"),
        T.request("d2"),
        T.telemetry("d2", "events"),
        Topics(OTHER_FLEET).fleet_commands(),
        Topics(OTHER_FLEET).commands("d1"),
    ]
    for_d1 = [T.manifest("probe", 1), T.chunk_block("probe", 1, 0), T.fleet_commands()]
    marker = T.commands("d1")
    # d1 asks for everything (the broker grants the subscription, then filters each message)
    with (
        broker.recorder("d1", ["#", T.commands("d2")]) as d1,
        broker.recorder("coord") as coord,
        broker.recorder("e2e-coord") as other_fleet_coord,
    ):
        other_fleet_coord.publish_all(
            [(t, mark) for t in not_for_d1 if t.startswith("modelcast/e2e")]
        )
        coord.publish_all([(t, mark) for t in not_for_d1 if t.startswith(T.base)])
        coord.publish_all([(t, mark) for t in for_d1])
        coord.publish(marker, mark)
        d1.wait_for(lambda m: m.topic == marker and m.payload == mark)
        seen = {m.topic for m in d1.messages if m.payload == mark}
    assert seen == {*for_d1, marker}


def test_integrator_reads_status_and_telemetry_only(broker: SecureBroker) -> None:
    mark = nonce()
    hidden = [T.state("d1"), T.request("d1"), T.index(), T.commands("d1"), T.chunk_block("m", 1, 0)]
    visible = [T.status("d1"), T.telemetry("d1", "events"), T.telemetry("d2", "metrics")]
    marker = T.telemetry("d2", "events")
    with broker.recorder("integ", ["#"]) as integ, broker.recorder("coord") as coord:
        coord.publish_all([(t, mark) for t in [*hidden, *visible]])
        coord.publish(marker, mark)
        integ.wait_for(lambda m: m.topic == marker and m.payload == mark)
        seen = {m.topic for m in integ.messages if m.payload == mark}
    assert seen == {*visible, marker}


def test_a_device_cannot_take_over_anothers_session(broker: SecureBroker) -> None:
    """use_username_as_clientid: connecting with the coordinator's client id does not kick it."""
    mark = nonce()
    with broker.recorder("watch", [T.telemetry("d1", "events")]) as watch:
        c = broker.creds("d1")
        outcome = attempt_connect(
            broker.host,
            broker.port,
            ca_file=c["ca_file"],
            username="d1",
            password=c["password"],
            client_id="watch",
        )
        assert outcome.connected, outcome
        # the attacker's CONNACK came after any takeover: the watch must still be on its
        # first connection, receiving
        with broker.recorder("d1") as d1:
            d1.publish(T.telemetry("d1", "events"), mark)
        watch.wait_for(lambda m: m.payload == mark)
        assert watch.connects == 1 and watch.disconnects == 0


# --- revocation and rotation ----------------------------------------------------------------
def test_revoked_device_is_dropped_and_cannot_connect_again(broker: SecureBroker) -> None:
    c = broker.creds("victim")
    with broker.recorder("victim") as victim:
        assert victim.connected
        done = CredStore(broker.state).revoke("victim")
        assert done, "the broker was not signalled"
        # Mosquitto re-checks connected clients on reload: the victim's connection goes
        assert victim.disconnected.wait(15), "revoked identity still connected"
        victim.close()
    outcome = attempt_connect(
        broker.host, broker.port, ca_file=c["ca_file"], username="victim", password=c["password"]
    )
    assert not outcome.connected, outcome
    assert "Not authorized" in outcome.detail
    assert not broker.creds_path("victim").exists()


def test_rotated_password_replaces_the_old_one(broker: SecureBroker) -> None:
    old = broker.creds("rotated")
    with broker.recorder("rotated") as conn:
        new = CredStore(broker.state).rotate("rotated")
        assert conn.disconnected.wait(15), "a connection with the old password survived"
        conn.close()
    refused = attempt_connect(
        broker.host,
        broker.port,
        ca_file=old["ca_file"],
        username="rotated",
        password=old["password"],
    )
    assert not refused.connected, refused
    accepted = attempt_connect(
        broker.host,
        broker.port,
        ca_file=new["ca_file"],
        username="rotated",
        password=new["password"],
    )
    assert accepted.connected, accepted
    assert broker.creds("rotated")["password"] == new["password"] != old["password"]


def test_local_broker_runs_the_production_profile(tmp_path: Path) -> None:
    """LocalBroker (restartable, killable: for fault tests) with the rendered profile."""
    state = tmp_path / "state"
    ensure_tls(state)
    store = CredStore(state)
    c = store.add("device", "dev1")
    store.prepare()
    (state / "mosquitto-data").mkdir()
    profile = tmp_path / "production.conf"
    profile.write_text(render_production(state))
    ready = functools.partial(answers_tls, ca_file=state / "ca.crt")
    with LocalBroker(conf_path=profile, workdir=tmp_path / "broker", ready=ready) as local:
        anonymous = attempt_connect(local.host, local.port, ca_file=state / "ca.crt")
        assert not anonymous.connected, anonymous
        outcome = attempt_connect(
            local.host, local.port, ca_file=c["ca_file"], username="dev1", password=c["password"]
        )
        assert outcome.connected, outcome


# --- a delivery through the secure broker ---------------------------------------------------
def test_delivery_through_the_secure_broker(broker: SecureBroker, tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys")
    registry = Registry(tmp_path / "coord.db")
    model = make_model(tmp_path / "m.onnx", 600_000, seed=7)
    watch_recorder = broker.recorder(
        "e2e-watch", [f"modelcast/{OTHER_FLEET}/devices/#"], timeout=60
    )
    watch = FleetWatch(watch_recorder, OTHER_FLEET)
    edge = EdgeProcess(
        "e2e-dev",
        broker_url=broker.url,
        data=tmp_path / "edge",
        trust=keys.root_pub,
        fleet=OTHER_FLEET,
        log_dir=tmp_path,
        extra=("--creds", str(broker.creds_path("e2e-dev"))),
    )
    coordinator = Coordinator(
        CoordinatorConfig(
            broker_url=broker.url,
            db_path=tmp_path / "coord.db",
            keydir=keys.dir,
            fleet=OTHER_FLEET,
            creds=ClientCreds.load(broker.creds_path("e2e-coord")),
        )
    )
    with watch:
        edge.start()
        try:
            watch.wait_online(["e2e-dev"], 30, [edge])
            coordinator.start()
            release_and_deploy(registry, keys, model, "m", 1, OTHER_FLEET, chunk_size=64 * 1024)
            watch.wait_active("e2e-dev", "m", 1)
            assert sha256_file(edge.model_path("m", 1)) == sha256_file(model)
            # an integrator reads the fleet's status with its own credentials
            out = io.StringIO()
            printed = run_tail(
                broker.url,
                OTHER_FLEET,
                device="e2e-dev",
                kind="status",
                count=1,
                out=out,
                creds=ClientCreds.load(broker.creds_path("e2e-integ")),
            )
            assert printed == 1 and "e2e-dev" in out.getvalue()
        finally:
            coordinator.stop()
            edge.stop()
            print(f"----- edge log (tail) -----\n{edge.log()[-3000:]}")
    assert "over TLS" in edge.log()
