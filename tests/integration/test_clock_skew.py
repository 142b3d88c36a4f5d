"""`modelcast status` shows how far each device's clock is off, as a real coordinator saw it over
Mosquitto: a device a day behind, one that booted at 1970 and never heard from NTP, one that is
right, and one the coordinator only knows from a retained state ten days old (a replay, not a
clock reading: unknown)."""

from __future__ import annotations

import json
import re
import time

import pytest

import protocol
from modelcast.cli import EXIT_OK, main
from testkit.mqtt_recorder import TopicRecorder
from tests.support.env import Env

DAY = 86400.0


def reports(device: str, clock: float) -> list[tuple[str, bytes]]:
    """What an edge sends when it connects, its clock saying ``clock``: status, state, a
    metrics sample and an event."""
    return [
        ("status", protocol.DeviceStatus(device, online=True, ts=clock).encode()),
        ("state", protocol.DeviceState(device, protocol.UpdateState.IDLE, ts=clock).encode()),
        (
            "telemetry/metrics",
            protocol.MetricsSample(device=device, boot="b", seq=1, ts=clock).encode(),
        ),
        (
            "telemetry/events",
            protocol.DeviceEvent(device, "activated", ts=clock, boot="b", seq=2).encode(),
        ),
    ]


def test_status_shows_the_clock_skew_of_each_device(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    topics = protocol.Topics(env.fleet)
    replayed = topics.state("replayed")
    with TopicRecorder(env.broker.host, env.broker.port) as devices:
        old = protocol.DeviceState("replayed", protocol.UpdateState.IDLE, time.time() - 10 * DAY)
        devices.publish(replayed, old.encode(), retain=True)
        try:
            coord = env.start_coordinator()
            # only once the broker has acknowledged the coordinator's subscriptions do reports
            # published from another connection reach it
            assert coord.wait_subscribed(30)
            offsets = {"behind": -DAY, "epoch": None, "right": 0.0}
            for device, offset in offsets.items():
                for kind, payload in reports_at(device, offset):
                    devices.publish(f"{topics.base}/devices/{device}/{kind}", payload)
            expected = 1 + 4 * len(offsets)
            assert coord.wait_until(lambda: coord.messages_processed >= expected, 30)
            coord.stop()  # writes what it saw
        finally:
            devices.publish(replayed, b"", retain=True)

    db = ["--db", str(env.tmp / "coord.db"), "--fleet", env.fleet]
    assert main(["status", *db, "--json"]) == EXIT_OK
    skews = {
        d["device_id"]: d["clock_skew"] for d in json.loads(capsys.readouterr().out)["devices"]
    }
    assert skews["behind"] == pytest.approx(-DAY, abs=5.0)
    assert skews["right"] == pytest.approx(0.0, abs=5.0)
    assert skews["epoch"] < -30 * 365 * DAY
    assert skews["replayed"] is None

    assert main(["status", *db]) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    column = lines[1].index("CLOCK")
    clock = {line.split()[0]: line[column:].split()[0] for line in lines[2:6]}
    assert clock["behind"] == "-1d"
    assert clock["epoch"] == "1970?"
    assert re.fullmatch(r"[+-]\d\.\ds", clock["right"]), clock
    assert clock["replayed"] == "?"


def reports_at(device: str, offset: float | None) -> list[tuple[str, bytes]]:
    """``reports`` with the device's clock ``offset`` seconds off (None: two minutes after the
    epoch, a board without a real-time clock that booted and has not heard from NTP)."""
    return reports(device, 120.0 if offset is None else time.time() + offset)
