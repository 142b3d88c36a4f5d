"""What each identity of a fleet may read and write, as MQTT topic filters: the one source of the
Mosquitto ACL (``credstore.render_acl``) and of the NATS and RabbitMQ production profiles
(``nats_profile``, ``rabbitmq_profile``), so the three brokers grant exactly the same.

* coordinator: read and write ``modelcast/F/#``;
* device NAME: write ``modelcast/F/devices/NAME/#``; read that, ``releases/#``, ``chunks/#``,
  ``resends/NAME``, ``commands`` and ``commands/NAME``;
* integrator: read ``devices/+/status`` and ``devices/+/telemetry/#``; publish nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.errors import ProtocolError
from protocol.names import check_name as _protocol_check_name
from runtime.credentials import ROLES

from .errors import BrokerAdminError

READ = "read"
READWRITE = "readwrite"


@dataclass(frozen=True)
class Grant:
    access: str  # READ or READWRITE
    topic: str  # an MQTT topic filter

    @property
    def writes(self) -> bool:
        return self.access == READWRITE


def check_name(value: str, what: str) -> str:
    """A name that becomes a topic level ([A-Za-z0-9_-]{1,64}: no ``/``, ``+`` or ``#`` that
    would widen a grant), as a BrokerAdminError."""
    try:
        return _protocol_check_name(value, what)
    except ProtocolError as exc:
        raise BrokerAdminError(str(exc)) from None


def role_grants(role: str, fleet: str, name: str) -> tuple[Grant, ...]:
    """The topic filters identity ``name`` of ``role`` in ``fleet`` may use."""
    base = f"modelcast/{check_name(fleet, 'fleet')}"
    check_name(name, "name")
    if role == "coordinator":
        return (Grant(READWRITE, f"{base}/#"),)
    if role == "device":
        return (
            Grant(READWRITE, f"{base}/devices/{name}/#"),
            Grant(READ, f"{base}/releases/#"),
            Grant(READ, f"{base}/chunks/#"),
            Grant(READ, f"{base}/resends/{name}"),
            Grant(READ, f"{base}/commands"),
            Grant(READ, f"{base}/commands/{name}"),
        )
    if role == "integrator":
        return (
            Grant(READ, f"{base}/devices/+/status"),
            Grant(READ, f"{base}/devices/+/telemetry/#"),
        )
    raise BrokerAdminError(f"unknown role {role!r} for {name} (one of {', '.join(ROLES)})")
