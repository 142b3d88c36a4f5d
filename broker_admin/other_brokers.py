"""``modelcast broker --kind nats|rabbitmq --secure``: the production profile of NATS or RabbitMQ
written into a ``modelcast creds`` state directory, from the same identities, TLS files and grants
as the Mosquitto profile. The broker is then started by its own command (printed); after a
``modelcast creds`` change, write the profile again and reload (``nats-server --signal reload``,
``rabbitmqctl import_definitions``).
"""

from __future__ import annotations

import json
from pathlib import Path

from runtime.files import read_json, write_atomic

from .credstore import CredStore
from .errors import BrokerAdminError
from .nats_profile import NatsUser
from .nats_profile import production_conf as nats_conf
from .rabbitmq_profile import RabbitUser, production_definitions
from .rabbitmq_profile import production_conf as rabbitmq_conf
from .tlsca import TlsOptions, ensure_tls

NATS_CONF = "nats.conf"
RABBITMQ_CONF = "rabbitmq.conf"
RABBITMQ_DEFINITIONS = "rabbitmq-definitions.json"
RABBITMQ_PLUGINS = "enabled_plugins"


def _identities(store: CredStore) -> list[tuple[str, str, str, str]]:
    """(name, password, role, fleet) of every identity, the password from its issued JSON."""
    found = []
    for name, user in sorted(store.users().items()):
        path = store.creds_path(name)
        try:
            password = str(read_json(path, {})["password"])
        except (OSError, KeyError, ValueError) as exc:
            raise BrokerAdminError(
                f"{path}: the credentials of {name} cannot be read ({exc}); "
                f"`modelcast creds rotate {name}` issues them again"
            ) from None
        found.append((name, password, user["role"], user["fleet"]))
    return found


def write_profile(
    state: Path, kind: str, *, port: int, bind: str, tls: TlsOptions | None = None
) -> list[Path]:
    """Write the production profile of ``kind`` (nats or rabbitmq) into ``state``; the files."""
    store = CredStore(state)
    ensure_tls(state, tls)
    ids = _identities(store)
    if kind == "nats":
        users = [NatsUser(*i) for i in ids]
        path = state / NATS_CONF
        write_atomic(path, nats_conf(state, users, port=port, bind=bind).encode(), mode=0o600)
        return [path]
    if kind == "rabbitmq":
        definitions = state / RABBITMQ_DEFINITIONS
        text = json.dumps(production_definitions(RabbitUser(*i) for i in ids), indent=1)
        write_atomic(definitions, text.encode(), mode=0o600)
        conf = state / RABBITMQ_CONF
        body = rabbitmq_conf(state, port=port, bind=bind, definitions=definitions)
        write_atomic(conf, body.encode(), mode=0o600)
        plugins = state / RABBITMQ_PLUGINS
        write_atomic(plugins, b"[rabbitmq_mqtt].\n", mode=0o644)
        return [conf, definitions, plugins]
    raise BrokerAdminError(f"no production profile for {kind!r}: nats or rabbitmq")


def start_command(state: Path, kind: str) -> str:
    """How to start the broker on the files ``write_profile`` wrote."""
    s = state.resolve()
    if kind == "nats":
        return f"nats-server -c {s / NATS_CONF}"
    return (
        f"RABBITMQ_CONFIG_FILE={s / RABBITMQ_CONF} "
        f"RABBITMQ_ENABLED_PLUGINS_FILE={s / RABBITMQ_PLUGINS} rabbitmq-server"
    )
