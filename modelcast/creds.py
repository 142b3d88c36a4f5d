"""Broker credentials: who may connect to the secure broker, and what each identity may do.

Two halves:

* the client side, ``ClientCreds``: the JSON that ``modelcast creds add`` prints, loaded by
  ``modelcast edge|coordinator|telemetry tail --creds FILE`` and turned into ``MqttSession``
  options (``session_auth``);
* the operator side, ``CredStore``: a broker state directory holding the registry of identities
  (``creds.json``, no secrets), the Mosquitto password file (``passwd``, maintained with the
  ``mosquitto_passwd`` binary, never written by hand), the ACL file (``acl``, regenerated from
  the registry on every change), every issued credentials JSON (``creds/NAME.json``, 0600) and
  the TLS files (``modelcast/tlsca.py``). A change is signalled to a running broker with SIGHUP
  (its pid is in ``broker.pid``), which makes Mosquitto re-read the password and ACL files.

The ACL, per identity of fleet F (``docs/SECURITY.md`` has the table):

* coordinator: read and write ``modelcast/F/#``;
* device NAME: write ``modelcast/F/devices/NAME/#``; read that, ``releases/#``, ``chunks/#``,
  ``resends/NAME``, ``commands`` and ``commands/NAME``;
* integrator: read ``devices/+/status`` and ``devices/+/telemetry/#``; publish nothing.

The username is the identity's name and the client id is the username: the profile sets
``use_username_as_clientid``, so nobody can take over another identity's MQTT session.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from protocol.errors import ProtocolError
from protocol.names import check_name as _protocol_check_name

from .files import read_json, write_atomic, write_json_atomic
from .tlsca import CA_CERT, ensure_tls
from .urls import is_tls_url

log = logging.getLogger(__name__)

ROLES = ("coordinator", "device", "integrator")
REGISTRY = "creds.json"
PASSWD = "passwd"
ACL = "acl"
CREDS_DIR = "creds"
PID_FILE = "broker.pid"
BROKER_CONF = "mosquitto.conf"
_LOCK = ".creds.lock"
_PASSWD_FALLBACKS = ("/usr/bin/mosquitto_passwd", "/usr/sbin/mosquitto_passwd")


def check_name(value: str, what: str) -> str:
    """A name that becomes a topic level ([A-Za-z0-9_-]{1,64}: no ``/``, ``+`` or ``#`` that
    would widen an ACL line), as a ValueError."""
    try:
        return _protocol_check_name(value, what)
    except ProtocolError as exc:
        raise ValueError(str(exc)) from None


# --- client side ------------------------------------------------------------------------------
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
            raise ValueError(f"credentials {path}: not JSON ({exc})") from None
        if not isinstance(obj, dict):
            raise ValueError(f"credentials {path}: expected a JSON object")

        def text(key: str, *, optional: bool = False) -> str | None:
            value = obj.get(key)
            if value is None and optional:
                return None
            if not isinstance(value, str) or not value:
                raise ValueError(f"credentials {path}: {key!r} must be a non-empty string")
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
                raise ValueError(f"credentials {path}: ca_file {ca_file} does not exist")
        tls = obj.get("broker_tls", True)
        if not isinstance(tls, bool):
            raise ValueError(f"credentials {path}: 'broker_tls' must be true or false")
        role = text("role", optional=True)
        if role is not None and role not in ROLES:
            raise ValueError(f"credentials {path}: unknown role {role!r}")
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
            raise ValueError(f"credentials of {self.username} are for a {self.role}, not a {role}")
        if fleet is not None and self.fleet is not None and self.fleet != fleet:
            raise ValueError(
                f"credentials of {self.username} are for fleet {self.fleet!r}, not {fleet!r}"
            )

    def session_auth(self, url: str) -> SessionAuth:
        """``MqttSession`` options for ``url``; a TLS identity needs an ``mqtts://`` URL, so a
        password is never sent in clear by mistake."""
        if self.tls and not is_tls_url(url):
            raise ValueError(
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


# --- operator side ----------------------------------------------------------------------------
def find_mosquitto_passwd() -> str:
    """The ``mosquitto_passwd`` binary (PATH, next to mosquitto, Debian's /usr/bin)."""
    found = shutil.which("mosquitto_passwd")
    if found:
        return found
    from .broker import find_mosquitto

    broker = find_mosquitto()
    candidates = [str(Path(broker).with_name("mosquitto_passwd"))] if broker else []
    for candidate in [*candidates, *_PASSWD_FALLBACKS]:
        if os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError(
        "mosquitto_passwd not found (it comes with the mosquitto package: apt-get install "
        "mosquitto)"
    )


def render_acl(users: dict[str, dict[str, Any]]) -> str:
    """The Mosquitto ACL file for ``users`` ({name: {"role", "fleet"}}), one section each."""
    lines = [
        "# Generated by `modelcast creds` from creds.json: do not edit, it is rewritten on",
        "# every change. Nothing is granted before the first `user` line: anonymous clients",
        "# are refused anyway (allow_anonymous false), and whatever is not granted is denied.",
    ]
    for name in sorted(users, key=lambda n: (users[n]["fleet"], ROLES.index(users[n]["role"]), n)):
        role, fleet = users[name]["role"], users[name]["fleet"]
        base = f"modelcast/{check_name(fleet, 'fleet')}"
        check_name(name, "name")
        lines += ["", f"# {role} {name} of fleet {fleet}", f"user {name}"]
        if role == "coordinator":
            lines.append(f"topic readwrite {base}/#")
        elif role == "device":
            lines += [
                f"topic readwrite {base}/devices/{name}/#",
                f"topic read {base}/releases/#",
                f"topic read {base}/chunks/#",
                f"topic read {base}/resends/{name}",
                f"topic read {base}/commands",
                f"topic read {base}/commands/{name}",
            ]
        elif role == "integrator":
            lines += [
                f"topic read {base}/devices/+/status",
                f"topic read {base}/devices/+/telemetry/#",
            ]
        else:
            raise ValueError(f"unknown role {role!r} for {name}")
    return "\n".join(lines) + "\n"


class CredStore:
    """The identities of one broker state directory. Every change takes a file lock, updates the
    password file, the registry and the ACL, and signals a running broker to reload them."""

    def __init__(self, state: Path | str) -> None:
        self.state = Path(state)

    # -- paths -------------------------------------------------------------------------------
    @property
    def registry_path(self) -> Path:
        return self.state / REGISTRY

    @property
    def passwd_path(self) -> Path:
        return self.state / PASSWD

    @property
    def acl_path(self) -> Path:
        return self.state / ACL

    @property
    def creds_dir(self) -> Path:
        return self.state / CREDS_DIR

    @property
    def pid_path(self) -> Path:
        return self.state / PID_FILE

    def creds_path(self, name: str) -> Path:
        return self.creds_dir / f"{check_name(name, 'name')}.json"

    # -- queries -----------------------------------------------------------------------------
    def users(self) -> dict[str, dict[str, Any]]:
        """{name: {"role", "fleet", "created"}}: who may connect (no secrets)."""
        registry = read_json(self.registry_path, {"v": 1, "users": {}})
        users: dict[str, dict[str, Any]] = registry.get("users", {})
        return users

    # -- changes -----------------------------------------------------------------------------
    def prepare(self) -> None:
        """Make sure the files the secure profile names exist (before the broker starts)."""
        with self._locked():
            if not self.passwd_path.exists():
                write_atomic(self.passwd_path, b"", mode=0o600)
            self._write_acl(self.users())

    def add(self, role: str, name: str, *, fleet: str = "default") -> dict[str, Any]:
        """A new identity; returns its credentials JSON (also written to ``creds/NAME.json``)."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        check_name(name, "name")
        check_name(fleet, "fleet")
        ensure_tls(self.state)
        with self._locked():
            users = self.users()
            if name in users:
                raise ValueError(
                    f"{name} already exists ({users[name]['role']} of fleet "
                    f"{users[name]['fleet']}); `modelcast creds rotate {name}` gives it a new "
                    "password"
                )
            users[name] = {"role": role, "fleet": fleet, "created": time.time()}
            creds = self._issue(name, users[name])
            self._save(users)
        self.reload_broker()
        return creds

    def rotate(self, name: str) -> dict[str, Any]:
        """A new password for ``name`` (same role and fleet); the old one stops working at the
        broker's reload, and Mosquitto drops connections made with it."""
        with self._locked():
            users = self.users()
            if name not in users:
                raise ValueError(f"no credentials named {name!r} in {self.state}")
            creds = self._issue(name, users[name])
            self._save(users)
        self.reload_broker()
        return creds

    def revoke(self, name: str) -> bool:
        """Remove ``name``: out of the password file, the ACL and the registry; its credentials
        JSON is deleted. Returns whether a running broker was told to reload."""
        with self._locked():
            users = self.users()
            if name not in users:
                raise ValueError(f"no credentials named {name!r} in {self.state}")
            self._run_passwd(["-D", str(self.passwd_path), name])
            del users[name]
            self._save(users)
            self.creds_path(name).unlink(missing_ok=True)
        return self.reload_broker()

    def reload_broker(self) -> bool:
        """SIGHUP the broker running on this state directory, if any: Mosquitto then re-reads
        the password and ACL files. False when none runs (the files apply at its next start)."""
        pid = self.broker_pid()
        if pid is None:
            log.info("no broker running on %s: changes apply when it starts", self.state)
            return False
        os.kill(pid, signal.SIGHUP)
        log.info("broker (pid %d) told to reload its password and ACL files", pid)
        return True

    def broker_pid(self) -> int | None:
        """The pid in ``broker.pid`` if it is a live mosquitto using this state directory's
        config (a stale pid reused by another process must never get a SIGHUP)."""
        try:
            pid = int(self.pid_path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        conf = str((self.state / BROKER_CONF).resolve()).encode()
        if not argv or b"mosquitto" not in Path(argv[0].decode(errors="replace")).name.encode():
            return None
        return pid if conf in argv else None

    # -- internals ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.state.mkdir(parents=True, exist_ok=True, mode=0o700)
        with (self.state / _LOCK).open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _issue(self, name: str, user: dict[str, Any]) -> dict[str, Any]:
        password = secrets.token_urlsafe(32)
        if not self.passwd_path.exists():
            write_atomic(self.passwd_path, b"", mode=0o600)
        # The password goes through a pipe, not argv (where `ps` would show it).
        self._run_passwd([str(self.passwd_path), name], stdin=f"{password}\n{password}\n")
        creds = {
            "username": name,
            "password": password,
            "client_id": name,
            "ca_file": str((self.state / CA_CERT).resolve()),
            "broker_tls": True,
            "role": user["role"],
            "fleet": user["fleet"],
            "issued": time.time(),
        }
        self.creds_dir.mkdir(mode=0o700, exist_ok=True)
        write_atomic(
            self.creds_path(name), (json.dumps(creds, indent=2) + "\n").encode(), mode=0o600
        )
        return creds

    def _save(self, users: dict[str, dict[str, Any]]) -> None:
        write_json_atomic(self.registry_path, {"v": 1, "users": users})
        self._write_acl(users)

    def _write_acl(self, users: dict[str, dict[str, Any]]) -> None:
        write_atomic(self.acl_path, render_acl(users).encode(), mode=0o600)

    def _run_passwd(self, args: list[str], stdin: str | None = None) -> None:
        done = subprocess.run(
            [find_mosquitto_passwd(), *args],
            input=stdin or "",
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            if args[0] == "-D" and "not found" in done.stderr + done.stdout:
                return  # already gone: revoking twice is not an error at this level
            detail = (done.stderr or done.stdout).strip().replace("Password:", "").strip()
            raise OSError(f"mosquitto_passwd failed ({done.returncode}): {detail}")
        self.passwd_path.chmod(0o600)
