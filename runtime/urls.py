"""Broker URLs: the one place that parses and formats ``mqtt://host:port`` and ``mqtts://``,
and lists of them (``URL1,URL2,...``: the nodes of one cluster, tried in turn on failure)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from .errors import SetupError

DEFAULT_MQTT_PORT = 1883
DEFAULT_MQTTS_PORT = 8883
_DEFAULT_PORTS = {"mqtt": DEFAULT_MQTT_PORT, "mqtts": DEFAULT_MQTTS_PORT}


def parse_broker_url(url: str) -> tuple[str, int]:
    """Return ``(host, port)`` for ``mqtt://host[:port]`` (port defaults to 1883) or
    ``mqtts://host[:port]`` (MQTT over TLS; port defaults to 8883).

    Raises SetupError (a ValueError) naming what is wrong, since these URLs come from env vars and
    command lines where a typo should fail loudly rather than connect somewhere odd.
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in _DEFAULT_PORTS:
        if parts.scheme in ("ssl", "tls", "ws", "wss"):
            raise SetupError(
                f"broker URL {url!r}: scheme {parts.scheme!r} is not supported "
                "(use mqtts://host:port for TLS)"
            )
        raise SetupError(f"broker URL {url!r} must look like mqtt://host:port or mqtts://host:port")
    if parts.username is not None or parts.password is not None:
        raise SetupError(
            f"broker URL {url!r}: credentials in the URL are not supported (use --creds FILE)"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise SetupError(f"broker URL {url!r}: unexpected path, query or fragment")
    host = parts.hostname
    if not host:
        raise SetupError(f"broker URL {url!r} has no host")
    try:
        port = parts.port
    except ValueError:
        raise SetupError(f"broker URL {url!r}: port must be a number in 1..65535") from None
    if port is None:
        return host, _DEFAULT_PORTS[parts.scheme]
    if port == 0:
        raise SetupError(f"broker URL {url!r}: port must be a number in 1..65535")
    return host, port


def is_tls_url(url: str) -> bool:
    """True for ``mqtts://`` (after the same checks as ``parse_broker_url``); for a list, whether
    its brokers (all of one scheme, see ``parse_broker_list``) are."""
    return parse_broker_list(url)[0].tls


@dataclass(frozen=True)
class BrokerAddress:
    """One broker of a list: where to connect, and whether over TLS."""

    host: str
    port: int
    tls: bool

    @property
    def url(self) -> str:
        return format_broker_url(self.host, self.port, tls=self.tls)


def parse_broker_list(text: str) -> tuple[BrokerAddress, ...]:
    """The brokers of ``URL1,URL2,...`` (one URL is a list of one), in order.

    A client keeps one TLS setting and one login for all of them (the nodes of one cluster share
    its CA and its users), so a list mixing ``mqtt://`` and ``mqtts://`` is refused, as are empty
    entries and a broker named twice (which would only lengthen a failover).
    """
    items = [item.strip() for item in text.split(",")]
    if not any(items):
        raise SetupError("no broker URL given")
    if not all(items):
        raise SetupError(f"broker list {text!r} has an empty entry")
    brokers = tuple(
        BrokerAddress(*parse_broker_url(item), tls=urlsplit(item).scheme == "mqtts")
        for item in items
    )
    if len({b.tls for b in brokers}) > 1:
        raise SetupError(
            f"broker list {text!r} mixes mqtt:// and mqtts://: use one scheme for every broker"
        )
    twice = sorted({b.url for b in brokers if brokers.count(b) > 1})
    if twice:
        raise SetupError(f"broker list {text!r} names {', '.join(twice)} more than once")
    return brokers


def format_broker_url(host: str, port: int, *, tls: bool = False) -> str:
    """Inverse of parse_broker_url (brackets IPv6 literals)."""
    shown = f"[{host}]" if ":" in host else host
    return f"{'mqtts' if tls else 'mqtt'}://{shown}:{port}"
