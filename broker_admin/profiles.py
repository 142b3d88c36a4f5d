"""``modelcast broker``: Mosquitto in the foreground with a profile from ``broker_config/``.

* the development profile (``dev.conf``): anonymous, plain MQTT, no persistence;
* the production profile (``production.conf``, ``--secure``): a template filled with the files of
  a state directory (TLS material, password file, ACL, persistence), see ``credstore.py``.

The generated config goes to ``DIR/mosquitto.conf`` and the broker's pid to ``DIR/broker.pid``,
which ``modelcast creds`` uses to make the broker reload its password and ACL files (SIGHUP).
"""

from __future__ import annotations

import getpass
import logging
import signal
import string
import subprocess
import sys
import tempfile
from pathlib import Path
from types import FrameType

from runtime.files import write_atomic
from runtime.listen import check_free

from .credstore import BROKER_CONF, PID_FILE, CredStore
from .errors import BrokerAdminError
from .mosquitto import DEV_CONF, PRODUCTION_CONF, find_mosquitto
from .tlsca import TlsOptions, ensure_tls

log = logging.getLogger(__name__)

PERSISTENCE_DIR = "mosquitto-data"


def _conf_path(path: Path) -> str:
    text = str(path.resolve())
    if any(c.isspace() for c in text):
        raise BrokerAdminError(f"{text}: Mosquitto config values cannot contain spaces")
    return text


def render_production(state: Path, *, user: str | None = None) -> str:
    """The production profile (no listener line) for the files of ``state``."""
    template = string.Template(PRODUCTION_CONF.read_text())
    return template.substitute(
        cafile=_conf_path(state / "ca.crt"),
        certfile=_conf_path(state / "server.crt"),
        keyfile=_conf_path(state / "server.key"),
        password_file=_conf_path(state / "passwd"),
        acl_file=_conf_path(state / "acl"),
        persistence_dir=_conf_path(state / PERSISTENCE_DIR),
        user=user or getpass.getuser(),
    )


def write_broker_conf(
    state: Path,
    *,
    port: int,
    bind: str = "127.0.0.1",
    secure: bool,
    extra_conf: str = "",
) -> Path:
    """``listener PORT BIND`` + the profile (+ ``extra_conf``) into ``state/mosquitto.conf``."""
    if secure:
        (state / PERSISTENCE_DIR).mkdir(mode=0o700, parents=True, exist_ok=True)
        profile = render_production(state)
    else:
        profile = DEV_CONF.read_text()
    text = f"listener {port} {bind}\n{profile}"
    if extra_conf:
        text += f"\n# --extra-conf\n{extra_conf}\n"
    path = state / BROKER_CONF
    write_atomic(path, text.encode(), mode=0o600)
    return path


#: What an operator can do when the broker's address is taken.
BROKER_REMEDY = (
    "Choose another with --port PORT (and --bind ADDRESS), or stop what listens there "
    "(another 'modelcast broker', or the system's Mosquitto service)"
)


def run_broker(
    state: Path | None,
    *,
    port: int,
    bind: str = "127.0.0.1",
    secure: bool = False,
    extra_conf: str = "",
    tls: TlsOptions | None = None,
) -> int:
    """Run Mosquitto in the foreground until it exits or we are signalled; its exit code.

    SIGTERM and SIGINT stop it (Mosquitto saves its persistence file on the way out); SIGHUP is
    passed on (reload the password and ACL files)."""
    binary = find_mosquitto()
    if binary is None:
        raise FileNotFoundError("mosquitto not found: apt-get install mosquitto")
    check_free("the broker", bind, port, BROKER_REMEDY)
    state = _prepare_state(state, secure=secure, bind=bind, tls=tls)
    conf = write_broker_conf(state, port=port, bind=bind, secure=secure, extra_conf=extra_conf)
    # an absolute config path: CredStore.broker_pid recognises the broker by it
    proc = subprocess.Popen([binary, "-c", str(conf.resolve())], stdin=subprocess.DEVNULL)
    pid_path = state / PID_FILE
    write_atomic(pid_path, f"{proc.pid}\n".encode())
    log.info(
        "mosquitto (pid %d) on %s:%d, %s profile, config %s",
        proc.pid,
        bind,
        port,
        "production (TLS, credentials, ACL)" if secure else "development (anonymous)",
        conf,
    )
    try:
        code = _wait_passing_signals(proc)
    finally:
        _remove_pid_file(pid_path, proc.pid)
    if code != 0:
        print(f"mosquitto exited with {code}", file=sys.stderr)
    return code


def _prepare_state(state: Path | None, *, secure: bool, bind: str, tls: TlsOptions | None) -> Path:
    """The state directory, ready for the profile: a temporary one for an unsecured broker
    without ``--state``; for ``--secure`` its TLS files, password file and ACL. Refuses a
    directory a broker already runs on."""
    if state is None:
        if secure:
            raise BrokerAdminError("--secure needs --state DIR")
        state = Path(tempfile.mkdtemp(prefix="modelcast-broker-"))
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    store = CredStore(state)
    running = store.broker_pid()
    if running is not None:
        raise BrokerAdminError(f"a broker (pid {running}) already runs on {state}")
    if secure:
        ensure_tls(state, tls)
        store.prepare()
        if not store.users():
            log.warning("no credentials yet: `modelcast creds add ROLE NAME --state %s`", state)
    elif bind not in ("127.0.0.1", "::1", "localhost"):
        log.warning(
            "the development profile lets ANYONE connect, publish and subscribe: bound to %s, "
            "that is anyone on the network (use --secure)",
            bind,
        )
    return state


def _wait_passing_signals(proc: subprocess.Popen[bytes]) -> int:
    """Wait for the broker, passing SIGHUP on and turning SIGTERM/SIGINT into its SIGTERM; the
    previous handlers are back, and the broker gone, when this returns or raises."""

    def forward(signum: int, _frame: FrameType | None) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGHUP if signum == signal.SIGHUP else signal.SIGTERM)

    previous = {
        sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    }
    try:
        return proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if proc.poll() is None:
            proc.terminate()
            proc.wait()


def _remove_pid_file(pid_path: Path, pid: int) -> None:
    """Remove the broker's pid file if it is still this broker's."""
    try:
        if pid_path.read_text().strip() == str(pid):
            pid_path.unlink()
    except FileNotFoundError:
        pass
