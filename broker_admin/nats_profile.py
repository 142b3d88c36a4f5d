"""The NATS production profile, generated from a ``modelcast creds`` state directory: MQTT over TLS
only (the state directory's CA and server certificate), no anonymous access, one user per identity
with the grants of ``grants.role_grants`` as NATS subject permissions.

NATS maps an MQTT topic to a subject (``/`` becomes ``.``; ``+`` is ``*``; ``a/#``, which also
matches ``a`` itself, is the two subjects ``a`` and ``a.>``). A read grant allows subscribing, a
readwrite grant also publishing. What NATS cannot do that Mosquitto's profile does: tie the client
id to the username (docs/BROKERS.md, limitations). Passwords are written in clear in the config
(mode 0600; nats-server also takes bcrypt hashes, which nothing here can make).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .grants import Grant, role_grants


@dataclass(frozen=True)
class NatsUser:
    name: str
    password: str
    role: str
    fleet: str


def subjects(topic_filter: str) -> list[str]:
    """The NATS subjects of an MQTT topic filter."""
    levels = ["*" if level == "+" else level for level in topic_filter.split("/")]
    if levels[-1] == "#":
        parent = ".".join(levels[:-1])
        return [parent, f"{parent}.>"]
    return [".".join(levels)]


#: where NATS delivers a QoS 1 subscription's JetStream consumer: every MQTT user needs it
MQTT_DELIVERY = "$MQTT.sub.>"


def permissions(grants: Iterable[Grant]) -> dict[str, Any]:
    grants = list(grants)
    read = [s for g in grants for s in subjects(g.topic)] + [MQTT_DELIVERY]
    write = [s for g in grants if g.writes for s in subjects(g.topic)]
    return {
        "publish": {"allow": write} if write else {"deny": [">"]},
        "subscribe": {"allow": read},
    }


def _user(u: NatsUser) -> dict[str, Any]:
    return {
        "user": u.name,
        "password": u.password,
        "permissions": permissions(role_grants(u.role, u.fleet, u.name)),
    }


def production_conf(
    state: Path, users: Iterable[NatsUser], *, port: int, bind: str, name: str = "modelcast"
) -> str:
    """nats.conf: JetStream in ``STATE/nats-jetstream``, the NATS client port on loopback only
    (a free one: modelcast speaks MQTT), MQTT over TLS on ``bind:port``, the users."""
    s = state.resolve()
    q = json.dumps  # NATS config strings and arrays accept JSON
    users_text = ",\n    ".join(q(_user(u)) for u in sorted(users, key=lambda u: u.name))
    return (
        "\n".join(
            [
                f"server_name: {q(name)}",
                'listen: "127.0.0.1:-1"',
                f"jetstream {{ store_dir: {q(str(s / 'nats-jetstream'))} }}",
                "mqtt {",
                f"  listen: {q(f'{bind}:{port}')}",
                f"  tls {{ cert_file: {q(str(s / 'server.crt'))},",
                f"        key_file: {q(str(s / 'server.key'))} }}",
                "}",
                "authorization {",
                f"  users: [\n    {users_text}\n  ]",
                "}",
            ]
        )
        + "\n"
    )
