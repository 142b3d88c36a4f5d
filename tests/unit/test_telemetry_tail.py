"""`modelcast telemetry tail`'s decoding and formatting, without a broker."""

from __future__ import annotations

import json

import pytest

from coordinator.telemetry_tail import decode_message, format_json, format_line, tail_filters
from protocol import DeviceEvent, DeviceStatus, MetricsSample, ModelStats, ProtocolError, Topics

TOPICS = Topics("f1")


def test_filters() -> None:
    assert tail_filters(TOPICS) == [
        "modelcast/f1/devices/+/status",
        "modelcast/f1/devices/+/telemetry/+",
    ]
    assert tail_filters(TOPICS, "metrics", "d1") == ["modelcast/f1/devices/d1/telemetry/metrics"]
    with pytest.raises(ValueError):
        tail_filters(TOPICS, "chunks")
    with pytest.raises(ProtocolError):  # never spliced into a topic filter
        tail_filters(TOPICS, "all", "d/#")


def test_a_metrics_sample() -> None:
    sample = MetricsSample(
        device="d1",
        boot="b",
        seq=7,
        ts=1000.0,
        cpu_pct=3.25,
        inferences=10,
        errors=1,
        latency_p95_ms=12.5,
        active={"m": 2},
        models=(ModelStats("m", 2, 10, 1, 5.0, 12.5),),
        hist=True,
        dropped=4,
    )
    record = decode_message(TOPICS, TOPICS.telemetry("d1", "metrics"), sample.encode())
    assert record["kind"] == "metrics" and record["device"] == "d1"
    assert record["message"]["models"][0]["inferences"] == 10
    line = format_line(record)
    assert " d1 metrics seq=7 cpu=3.2% " in line or " d1 metrics seq=7 cpu=3.3% " in line
    assert "active=m@2" in line and "m@2:10/1err/p95=12.5ms" in line
    assert line.endswith(" hist dropped=4")
    assert json.loads(format_json(record))["message"]["seq"] == 7


def test_an_event_and_a_status() -> None:
    ev = DeviceEvent(device="d1", event="rejected", ts=1.0, seq=3, reason="stale", model="m")
    line = format_line(decode_message(TOPICS, TOPICS.telemetry("d1", "events"), ev.encode()))
    assert line.endswith(" d1 event rejected m seq=3 reason=stale")
    status = DeviceStatus(device="d1", online=True, ts=1.0, agent="0.1", profile={"k": b"\x01"})
    record = decode_message(TOPICS, TOPICS.status("d1"), status.encode(), retained=True)
    assert format_line(record).endswith(" d1 online agent=0.1 active=- (retained)")
    assert json.loads(format_json(record))["message"]["profile"] == {"k": "01"}  # bytes as hex
    will = DeviceStatus(device="d1", online=False).encode()
    assert format_line(decode_message(TOPICS, TOPICS.status("d1"), will)).endswith(" d1 offline")
    cleared = decode_message(TOPICS, TOPICS.status("d1"), b"", retained=True)
    assert format_line(cleared).endswith(" d1 status cleared (retained)")


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        (TOPICS.telemetry("d1", "metrics"), b"\x93garbage", "malformed"),
        (
            TOPICS.telemetry("d1", "events"),
            DeviceEvent(device="d2", event="x", ts=1.0).encode(),
            "device-mismatch",
        ),
        (TOPICS.telemetry("d1", "logs"), b"\x80", "unknown-kind"),
    ],
)
def test_undecodable_messages_become_error_lines(topic: str, payload: bytes, reason: str) -> None:
    record = decode_message(TOPICS, topic, payload)
    assert record["error"]["reason"] == reason
    assert record["payload"] == payload.hex()
    assert f" ERROR {record['kind']}: {reason}: " in format_line(record)
    assert json.loads(format_json(record))["error"]["reason"] == reason
