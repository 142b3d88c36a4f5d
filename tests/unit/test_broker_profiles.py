"""The NATS and RabbitMQ production profiles, rendered: the grants of the Mosquitto ACL as
subject permissions and topic permissions; and ``modelcast broker --kind``."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import pytest

from broker_admin.grants import role_grants
from broker_admin.nats_profile import MQTT_DELIVERY, permissions, subjects
from broker_admin.rabbitmq_profile import (
    NOTHING,
    key_regex,
    password_hash,
    resource_permission,
    topic_permission,
)
from modelcast.cli import main
from tests.unit.test_creds import needs_passwd


def test_nats_subjects_of_mqtt_filters() -> None:
    assert subjects("modelcast/f/devices/+/status") == ["modelcast.f.devices.*.status"]
    assert subjects("modelcast/f/#") == ["modelcast.f", "modelcast.f.>"]


def test_nats_permissions_follow_the_grants() -> None:
    device = permissions(role_grants("device", "f", "d1"))
    assert device["publish"] == {"allow": ["modelcast.f.devices.d1", "modelcast.f.devices.d1.>"]}
    assert "modelcast.f.commands.d1" in device["subscribe"]["allow"]
    assert MQTT_DELIVERY in device["subscribe"]["allow"]
    assert not [s for s in device["subscribe"]["allow"] if "d2" in s]
    assert permissions(role_grants("integrator", "f", "i"))["publish"] == {"deny": [">"]}


def _matches(regex: str, key: str) -> bool:
    return re.fullmatch(regex, key) is not None


def test_rabbitmq_topic_permissions_follow_the_grants() -> None:
    device = topic_permission("d1", role_grants("device", "f", "d1"))
    assert _matches(device["write"], "modelcast.f.devices.d1.state")
    assert not _matches(device["write"], "modelcast.f.devices.d2.state")
    assert not _matches(device["write"], "modelcast.f.releases.index")
    assert _matches(device["read"], "modelcast.f.releases.index")
    assert _matches(device["read"], "modelcast.f.chunks.m.1.0")
    assert not _matches(device["read"], "modelcast.f.devices.*.status")  # a wildcard binding
    assert not _matches(device["read"], "modelcast.f.commands.d2")
    integrator = topic_permission("i", role_grants("integrator", "f", "i"))
    assert integrator["write"] == NOTHING
    assert _matches(integrator["read"], "modelcast.f.devices.*.status")
    assert _matches(integrator["read"], "modelcast.f.devices.*.telemetry.*")
    assert not _matches(integrator["read"], "modelcast.f.#")
    assert key_regex("a/#") == r"a(\..+)?"


def test_rabbitmq_users_may_use_only_their_own_session_queues() -> None:
    perm = resource_permission("d1")
    assert _matches(perm["configure"], "mqtt-subscription-d1qos1")
    assert not _matches(perm["configure"], "mqtt-subscription-d2qos1")
    assert _matches(perm["write"], "amq.topic")


def test_rabbitmq_password_hash_is_salted_sha256() -> None:
    raw = base64.b64decode(password_hash("pw", salt=b"salt"))
    assert raw == b"salt" + hashlib.sha256(b"saltpw").digest()


@needs_passwd
def test_modelcast_broker_kind_writes_the_profiles(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    assert main(["creds", "add", "device", "d1", "--state", str(state), "--fleet", "f"]) == 0
    for kind in ("nats", "rabbitmq"):
        args = ["broker", "--kind", kind, "--secure", "--state", str(state), "--port", "8884"]
        assert main(args) == 0
    out = capsys.readouterr().out
    assert "nats-server -c" in out and "rabbitmq-server" in out
    nats = (state / "nats.conf").read_text()
    assert '"user": "d1"' in nats and "127.0.0.1:8884" in nats and "tls {" in nats
    definitions = json.loads((state / "rabbitmq-definitions.json").read_text())
    assert [u["name"] for u in definitions["users"]] == ["d1"]
    assert "mqtt.listeners.ssl.default = 127.0.0.1:8884" in (state / "rabbitmq.conf").read_text()
    assert (state / "nats.conf").stat().st_mode & 0o077 == 0
    assert main(["broker", "--kind", "nats", "--state", str(state)]) != 0  # needs --secure
