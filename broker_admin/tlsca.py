"""The broker's TLS material in a state directory: a small CA made with ``cryptography``, or the
operator's own (the certificates themselves are made and read in ``certs``).

Files (all in the broker's state directory ``DIR``):

* ``ca.crt``: what clients trust (the ``ca_file`` of every credentials JSON);
* ``ca.key`` (0600): the CA's private key, only when ``modelcast`` issues the server certificate
  (a CA it made, or one the operator handed over with ``--ca-cert/--ca-key``);
* ``server.crt``, ``server.key`` (0600): the broker's certificate and key, issued here for
  ``127.0.0.1``, ``localhost`` and every ``--host``, or copied from ``--server-cert/--server-key``
  (then ``modelcast`` never reissues them: the operator's CA renews them).
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from runtime.files import write_atomic

from .certs import (
    cert_pem,
    hosts_of,
    is_ca,
    issue_server_cert,
    issued_by,
    key_pem,
    load_any_key,
    load_certs,
    load_key,
    make_ca,
    norm_host,
    same_public_key,
    utc_now,
)
from .errors import BrokerAdminError

log = logging.getLogger(__name__)

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
SERVER_CERT = "server.crt"
SERVER_KEY = "server.key"

DEFAULT_HOSTS = ("127.0.0.1", "localhost")
#: a server certificate closer than this to its expiry is reissued (modelcast-issued only)
RENEW_BEFORE = dt.timedelta(days=30)


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    #: None when the operator's CA issued the server certificate (modelcast cannot reissue it)
    ca_key: Path | None


@dataclass(frozen=True)
class TlsOptions:
    """What the operator brings to a state directory's TLS set-up, all optional: more names for
    the server certificate (``hosts``), their own CA (``ca_cert`` + ``ca_key``, first use only),
    or their own server certificate (``ca_cert`` + ``server_cert`` + ``server_key``)."""

    hosts: tuple[str, ...] = ()
    ca_cert: Path | None = None
    ca_key: Path | None = None
    server_cert: Path | None = None
    server_key: Path | None = None


def _ensure_ca(state: Path, ca_cert: Path | None, ca_key: Path | None) -> None:
    cert_path, key_path = state / CA_CERT, state / CA_KEY
    if cert_path.exists():
        if ca_cert is not None and cert_path.read_bytes() != ca_cert.read_bytes():
            raise BrokerAdminError(
                f"{state} already has a CA ({cert_path}); --ca-cert only applies on first use "
                "(start a new state directory to change CA)"
            )
        return
    if (ca_cert is None) != (ca_key is None):
        raise BrokerAdminError(
            "--ca-cert and --ca-key go together (or --ca-cert with --server-cert)"
        )
    if ca_cert is not None and ca_key is not None:
        key = load_key(ca_key)
        cert = load_certs(ca_cert)[0]
        if not same_public_key(cert, key):
            raise BrokerAdminError(f"--ca-key {ca_key} is not the key of --ca-cert {ca_cert}")
        if not is_ca(cert):
            raise BrokerAdminError(f"--ca-cert {ca_cert} is not a CA certificate")
        write_atomic(key_path, key_pem(key), mode=0o600)
        write_atomic(cert_path, cert_pem(cert))
        log.info("using the operator's CA %s", cert.subject.rfc4514_string())
        return
    key, cert = make_ca()
    write_atomic(key_path, key_pem(key), mode=0o600)  # the key first: a cert alone is useless
    write_atomic(cert_path, cert_pem(cert))
    log.info("created a broker CA in %s (%s)", state, cert.subject.rfc4514_string())


def _install_operator_server_cert(
    state: Path, ca_cert: Path | None, server_cert: Path, server_key: Path
) -> None:
    ca_path = state / CA_CERT
    if ca_cert is None and not ca_path.exists():
        raise BrokerAdminError(
            "--server-cert needs --ca-cert: the CA clients verify the broker with"
        )
    if (state / CA_KEY).exists():
        raise BrokerAdminError(
            f"{state} holds a CA made by modelcast; an operator's server certificate needs a "
            "new state directory"
        )
    chain = load_certs(server_cert)
    key = load_any_key(server_key)
    if not same_public_key(chain[0], key):
        raise BrokerAdminError(
            f"--server-key {server_key} is not the key of --server-cert {server_cert}"
        )
    trusted = load_certs(ca_cert) if ca_cert is not None else load_certs(ca_path)
    if not issued_by(chain[0], [*chain[1:], *trusted]):
        raise BrokerAdminError(
            f"--server-cert {server_cert} is not issued by the CA in --ca-cert (or by an "
            "intermediate in the server certificate file)"
        )
    if ca_cert is not None:
        write_atomic(ca_path, ca_cert.read_bytes())
    write_atomic(state / SERVER_KEY, server_key.read_bytes(), mode=0o600)
    write_atomic(state / SERVER_CERT, server_cert.read_bytes())
    log.info("installed the operator's server certificate %s", chain[0].subject.rfc4514_string())


def ensure_tls(state: Path, options: TlsOptions | None = None) -> TlsFiles:
    """Make (once) or check the broker's TLS files in ``state``; idempotent.

    * nothing given: a CA made here on first use, and a server certificate for 127.0.0.1,
      localhost and ``options.hosts`` (plus the names of the previous certificate), reissued
      when a name is missing, when it expires within 30 days, or when it is not the current CA's;
    * ``ca_cert`` + ``ca_key`` on first use: the same, with the operator's CA;
    * ``ca_cert`` + ``server_cert`` + ``server_key``: the operator's server certificate, used
      as it is (replaced when given again); ``hosts`` are then only checked.
    """
    options = options or TlsOptions()
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    if (options.server_cert is None) != (options.server_key is None):
        raise BrokerAdminError("--server-cert and --server-key go together")
    if options.server_cert is not None and options.server_key is not None:
        if options.ca_key is not None:
            raise BrokerAdminError("give --ca-key or --server-cert/--server-key, not both")
        _install_operator_server_cert(
            state, options.ca_cert, options.server_cert, options.server_key
        )
    wanted = {norm_host(h) for h in (*DEFAULT_HOSTS, *options.hosts)}  # bad names fail here
    if not (state / CA_KEY).exists() and (state / SERVER_CERT).exists():
        return _check_operator_server_cert(state, options.hosts)
    _ensure_ca(state, options.ca_cert, options.ca_key)
    _ensure_server_cert(state, wanted)
    return TlsFiles(state / CA_CERT, state / SERVER_CERT, state / SERVER_KEY, state / CA_KEY)


def _check_operator_server_cert(state: Path, hosts: Iterable[str]) -> TlsFiles:
    """The operator's server certificate: modelcast cannot reissue it, only say what is wrong."""
    cert = load_certs(state / SERVER_CERT)[0]
    missing = {norm_host(h) for h in hosts} - hosts_of(cert)
    if missing:
        log.warning(
            "the operator's server certificate does not name %s: clients connecting by "
            "that name will refuse it",
            ", ".join(sorted(missing)),
        )
    if cert.not_valid_after_utc - utc_now() < RENEW_BEFORE:
        log.warning("the server certificate expires on %s", cert.not_valid_after_utc)
    return TlsFiles(state / CA_CERT, state / SERVER_CERT, state / SERVER_KEY, None)


