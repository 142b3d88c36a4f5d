"""The coordinator service against a real Mosquitto, with plain paho clients as fake devices.

The fake devices are `TopicRecorder`s (a second, boring MQTT implementation), not edge_node:
they subscribe to chunk blocks and publish hand-built `ChunkRequest`s, and every chunk they get
is checked against the signed manifest with `protocol.verify_chunk`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

import protocol
from coordinator import (
    Coordinator,
    CoordinatorConfig,
    Registry,
    ReleaseRecord,
    init_keys,
    load_release_keys,
)
from coordinator.status import fleet_status
from protocol.textmodel import KIND_FILE
from testkit.local_broker import LocalBroker
from testkit.mqtt_recorder import Received, TopicRecorder
from tests.support.brokers import Broker

TIMEOUT = 15.0
CHUNK = 4096
N_CHUNKS = 41  # three blocks of 16: 0..15, 16..31, 32..40
SIZE = (N_CHUNKS - 1) * CHUNK + 777


@dataclass(frozen=True)
class Setup:
    coordinator: Coordinator
    record: ReleaseRecord
    trust: protocol.TrustedRoot
    topics: protocol.Topics
    db: Path


@pytest.fixture
def setup(broker: Broker, mqtt_fleet: str, tmp_path: Path) -> Iterator[Setup]:
    keydir = tmp_path / "keys"
    init_keys(keydir)
    model = tmp_path / "model.onnx"
    model.write_bytes(os.urandom(SIZE))
    db = tmp_path / "registry.db"
    registry = Registry(db)
    record = registry.add_release(
        model,
        model_kind=KIND_FILE,  # random bytes: never loaded
        name="m",
        version=3,
        keys=load_release_keys(keydir),
        fleet=mqtt_fleet,
        chunk_size=CHUNK,
    )
    registry.deploy("m", 3, fleet=mqtt_fleet)
    registry.close()
    coordinator = Coordinator(
        CoordinatorConfig(
            broker_url=broker.url, db_path=db, keydir=keydir, fleet=mqtt_fleet, poll_interval=0.2
        )
    )
    coordinator.start()
    trust = protocol.TrustedRoot(protocol.VerifyKey.from_pem((keydir / "root.pub").read_bytes()))
    try:
        yield Setup(coordinator, record, trust, protocol.Topics(mqtt_fleet), db)
    finally:
        coordinator.stop()


def manifest_of(setup: Setup) -> protocol.VerifiedManifest:
    return protocol.open_manifest(
        setup.trust, setup.record.manifest, now=time.time(), fleet=setup.topics.fleet
    )


def index_of(setup: Setup, item: Received) -> protocol.DeploymentIndex:
    return protocol.open_index(setup.trust, item.payload, now=time.time(), fleet=setup.topics.fleet)


def await_index(broker: Broker, setup: Setup) -> protocol.DeploymentIndex:
    """The retained index, once published. It is published after the coordinator subscribed
    (same connection, in order), so requests sent from now on reach it."""
    with TopicRecorder(broker.host, broker.port, [setup.topics.index()]) as probe:
        return index_of(setup, probe.wait_for_topic(setup.topics.index(), TIMEOUT))


def fake_device(broker: Broker, setup: Setup, blocks: list[int]) -> TopicRecorder:
    """A device subscribed to chunk ``blocks`` (once entered: the context manager starts it)."""
    topics = [setup.topics.chunk_block("m", 3, b) for b in blocks]
    return TopicRecorder(broker.host, broker.port, topics, timeout=TIMEOUT)


def request(
    setup: Setup,
    device: str,
    indices: list[int],
    *,
    subscribed: Sequence[int] = (),
    fresh: bool = False,
    release_id: bytes | None = None,
) -> tuple[str, bytes]:
    req = protocol.ChunkRequest(
        device=device,
        name="m",
        version=3,
        release_id=(release_id or setup.record.release_id)[:16],
        ranges=tuple((s, c) for s, c in protocol.to_ranges(indices)),
        subscribed=tuple(subscribed),
        fresh=fresh,
    )
    return setup.topics.request(device), req.encode()


def chunk_frames(probe: TopicRecorder) -> list[Received]:
    return [m for m in probe.messages if "/chunks/" in m.topic]


def await_chunks(probe: TopicRecorder, setup: Setup, wanted: set[int]) -> list[int]:
    """Wait until every wanted chunk arrived; verify each against the manifest."""
    verified = manifest_of(setup)

    def have_all(_: Received) -> bool:
        got = {protocol.ChunkFrame.decode(m.payload).index for m in chunk_frames(probe)}
        return wanted <= got

    probe.wait_for(have_all, TIMEOUT)
    indices = []
    for item in chunk_frames(probe):
        frame = protocol.ChunkFrame.decode(item.payload)
        protocol.verify_chunk(verified.manifest, verified.id, frame)
        block = verified.manifest.block_of(frame.index)
        assert item.topic == setup.topics.chunk_block("m", 3, block)
        indices.append(frame.index)
    return indices


def test_publishes_a_retained_index_and_manifest_that_verify(broker: Broker, setup: Setup) -> None:
    index = await_index(broker, setup)
    assert index.targets == {"m": protocol.Target(3, setup.record.release_id)}
    assert setup.coordinator.index_seq == index.seq
    with TopicRecorder(broker.host, broker.port, [setup.topics.manifest("m", 3)]) as probe:
        item = probe.wait_for_topic(setup.topics.manifest("m", 3), TIMEOUT)
    assert item.retain
    verified = protocol.open_manifest(
        setup.trust, item.payload, now=time.time(), fleet=setup.topics.fleet
    )
    assert verified.id == index.targets["m"].manifest_id
    assert verified.manifest.n_chunks == N_CHUNKS


def test_serves_exactly_the_requested_chunks(broker: Broker, setup: Setup) -> None:
    await_index(broker, setup)
    wanted = [*range(0, 10), *range(20, 25)]
    with fake_device(broker, setup, [0, 1]) as device:
        device.publish(*request(setup, "d1", wanted, subscribed=[0, 1], fresh=True))
        got = await_chunks(device, setup, set(wanted))
        assert setup.coordinator.wait_until(
            lambda: setup.coordinator.chunks_published == len(wanted), TIMEOUT
        )
    assert sorted(got) == wanted  # each once, nothing else
    assert setup.coordinator.bytes_published == sum(protocol.HEADER_SIZE + CHUNK for _ in wanted)


def test_two_subscribed_devices_asking_for_the_same_chunks_cost_one_publish_each(
    broker: Broker, setup: Setup
) -> None:
    await_index(broker, setup)
    coordinator = setup.coordinator
    blocks = [0, 1, 2]
    everything = list(range(N_CHUNKS))
    with fake_device(broker, setup, blocks) as a, fake_device(broker, setup, blocks) as b:
        # Both report their subscriptions before anything is sent, so whatever is published
        # for one of them afterwards is on its way to the other one too.
        a.publish(*request(setup, "da", [], subscribed=blocks, fresh=True))
        b.publish(*request(setup, "db", [], subscribed=blocks, fresh=True))
        assert coordinator.wait_until(lambda: coordinator.scheduler.requests == 2, TIMEOUT)
        a.publish(*request(setup, "da", everything))
        b.publish(*request(setup, "db", everything))
        got_a = await_chunks(a, setup, set(everything))
        got_b = await_chunks(b, setup, set(everything))
        assert coordinator.wait_until(lambda: coordinator.scheduler.requests == 4, TIMEOUT)
        assert coordinator.wait_until(lambda: coordinator.scheduler.pending == 0, TIMEOUT)
        assert coordinator.chunks_published == N_CHUNKS
        # However late a request arrives: what was published after the device subscribed is
        # not published again (whether the two requests above overlapped depends on timing).
        b.publish(*request(setup, "db", everything))
        assert coordinator.wait_until(lambda: coordinator.scheduler.requests == 5, TIMEOUT)
        assert coordinator.scheduler.pending == 0
    assert coordinator.chunks_published == N_CHUNKS
    assert coordinator.scheduler.chunks_coalesced >= N_CHUNKS
    assert sorted(got_a) == sorted(got_b) == everything


def test_garbage_is_counted_and_the_service_keeps_serving(broker: Broker, setup: Setup) -> None:
    await_index(broker, setup)
    coordinator = setup.coordinator
    with fake_device(broker, setup, [0]) as device:
        device.publish(setup.topics.request("d1"), b"\x93garbage")
        device.publish(*request(setup, "d1", [1], release_id=bytes(16)))
        _, spoofed = request(setup, "d2", [1])
        device.publish(setup.topics.request("d1"), spoofed)  # d1's topic, d2 in the payload
        assert coordinator.wait_until(
            lambda: (
                coordinator.rejections == {"malformed": 1, "wrong-release": 1, "device-mismatch": 1}
            ),
            TIMEOUT,
        ), coordinator.rejections
        device.publish(*request(setup, "d1", [2, 3], subscribed=[0], fresh=True))
        assert sorted(await_chunks(device, setup, {2, 3})) == [2, 3]
    assert coordinator.chunks_published == 2


def test_device_reports_reach_the_registry(broker: Broker, setup: Setup) -> None:
    await_index(broker, setup)
    topics = setup.topics
    state = protocol.DeviceState(
        device="d7",
        state=protocol.UpdateState.DOWNLOADING,
        ts=time.time(),
        model="m",
        version=3,
        chunks_held=10,
        chunks_total=N_CHUNKS,
    )
    status = protocol.DeviceStatus(
        device="d7", online=True, ts=time.time(), agent="fake/1", active={"m": 2}
    )
    with TopicRecorder(broker.host, broker.port) as device:
        device.publish(topics.state("d7"), state.encode(), retain=True)
        device.publish(topics.status("d7"), status.encode(), retain=True)

        def recorded() -> bool:
            devices = fleet_status(setup.db, topics.fleet)["devices"]
            return (
                bool(devices)
                and devices[0]["online"] is True
                and devices[0]["state"] == ("downloading")
            )

        assert setup.coordinator.wait_until(recorded, TIMEOUT)
        # Clear the retained messages: the broker is shared by the whole test session.
        device.publish(topics.state("d7"), b"", retain=True)
        device.publish(topics.status("d7"), b"", retain=True)
    [row] = fleet_status(setup.db, topics.fleet)["devices"]
    assert row["device_id"] == "d7"
    assert row["active"] == {"m": 2}
    assert row["progress"] == pytest.approx(10 / N_CHUNKS)


def test_a_new_deployment_is_published_with_a_higher_seq(
    broker: Broker, setup: Setup, tmp_path: Path
) -> None:
    first = await_index(broker, setup)
    model = tmp_path / "model-v4.onnx"
    model.write_bytes(os.urandom(2 * CHUNK))
    registry = Registry(setup.db)  # as the CLI would, from another process
    record = registry.add_release(
        model,
        model_kind=KIND_FILE,  # random bytes: never loaded
        name="m",
        version=4,
        keys=load_release_keys(tmp_path / "keys"),
        fleet=setup.topics.fleet,
        chunk_size=CHUNK,
    )
    registry.deploy("m", 4, fleet=setup.topics.fleet)
    registry.close()
    topics = setup.topics
    with TopicRecorder(broker.host, broker.port, [topics.index(), topics.manifest("m", 4)]) as p:
        newer = p.wait_for(
            lambda m: m.topic == topics.index() and index_of(setup, m).seq > first.seq, TIMEOUT
        )
        manifest = p.wait_for_topic(topics.manifest("m", 4), TIMEOUT)
    index = index_of(setup, newer)
    assert index.targets == {"m": protocol.Target(4, record.release_id)}
    assert protocol.open_manifest(setup.trust, manifest.payload, now=time.time()).id == (
        record.release_id
    )


def test_retained_messages_are_republished_after_a_broker_restart(
    fresh_broker: LocalBroker, mqtt_fleet: str, tmp_path: Path
) -> None:
    keydir = tmp_path / "keys"
    init_keys(keydir)
    model = tmp_path / "model.onnx"
    model.write_bytes(os.urandom(SIZE))
    registry = Registry(tmp_path / "registry.db")
    registry.add_release(
        model,
        model_kind=KIND_FILE,  # random bytes: never loaded
        name="m",
        version=1,
        keys=load_release_keys(keydir),
        fleet=mqtt_fleet,
        chunk_size=CHUNK,
    )
    registry.deploy("m", 1, fleet=mqtt_fleet)
    registry.close()
    topics = protocol.Topics(mqtt_fleet)
    coordinator = Coordinator(
        CoordinatorConfig(
            broker_url=fresh_broker.url,
            db_path=tmp_path / "registry.db",
            keydir=keydir,
            fleet=mqtt_fleet,
            poll_interval=0.2,
        )
    )
    coordinator.start()
    try:
        wanted = [topics.index(), topics.manifest("m", 1)]
        with TopicRecorder(fresh_broker.host, fresh_broker.port, wanted) as probe:
            before = probe.wait_for_topic(topics.index(), TIMEOUT).payload
        fresh_broker.restart()  # no persistence: the retained messages are gone
        with TopicRecorder(fresh_broker.host, fresh_broker.port, wanted) as probe:
            after = probe.wait_for_topic(topics.index(), TIMEOUT).payload
            probe.wait_for_topic(topics.manifest("m", 1), TIMEOUT)
        assert after == before  # the same signed bytes: no new seq for a mere reconnect
        # And it still serves chunks over the new connection.
        block = topics.chunk_block("m", 1, 0)
        with TopicRecorder(fresh_broker.host, fresh_broker.port, [block]) as device:
            req = protocol.ChunkRequest(
                device="d1",
                name="m",
                version=1,
                release_id=index_of_payload(after, keydir, mqtt_fleet),
                ranges=((0, 3),),
                subscribed=(0,),
                fresh=True,
            )
            device.publish(topics.request("d1"), req.encode())
            device.wait_for(lambda _: len(device.messages) >= 3, TIMEOUT)
        assert coordinator.chunks_published == 3
    finally:
        coordinator.stop()


def index_of_payload(payload: bytes, keydir: Path, fleet: str) -> bytes:
    """The 16-byte release id of model ``m`` named by a signed index."""
    trust = protocol.TrustedRoot(protocol.VerifyKey.from_pem((keydir / "root.pub").read_bytes()))
    index = protocol.open_index(trust, payload, now=time.time(), fleet=fleet)
    return index.targets["m"].manifest_id[:16]
