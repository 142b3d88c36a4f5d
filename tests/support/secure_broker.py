"""The secure broker for tests: ``modelcast broker --secure`` as a child process on a free port,
and MQTT clients that log in with credentials from its state directory.

The broker runs exactly as an operator would run it (the CLI, the production profile, the pid
file ``modelcast creds`` signals), plus ``log_type debug`` so tests can read Mosquitto's
"Denied PUBLISH" lines.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from broker_admin.credstore import CredStore
from broker_admin.mosquitto import find_mosquitto
from broker_admin.tlsca import answers_tls, ensure_tls
from runtime.urls import format_broker_url
from testkit.cli_process import REPO
from testkit.local_broker import free_loopback_port
from testkit.mqtt_recorder import TopicRecorder
from testkit.plain_mqtt import plain_client

HOST = "127.0.0.1"
_POLL_S = 0.02  # readiness of a port has no event to wait on


#: Set by `make test` (CI): the secure broker tests then fail instead of skipping without
#: the mosquitto binaries, so the adversarial suite cannot silently drop out of a CI run.
REQUIRE_ENV = "MODELCAST_REQUIRE_MOSQUITTO"


def needs_mosquitto() -> pytest.MarkDecorator:
    """Skip a test without the mosquitto binaries, unless ``MODELCAST_REQUIRE_MOSQUITTO=1``."""
    missing = find_mosquitto() is None and os.environ.get(REQUIRE_ENV) != "1"
    return pytest.mark.skipif(missing, reason="needs the mosquitto binary")


@dataclass
class SecureBroker:
    state: Path
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    host = HOST

    @property
    def url(self) -> str:
        return format_broker_url(self.host, self.port, tls=True)

    @property
    def ca_file(self) -> Path:
        return self.state / "ca.crt"

    def creds_path(self, name: str) -> Path:
        return self.state / "creds" / f"{name}.json"

    def creds(self, name: str) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.creds_path(name).read_text())
        return loaded

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def recorder(
        self, name: str, topics: Iterable[str] | str = (), *, timeout: float = 15.0
    ) -> SecureRecorder:
        """A (not yet started) TopicRecorder logged in as ``name``, with the client id of its
        credentials (as the coordinator and the edge use)."""
        c = self.creds(name)
        return SecureRecorder(
            self.host,
            self.port,
            topics,
            ca_file=c["ca_file"],
            username=c["username"],
            password=c["password"],
            timeout=timeout,
            client_id=c["client_id"],
        )

    @property
    def mosquitto_pid(self) -> int | None:
        try:
            return int((self.state / "broker.pid").read_text())
        except (FileNotFoundError, ValueError):
            return None

    def stop(self) -> None:
        mosquitto = self.mosquitto_pid
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # `modelcast broker` stops mosquitto
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if mosquitto is not None and CredStore(self.state).broker_pid() == mosquitto:
            os.kill(mosquitto, signal.SIGKILL)  # the wrapper died without stopping its child


def _start(state: Path, log_path: Path, extra_conf: Path, timeout: float) -> SecureBroker:
    port = free_loopback_port()
    log = log_path.open("ab")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "modelcast.cli",
            "broker",
            "--secure",
            "--state",
            str(state),
            "--port",
            str(port),
            "--extra-conf",
            str(extra_conf),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=REPO,
    )
    log.close()
    broker = SecureBroker(state, port, proc, log_path)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(
                f"modelcast broker exited with {proc.returncode}:\n" + broker.log_text()[-3000:]
            )
        if broker.mosquitto_pid is not None and answers_tls(HOST, port, broker.ca_file):
            return broker
        if time.monotonic() > deadline:
            broker.stop()
            raise RuntimeError("secure broker not ready in time:\n" + broker.log_text()[-3000:])
        time.sleep(_POLL_S)


@contextmanager
def secure_broker(
    state: Path,
    identities: Iterable[tuple[str, str, str]] = (),
    *,
    extra_conf: str = "",
    timeout: float = 15.0,
) -> Iterator[SecureBroker]:
    """Identities ``(role, name, fleet)`` are made before the broker starts, so every one of them
    can log in at once (one made later is usable only after the broker's reload).
    ``extra_conf`` is appended to the profile (Mosquitto: a later setting wins)."""
    ensure_tls(state)
    store = CredStore(state)
    for role, name, fleet in identities:
        store.add(role, name, fleet=fleet)
    extra = state / "test-extra.conf"
    extra.write_text(
        "# tests read 'Denied PUBLISH' lines, logged at debug level\nlog_type debug\n" + extra_conf
    )
    log_path = state / "broker.log"
    for attempt in range(3):  # a free port can be taken before mosquitto binds it
        try:
            broker = _start(state, log_path, extra, timeout)
            break
        except RuntimeError as exc:
            if "Address already in use" not in str(exc) or attempt == 2:
                raise
    try:
        yield broker
    finally:
        broker.stop()


class SecureRecorder(TopicRecorder):
    """TopicRecorder over TLS with a username and password."""

    def __init__(
        self,
        host: str,
        port: int,
        topics: Iterable[str] | str = (),
        *,
        ca_file: str | Path,
        username: str,
        password: str,
        timeout: float = 15.0,
        client_id: str | None = None,
    ) -> None:
        super().__init__(
            host,
            port,
            topics,
            client_id=client_id,
            timeout=timeout,
            tls_ca=ca_file,
            username=username,
            password=password,
        )
        self.username = username

    def publish_all(self, items: Iterable[tuple[str, bytes]], *, retain: bool = False) -> None:
        """Publish in order on this connection, each acknowledged (PUBACK) before the next."""
        for topic, payload in items:
            self.publish(topic, payload, qos=1, retain=retain)


@dataclass(frozen=True)
class Outcome:
    """How one connection attempt ended."""

    connected: bool
    detail: str


def attempt_connect(
    host: str,
    port: int,
    *,
    ca_file: str | Path | None = None,
    username: str | None = None,
    password: str | None = None,
    client_id: str = "",
    timeout: float = 15.0,
) -> Outcome:
    """One MQTT 3.1.1 connection attempt with paho, TLS when ``ca_file`` is given: returns as
    soon as the broker accepts (CONNACK 0), refuses (CONNACK != 0), or the link fails."""
    client = plain_client(client_id)
    if ca_file is not None:
        client.tls_set(ca_certs=str(ca_file))
    if username is not None:
        client.username_pw_set(username, password)
    done = threading.Event()
    outcome: list[Outcome] = []

    def finish(result: Outcome) -> None:
        if not outcome:
            outcome.append(result)
        done.set()

    client.on_connect = lambda c, u, f, rc, p: finish(Outcome(not rc.is_failure, str(rc)))
    client.on_disconnect = lambda c, u, f, rc, p: finish(Outcome(False, f"disconnected: {rc}"))
    client.on_connect_fail = lambda c, u: finish(Outcome(False, "connect failed"))
    try:
        client.connect(host, port, keepalive=30)
    except (OSError, ssl.SSLError) as exc:  # a TLS handshake happens inside connect()
        return Outcome(False, f"{type(exc).__name__}: {exc}")
    client.loop_start()
    try:
        if not done.wait(timeout):
            raise AssertionError(
                f"no CONNACK and no disconnection from {host}:{port} in {timeout}s"
            )
        return outcome[0]
    finally:
        client.disconnect()
        client.loop_stop()
