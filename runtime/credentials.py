"""Client credentials: the JSON that ``modelcast creds add`` prints, loaded by ``modelcast
edge|coordinator|telemetry tail --creds FILE`` and turned into ``MqttSession`` options
(``session_auth``).

This is the half of the credentials that every client installs; the operator's half (the
identity registry, password file, ACL and CA) is ``broker_admin``, which a device never imports.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from .errors import SetupError
from .urls import is_tls_url

#: Who an identity is: what the broker's ACL lets it read and write (``broker_admin.credstore``).
ROLES = ("coordinator", "device", "integrator")


class SessionAuth(TypedDict, total=False):
    """Keyword arguments of ``MqttSession`` that carry credentials."""

    tls_ca: Path
    username: str
    password: str


@dataclass(frozen=True)
class ClientCreds:
    """One identity's credentials, as written by ``modelcast creds add``."""

    username: str
    password: str
    client_id: str
    ca_file: Path | None
    tls: bool = True
    role: str | None = None
    fleet: str | None = None

    @classmethod
    def load(cls, path: Path | str) -> ClientCreds:
        """Read and check a credentials JSON. A relative ``ca_file`` is relative to the JSON's
        directory, so a credentials file and its ``ca.crt`` can travel together."""
        path = Path(path)
        try:
            obj = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise SetupError(f"credentials {path}: not JSON ({exc})") from None
        if not isinstance(obj, dict):
            raise SetupError(f"credentials {path}: expected a JSON object")

        def text(key: str, *, optional: bool = False) -> str | None:
            value = obj.get(key)
            if value is None and optional:
                return None
            if not isinstance(value, str) or not value:
                raise SetupError(f"credentials {path}: {key!r} must be a non-empty string")
            return value

        username = text("username")
        password = text("password")
        assert username is not None and password is not None
        client_id = text("client_id", optional=True) or username
        ca_text = text("ca_file", optional=True)
        ca_file = None
        if ca_text is not None:
            ca_file = Path(ca_text)
            if not ca_file.is_absolute():
                ca_file = path.parent / ca_file
            if not ca_file.is_file():
                raise SetupError(f"credentials {path}: ca_file {ca_file} does not exist")
        tls = obj.get("broker_tls", True)
        if not isinstance(tls, bool):
            raise SetupError(f"credentials {path}: 'broker_tls' must be true or false")
        role = text("role", optional=True)
        if role is not None and role not in ROLES:
            raise SetupError(f"credentials {path}: unknown role {role!r}")
        return cls(
            username=username,
            password=password,
            client_id=client_id,
            ca_file=ca_file,
            tls=tls,
            role=role,
            fleet=text("fleet", optional=True),
        )

    def check_role(self, role: str, fleet: str | None = None) -> None:
        """Refuse credentials made for another role or fleet (the broker would refuse every
        publish anyway, silently: better to say so at start)."""
        if self.role is not None and self.role != role:
            raise SetupError(f"credentials of {self.username} are for a {self.role}, not a {role}")
        if fleet is not None and self.fleet is not None and self.fleet != fleet:
            raise SetupError(
                f"credentials of {self.username} are for fleet {self.fleet!r}, not {fleet!r}"
            )

    def session_auth(self, url: str) -> SessionAuth:
        """``MqttSession`` options for ``url``; a TLS identity needs an ``mqtts://`` URL, so a
        password is never sent in clear by mistake."""
        if self.tls and not is_tls_url(url):
            raise SetupError(
                f"credentials of {self.username} are for a TLS broker: use mqtts://HOST:PORT, "
                f"not {url}"
            )
        auth = SessionAuth(username=self.username, password=self.password)
        if self.ca_file is not None and is_tls_url(url):
            auth["tls_ca"] = self.ca_file
        return auth


def session_auth(creds: ClientCreds | None, url: str) -> SessionAuth:
    """``MqttSession(url, ..., **session_auth(creds, url))``: nothing when ``creds`` is None."""
    return creds.session_auth(url) if creds is not None else SessionAuth()
