"""Broker URLs: the one place that parses and formats ``mqtt://host:port`` and ``mqtts://``."""

from __future__ import annotations

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
    """True for ``mqtts://`` (after the same checks as ``parse_broker_url``)."""
    parse_broker_url(url)
    return urlsplit(url.strip()).scheme == "mqtts"


def format_broker_url(host: str, port: int, *, tls: bool = False) -> str:
    """Inverse of parse_broker_url (brackets IPv6 literals)."""
    shown = f"[{host}]" if ":" in host else host
    return f"{'mqtts' if tls else 'mqtt'}://{shown}:{port}"
