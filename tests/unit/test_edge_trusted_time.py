"""Expiry is checked against the clock, or against the newest signed time seen when the clock
is behind it (edge_node/trusted_time.py)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from edge_node.active import AgentRecord
from edge_node.trusted_time import BUILD_FLOOR, TrustedTime
from protocol import DeploymentIndex, ExpiredError, open_index, seal
from tests.support.download_release import CERT, RELEASE, TRUST

DAY = 86400.0
NOW = BUILD_FLOOR + 100 * DAY


def test_a_right_clock_rules() -> None:
    record = AgentRecord()
    record.saw_signed(NOW - DAY)
    assert TrustedTime(lambda: NOW, record, "d1").now() == NOW


def test_a_clock_behind_is_raised_to_the_newest_signed_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    record = AgentRecord()
    record.saw_signed(NOW)
    record.saw_signed(NOW - DAY)  # the floor never goes back
    trusted = TrustedTime(lambda: 12.0, record, "d1")
    with caplog.at_level(logging.WARNING, "modelcast.edge"):
        assert trusted.now() == NOW
        assert trusted.now() == NOW
    warnings = [r for r in caplog.records if "behind the newest signed data" in r.message]
    assert len(warnings) == 1 and "d1" in warnings[0].message


def test_a_device_that_saw_nothing_yet_is_held_at_the_build_floor() -> None:
    assert TrustedTime(lambda: 0.0, AgentRecord(), "d1").now() == BUILD_FLOOR


def test_the_floor_survives_a_restart_and_old_records_load(tmp_path: Path) -> None:
    record = AgentRecord(index_seq=3)
    record.saw_signed(NOW)
    record.save(tmp_path)
    assert AgentRecord.load(tmp_path).time_floor == NOW
    (tmp_path / "agent.json").write_text(json.dumps({"index_seq": 2}))  # before the floor
    assert AgentRecord.load(tmp_path).time_floor == 0.0


def test_at_1970_an_index_that_expired_before_the_floor_is_refused() -> None:
    index = DeploymentIndex("f", 1, issued=NOW - 2 * DAY, expires=NOW - DAY)
    data = seal("index", index.encode(), RELEASE, CERT)
    record = AgentRecord()
    assert open_index(TRUST, data, now=12.0, fleet="f").seq == 1  # the bare clock is fooled
    record.saw_signed(NOW)
    with pytest.raises(ExpiredError):
        open_index(TRUST, data, now=TrustedTime(lambda: 12.0, record, "d1").now(), fleet="f")
