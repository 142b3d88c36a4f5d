"""Run a throwaway Mosquitto on a free loopback port (tests, CI and the demo).

The broker is a plain child process reading a generated config: ``listener PORT
127.0.0.1`` followed by a profile from ``broker_config/``. Nothing here needs a
system Mosquitto service, root, or a fixed port.
"""

from __future__ import annotations

import atexit
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from broker_admin.mosquitto import DEV_CONF, find_mosquitto
from runtime.urls import format_broker_url

from .errors import BrokerStartError

_POLL_S = 0.02

# Children still running when the interpreter exits (a test crashed, Ctrl-C): stop
# them so no orphan broker outlives the run; likewise remove our temp dirs.
_live: set[subprocess.Popen[bytes]] = set()
_temp_dirs: set[Path] = set()


@atexit.register
def _reap_live_brokers() -> None:
    for proc in list(_live):
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for path in list(_temp_dirs):
        shutil.rmtree(path, ignore_errors=True)


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# MQTT 3.1.1 CONNECT (clean session, keepalive 60 s, empty client id) and DISCONNECT.
_PROBE_CONNECT = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00"
_PROBE_DISCONNECT = b"\xe0\x00"


def answers_mqtt(host: str, port: int) -> bool:
    """True if an MQTT broker answers a CONNECT with a CONNACK on host:port.

    A bare TCP connect is not enough: if mosquitto lost the race for its port,
    whoever took it would accept the connection too.
    """
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(_PROBE_CONNECT)
            answer = sock.recv(4)
            if answer[:1] == b"\x20":  # CONNACK, whatever its return code
                sock.sendall(_PROBE_DISCONNECT)
                return True
            return False
    except OSError:
        return False


class LocalBroker:
    """A Mosquitto child process bound to 127.0.0.1 on a free port.

    Use as a context manager, or call start()/close(). The port is chosen once and
    kept, so restart() brings the broker back where clients expect it.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        *,
        conf_path: Path | str | None = None,
        extra_conf: str = "",
        port: int | None = None,
        binary: str | None = None,
        workdir: Path | str | None = None,
        start_timeout: float = 10.0,
        ready: Callable[[str, int], bool] | None = None,
    ) -> None:
        """Configure (not start) a broker.

        conf_path: profile to append after the listener line (default dev.conf).
        extra_conf: extra config lines appended after the profile.
        ready: readiness check ``(host, port) -> bool`` polled after the start; default: the
            broker answers an anonymous MQTT CONNECT, which a TLS listener never does (for
            a rendered production profile pass e.g. ``partial(answers_tls, ca_file=...)``).
        port: fixed port; default is a free one picked at start().
        workdir: where the config and log go; kept afterwards. Default is a temp dir
            that close() removes.
        """
        self.conf_path = Path(conf_path) if conf_path is not None else DEV_CONF
        self.extra_conf = extra_conf
        self.start_timeout = start_timeout
        self._ready = ready or answers_mqtt
        self._fixed_port = port
        self._port: int | None = port
        self._binary = binary
        self._own_workdir = workdir is None
        self._workdir = Path(workdir) if workdir is not None else None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- addressing ---------------------------------------------------------
    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("broker not started yet: no port chosen")
        return self._port

    @property
    def url(self) -> str:
        return format_broker_url(self.host, self.port)

    @property
    def log_path(self) -> Path:
        return self._dir() / "mosquitto.log"

    @property
    def conf_file(self) -> Path:
        """The generated config actually passed to mosquitto."""
        return self._dir() / "mosquitto.conf"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- lifecycle ----------------------------------------------------------
    def start(self) -> LocalBroker:
        """Start mosquitto and return once it answers MQTT on its port."""
        if self.running:
            raise RuntimeError(f"broker already running on {self.url}")
        # A picked port can be grabbed by someone else before mosquitto binds it;
        # with no fixed port, just pick another one.
        attempts = 1 if self._fixed_port is not None else 3
        for attempt in range(attempts):
            if self._fixed_port is None:
                self._port = free_loopback_port()
            try:
                self._spawn_and_wait()
                return self
            except BrokerStartError as exc:
                if not exc.port_in_use or attempt == attempts - 1:
                    self.close()  # the error message already carries the log
                    raise
        raise AssertionError("unreachable")

    def restart(self) -> LocalBroker:
        """Start again on the SAME port (stopping first if still running).

        Mosquitto sets SO_REUSEADDR, so TIME_WAIT sockets from the previous process
        do not block the bind; a failed bind is still retried until start_timeout.
        """
        if self.running:
            self.stop()
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                self._spawn_and_wait()
                return self
            except BrokerStartError as exc:
                if not exc.port_in_use or time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)  # back off before re-trying the bind

    def stop(self, timeout: float = 5.0) -> None:
        """Graceful stop: SIGTERM, then SIGKILL if it has not exited in `timeout` s."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            self._forget()
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self._forget()

    def kill(self) -> None:
        """SIGKILL: the broker vanishes without closing connections cleanly (faults)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        self._forget()

    def close(self) -> None:
        """Stop, and remove the temp dir if this object created it."""
        self.stop()
        if self._own_workdir and self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            _temp_dirs.discard(self._workdir)
            self._workdir = None

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"LocalBroker({self._port and self.url}, {state})"

    # -- internals ------------------------------------------------------------
    def _dir(self) -> Path:
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="modelcast-broker-"))
            _temp_dirs.add(self._workdir)
        self._workdir.mkdir(parents=True, exist_ok=True)
        return self._workdir

    def _write_conf(self) -> Path:
        profile = self.conf_path.read_text()
        text = f"listener {self.port} {self.host}\n{profile}"
        if self.extra_conf:
            text += f"\n# extra_conf\n{self.extra_conf}\n"
        self.conf_file.write_text(text)
        return self.conf_file

    def _spawn_and_wait(self) -> None:
        binary = self._binary or find_mosquitto()
        if binary is None:
            raise FileNotFoundError(
                "mosquitto binary not found (looked on PATH and in /usr/sbin); "
                "install it with `apt-get install mosquitto` or run `make setup`"
            )
        conf = self._write_conf()
        with self.log_path.open("ab") as log:
            proc = subprocess.Popen(
                [binary, "-c", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own process group: a Ctrl-C aimed at the test run is not also
                # delivered to the broker half-way through a restart test.
                start_new_session=True,
            )
        self._proc = proc
        _live.add(proc)
        deadline = time.monotonic() + self.start_timeout
        while True:
            if proc.poll() is not None:
                self._forget()
                tail = self.log_text()[-2000:]
                raise BrokerStartError(
                    f"mosquitto exited with {proc.returncode} on port {self.port}; log:\n{tail}",
                    port_in_use="Address already in use" in tail,
                )
            if self._ready(self.host, self.port):
                return
            if time.monotonic() >= deadline:
                self.kill()
                raise BrokerStartError(
                    f"mosquitto did not listen on port {self.port} within "
                    f"{self.start_timeout}s; log:\n" + self.log_text()[-2000:]
                )
            # Polling a port has no event to wait on; this is the 20 ms poll interval.
            time.sleep(_POLL_S)

    def _forget(self) -> None:
        if self._proc is not None:
            _live.discard(self._proc)
        self._proc = None
