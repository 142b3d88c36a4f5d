"""testkit's fleet watcher against the real Mosquitto: hand-built device messages published by a
plain recorder, decoded once, in order, with their arrival times; its waits end early when a
process they wait on dies."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from protocol import DeviceEvent, DeviceState, DeviceStatus, Topics, UpdateState
from testkit.cli_process import CliProcess
from testkit.errors import ProcessExited, WaitTimeout
from testkit.fleet_watch import FleetWatch
from testkit.mqtt_recorder import TopicRecorder
from tests.support.brokers import Broker


def state(device: str, held: int, kind: UpdateState = UpdateState.DOWNLOADING) -> bytes:
    return DeviceState(device, kind, ts=1.0, model="m", version=1, chunks_held=held).encode()


def status(device: str, online: bool) -> bytes:
    return DeviceStatus(device, online, ts=1.0).encode()


def event(device: str, name: str, seq: int) -> bytes:
    return DeviceEvent(device, name, ts=1.0, seq=seq).encode()


def test_states_events_and_status_are_decoded_in_order(broker: Broker, mqtt_fleet: str) -> None:
    t = Topics(mqtt_fleet)
    with (
        FleetWatch(broker.url, mqtt_fleet) as watch,
        TopicRecorder(broker.host, broker.port) as device,
    ):
        sent_at = time.monotonic()
        device.publish(t.state("d1"), state("d1", 1))
        device.publish(t.state("d1"), b"not a state")  # left out, not fatal
        device.publish(t.state("d2"), state("d2", 9))
        device.publish(t.state("d1"), state("d1", 2))
        device.publish(t.telemetry("d1", "events"), event("d1", "resumed", 1))
        device.publish(t.status("d1"), status("d1", True))
        seen = watch.wait_state_received("d1", lambda s: s.chunks_held >= 2, timeout=10)
        assert seen.state.chunks_held == 2 and seen.at >= sent_at
        first = watch.wait_state_received("d1", lambda s: s.chunks_held >= 1, timeout=10)
        assert first.state.chunks_held == 1 and first.at <= seen.at  # the first match, ever
        assert [s.chunks_held for s in watch.states("d1")] == [1, 2]
        assert [s.chunks_held for s in watch.states("d2")] == [9]
        assert watch.wait_event("d1", lambda e: e.event == "resumed", 10).seq == 1
        watch.wait_online(["d1"], 10)
        assert [e.event for e in watch.events("d2")] == []


def test_online_means_the_last_status_says_so(broker: Broker, mqtt_fleet: str) -> None:
    t = Topics(mqtt_fleet)
    with (
        FleetWatch(broker.url, mqtt_fleet) as watch,
        TopicRecorder(broker.host, broker.port) as device,
    ):
        device.publish(t.status("d1"), status("d1", True))
        device.publish(t.status("d1"), status("d1", False))
        device.publish(t.status("d2"), status("d2", True))
        watch.recorder.wait_for(lambda m: m.topic == t.status("d2"), 10)
        with pytest.raises(WaitTimeout, match=r"not online after 0.2s: \['d1'\]"):
            watch.wait_online(["d1", "d2"], 0.2)
        device.publish(t.status("d1"), status("d1", True))
        watch.wait_online(["d1", "d2"], 10)


def test_a_states_only_watcher_records_nothing_else(broker: Broker, mqtt_fleet: str) -> None:
    t = Topics(mqtt_fleet)
    with (
        FleetWatch(broker.url, mqtt_fleet, states_only=True) as watch,
        TopicRecorder(broker.host, broker.port) as device,
    ):
        device.publish(t.request("d1"), b"a chunk request")
        device.publish(t.telemetry("d1", "events"), event("d1", "resumed", 1))
        device.publish(t.state("d1"), state("d1", 1))
        device.publish(t.status("d1"), status("d1", True))
        watch.wait_online(["d1"], 10)
        assert {m.topic for m in watch.recorder.messages} == {t.state("d1"), t.status("d1")}
        assert watch.events("d1") == []


def test_a_wait_ends_when_the_process_it_waits_on_dies(
    broker: Broker, mqtt_fleet: str, tmp_path: Path
) -> None:
    dead = CliProcess(["no-such-command"], log_path=tmp_path / "dead.log", name="edge d1")
    dead.start()
    assert dead.proc is not None
    dead.proc.wait(timeout=60)
    with FleetWatch(broker.url, mqtt_fleet) as watch:
        started = time.monotonic()
        with pytest.raises(ProcessExited, match=r"(?s)edge d1 exited with 2:\n.*no-such-command"):
            watch.wait_state("d1", lambda s: True, timeout=60, edge=dead)
        with pytest.raises(ProcessExited):
            watch.wait_online(["d1"], 60, [dead])
        assert time.monotonic() - started < 10
