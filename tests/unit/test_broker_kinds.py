"""What adapts to the broker: the report request (protocol), the coordinator's broker kind, and
the tail's status follower."""

from __future__ import annotations

import pytest

import protocol
from coordinator.config import CoordinatorConfig
from coordinator.tail_status import StatusFollower, status_follower
from protocol import ExpiredError, MalformedMessage, ReportRequest, StaleError, open_report_request
from runtime.broker_kinds import BROKER_KINDS, retained_over_wildcards
from runtime.errors import SetupError
from tests.support.download_release import CERT, NOW, ROOT
from tests.support.download_release import RELEASE as RELEASE_KEY

TRUST = protocol.TrustedRoot(ROOT.verify_key)


def test_a_report_request_opens_only_for_its_fleet_unexpired_and_newer() -> None:
    data = ReportRequest.new("f", NOW - 10).sign(RELEASE_KEY, CERT)
    opened = open_report_request(TRUST, data, now=NOW, fleet="f", answered=0.0)
    assert opened == ReportRequest(
        "f", NOW - 10, NOW - 10 + protocol.report_request.REPORT_REQUEST_TTL_S
    )
    with pytest.raises(StaleError):
        open_report_request(TRUST, data, now=NOW, fleet="f", answered=NOW - 10)
    with pytest.raises(MalformedMessage, match="fleet"):
        open_report_request(TRUST, data, now=NOW, fleet="g", answered=0.0)
    with pytest.raises(ExpiredError):
        open_report_request(TRUST, data, now=NOW + 2 * 86400, fleet="f", answered=0.0)
    command = protocol.Command("f", "*", 1, NOW, NOW + 60, "re-request").sign(RELEASE_KEY, CERT)
    with pytest.raises(MalformedMessage, match="expected a report-request"):
        open_report_request(TRUST, command, now=NOW, fleet="f", answered=0.0)


def test_only_rabbitmq_keeps_retained_messages_from_wildcards() -> None:
    assert [k for k in BROKER_KINDS if not retained_over_wildcards(k)] == ["rabbitmq"]
    with pytest.raises(SetupError, match="broker kind"):
        retained_over_wildcards("emqx")
    with pytest.raises(SetupError, match="broker kind"):
        CoordinatorConfig("mqtt://h:1", db_path=None, keydir=None, broker_kind="kafka")  # type: ignore[arg-type]


TOPICS = protocol.Topics("f")


def test_the_tail_subscribes_to_the_status_of_a_device_heard_from_once() -> None:
    asked: list[str] = []
    follower = StatusFollower(TOPICS, asked.append)
    assert follower.admit(TOPICS.telemetry("d1", "metrics"), b"m1")
    assert follower.admit(TOPICS.telemetry("d1", "metrics"), b"m2")
    assert asked == [TOPICS.status("d1")]
    assert follower.admit(TOPICS.status("d1"), b"online")
    assert not follower.admit(TOPICS.status("d1"), b"online")  # the same, through both
    assert follower.admit(TOPICS.status("d1"), b"offline")
    assert follower.admit("elsewhere/x", b"?")
    assert follower.asked == {"d1"}


def test_the_tail_subscribes_to_nothing_where_the_wildcard_gave_the_status() -> None:
    asked: list[str] = []
    follower = StatusFollower(TOPICS, asked.append)
    assert follower.admit(TOPICS.status("d2"), b"online")
    assert follower.admit(TOPICS.telemetry("d2", "events"), b"e")
    assert asked == []


def test_a_tail_of_one_device_or_one_kind_follows_nothing() -> None:
    asked: list[str] = []
    for kind, device in (("all", "d1"), ("metrics", None)):
        follower = status_follower(TOPICS, kind, device, asked.append)
        assert follower.admit(TOPICS.telemetry("d1", "metrics"), b"m")
        assert follower.admit(TOPICS.status("d1"), b"s") and follower.admit(
            TOPICS.status("d1"), b"s"
        )
    assert asked == []
