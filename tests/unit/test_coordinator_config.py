"""``CoordinatorConfig``: the coordinator's settings, their defaults, and what is refused."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

import protocol
from coordinator import CoordinatorConfig
from runtime.credentials import ClientCreds

BASE: dict[str, Any] = {
    "broker_url": "mqtt://127.0.0.1:1883",
    "db_path": Path("c.db"),
    "keydir": Path("keys"),
}


def test_defaults() -> None:
    config = CoordinatorConfig(**BASE)
    assert (config.fleet, config.poll_interval, config.max_pending) == ("default", 0.5, 32)
    assert (config.fresh_hold, config.index_expires_in) == (0.3, 30 * 86400)
    assert (config.retention_days, config.request_rate, config.request_burst) == (
        30.0,
        2000.0,
        4000.0,
    )
    assert (config.report_rate, config.report_burst) == (100.0, 20_000.0)
    limits = config.device_limits()
    assert (limits.requests.rate, limits.requests.burst) == (2000.0, 4000.0)
    assert (limits.reports.rate, limits.reports.burst) == (100.0, 20_000.0)
    assert config.mqtt_client_id == "modelcast-coordinator-default"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.fleet = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        ({"max_pending": 0}, ValueError, "max_pending must be at least 1"),
        ({"fleet": "no/slash"}, protocol.ProtocolError, "fleet"),
        ({"index_expires_in": 0}, ValueError, "index_expires_in must be positive"),
        ({"retention_days": 0}, ValueError, "retention must be positive"),
        ({"request_rate": 0}, ValueError, "need rate > 0"),
        ({"request_burst": 0.5}, ValueError, "burst >= 1"),
        ({"report_rate": 0}, ValueError, "need rate > 0"),
        ({"report_burst": 0.5}, ValueError, "burst >= 1"),
    ],
)
def test_bad_settings_are_refused(
    changes: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        CoordinatorConfig(**{**BASE, **changes})


def test_the_client_id_is_the_given_one_else_the_credentials_one() -> None:
    creds = ClientCreds("coord", "pw", "coord-id", None)
    assert CoordinatorConfig(**BASE, creds=creds).mqtt_client_id == "coord-id"
    assert CoordinatorConfig(**BASE, creds=creds, client_id="x").mqtt_client_id == "x"
    assert CoordinatorConfig(**BASE, fleet="lab").mqtt_client_id == "modelcast-coordinator-lab"