def _ensure_server_cert(state: Path, wanted: set[str]) -> None:
    """Issue the server certificate with the state's CA if there is none, or if the current one
    misses a ``wanted`` name, expires soon or is another CA's (it keeps the names it had)."""
    ca_key = load_key(state / CA_KEY)
    ca_cert = load_certs(state / CA_CERT)[0]
    cert_path, key_path = state / SERVER_CERT, state / SERVER_KEY
    reason = ""
    if not cert_path.exists() or not key_path.exists():
        reason = "none yet"
    else:
        current = load_certs(cert_path)[0]
        have = hosts_of(current)
        wanted = wanted | have
        if not wanted <= have:
            reason = f"adding {', '.join(sorted(wanted - have))}"
        elif current.not_valid_after_utc - utc_now() < RENEW_BEFORE:
            reason = f"expires on {current.not_valid_after_utc:%Y-%m-%d}"
        elif not issued_by(current, [ca_cert]):
            reason = "not issued by the current CA"
    if not reason:
        return
    key, cert = issue_server_cert(ca_key, ca_cert, wanted)
    write_atomic(key_path, key_pem(key), mode=0o600)
    write_atomic(cert_path, cert_pem(cert))
    log.info(
        "issued a server certificate for %s (%s); a running broker uses it once restarted",
        ", ".join(sorted(wanted)),
        reason,
    )


def answers_tls(host: str, port: int, ca_file: Path, *, timeout: float = 0.5) -> bool:
    """True if ``host:port`` completes a TLS handshake with a certificate ``ca_file`` vouches
    for, for that host name: a readiness check that no other process on the port can pass."""
    context = ssl.create_default_context(cafile=str(ca_file))
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=host),
        ):
            return True
    except (OSError, ssl.SSLError):
        return False
