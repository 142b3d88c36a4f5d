"""RabbitMQ configurations: the development one the tests' node runs, and the production one
generated from a ``modelcast creds`` state directory (TLS only, no anonymous access, one user per
identity with the grants of ``grants.role_grants``).

RabbitMQ's MQTT plugin publishes to the ``amq.topic`` exchange with the topic as routing key
(``/`` becomes ``.``) and subscribes a queue per session (``mqtt-subscription-CLIENTIDqos0|1``)
bound with the filter as binding key (``+`` becomes ``*``). So a grant becomes:

* a topic permission on ``amq.topic``: ``write`` matched against the routing keys a user
  publishes to, ``read`` against the binding keys of its subscriptions;
* resource permissions that let the user declare and use only the queues named after its own
  client id, which is its username: another identity's client id is refused, so nobody takes
  over another's session (Mosquitto's ``use_username_as_clientid`` does the same).

Both configurations carry the session-queue policy: at most 1,000 messages for an offline
session, the oldest dropped (Mosquitto keeps 1,000 too; RabbitMQ would keep everything).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .grants import Grant, check_name, role_grants

VHOST = "/"
EXCHANGE = "amq.topic"
SESSION_QUEUES = "^mqtt-subscription-"
SESSION_POLICY: Mapping[str, Any] = {
    "vhost": VHOST,
    "name": "modelcast-mqtt-sessions",
    "pattern": SESSION_QUEUES,
    "apply-to": "queues",
    "priority": 0,
    "definition": {"max-length": 1000, "overflow": "drop-head"},
}
#: matches no routing key (an MQTT topic is never empty)
NOTHING = "^$"


@dataclass(frozen=True)
class RabbitUser:
    name: str
    password: str
    role: str
    fleet: str


def password_hash(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's ``rabbit_password_hashing_sha256``: base64(salt + sha256(salt + password))."""
    salt = os.urandom(4) if salt is None else salt
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def key_regex(topic_filter: str) -> str:
    """A regex over AMQP routing and binding keys for an MQTT topic filter: ``+`` is one level
    (also the binding key's ``*``), a trailing ``#`` any number of levels, none included."""
    levels = topic_filter.split("/")
    tail = ""
    if levels[-1] == "#":
        levels, tail = levels[:-1], r"(\..+)?"
    parts = [r"[^.]+" if level == "+" else re.escape(level) for level in levels]
    return r"\.".join(parts) + tail


def _any_of(filters: Iterable[str]) -> str:
    regexes = [key_regex(f) for f in filters]
    return f"^({'|'.join(regexes)})$" if regexes else NOTHING


def topic_permission(name: str, grants: Iterable[Grant]) -> dict[str, str]:
    grants = list(grants)
    return {
        "user": name,
        "vhost": VHOST,
        "exchange": EXCHANGE,
        "write": _any_of(g.topic for g in grants if g.writes),
        "read": _any_of(g.topic for g in grants),
    }


def resource_permission(name: str) -> dict[str, str]:
    """Its own session queues, and the exchange."""
    own = rf"mqtt-subscription-{re.escape(check_name(name, 'name'))}qos[01]"
    return {
        "user": name,
        "vhost": VHOST,
        "configure": f"^{own}$",
        "write": rf"^(amq\.topic|{own})$",
        "read": rf"^(amq\.topic|{own})$",
    }


def _user(name: str, password: str) -> dict[str, Any]:
    return {
        "name": name,
        "password_hash": password_hash(password),
        "hashing_algorithm": "rabbit_password_hashing_sha256",
        "tags": [],
    }


def production_definitions(users: Iterable[RabbitUser]) -> dict[str, Any]:
    """Definitions (``load_definitions`` at boot, or ``rabbitmqctl import_definitions``)."""
    users = sorted(users, key=lambda u: u.name)
    return {
        "vhosts": [{"name": VHOST}],
        "users": [_user(u.name, u.password) for u in users],
        "permissions": [resource_permission(u.name) for u in users],
        "topic_permissions": [
            topic_permission(u.name, role_grants(u.role, u.fleet, u.name)) for u in users
        ],
        "policies": [dict(SESSION_POLICY)],
    }


def dev_definitions() -> dict[str, Any]:
    """The development node: ``guest`` (anonymous MQTT clients) may do anything; the policy."""
    everything = {"configure": ".*", "write": ".*", "read": ".*"}
    return {
        "vhosts": [{"name": VHOST}],
        "users": [_user("guest", "guest")],
        "permissions": [{"user": "guest", "vhost": VHOST, **everything}],
        "policies": [dict(SESSION_POLICY)],
    }


def dev_conf(*, amqp_port: int, mqtt_port: int, definitions: Path, host: str) -> str:
    """rabbitmq.conf of the development node: plain MQTT on ``host``, anonymous as guest."""
    return (
        "\n".join(
            [
                f"listeners.tcp.default = {host}:{amqp_port}",
                f"mqtt.listeners.tcp.default = {host}:{mqtt_port}",
                "mqtt.allow_anonymous = true",
                "mqtt.default_user = guest",
                "mqtt.default_pass = guest",
                # guest may log in from loopback only by default; the listener is loopback anyway
                "loopback_users = none",
                f"load_definitions = {definitions}",
            ]
        )
        + "\n"
    )


def production_conf(state: Path, *, port: int, bind: str, definitions: Path) -> str:
    """rabbitmq.conf of the production profile: MQTT over TLS only (the state directory's CA and
    server certificate), no AMQP listener, no anonymous access, the generated definitions."""
    s = state.resolve()
    return (
        "\n".join(
            [
                "listeners.tcp = none",
                "mqtt.listeners.tcp = none",
                f"mqtt.listeners.ssl.default = {bind}:{port}",
                f"ssl_options.cacertfile = {s / 'ca.crt'}",
                f"ssl_options.certfile = {s / 'server.crt'}",
                f"ssl_options.keyfile = {s / 'server.key'}",
                "ssl_options.verify = verify_none",
                "ssl_options.fail_if_no_peer_cert = false",
                "mqtt.allow_anonymous = false",
                f"load_definitions = {definitions.resolve()}",
            ]
        )
        + "\n"
    )
