"""Broker credentials, the ACL, the TLS files and the production profile, without a broker
(the real broker is attacked in tests/integration/test_secure_broker.py)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from broker_admin.certs import issue_server_cert, make_ca
from broker_admin.credstore import CredStore, render_acl
from broker_admin.mosquitto import find_mosquitto_passwd
from broker_admin.profiles import render_production
from broker_admin.tlsca import TlsOptions, ensure_tls
from modelcast.cli import EXIT_FAILED, EXIT_OK, main
from runtime.credentials import ClientCreds
from runtime.urls import format_broker_url, is_tls_url, parse_broker_url
from tests.support.secure_broker import REQUIRE_ENV


def _has_passwd_tool() -> bool:
    try:
        find_mosquitto_passwd()
        return True
    except FileNotFoundError:
        return False


# under `make test` (MODELCAST_REQUIRE_MOSQUITTO=1) a missing tool fails these tests instead
needs_passwd = pytest.mark.skipif(
    not _has_passwd_tool() and os.environ.get(REQUIRE_ENV) != "1", reason="needs mosquitto_passwd"
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- URLs -----------------------------------------------------------------------------------
def test_mqtts_urls_parse_with_their_own_default_port() -> None:
    assert parse_broker_url("mqtts://broker.example") == ("broker.example", 8883)
    assert parse_broker_url("mqtts://10.0.0.5:18883") == ("10.0.0.5", 18883)
    assert parse_broker_url("mqtt://h") == ("h", 1883)
    assert is_tls_url("mqtts://h:1") and not is_tls_url("mqtt://h:1")
    assert format_broker_url("::1", 8883, tls=True) == "mqtts://[::1]:8883"
    with pytest.raises(ValueError, match="use mqtts://"):
        parse_broker_url("ssl://h:8883")
    with pytest.raises(ValueError, match="--creds"):
        parse_broker_url("mqtts://user:pw@h:8883")


# --- the ACL --------------------------------------------------------------------------------
def test_acl_sections_per_role() -> None:
    acl = render_acl(
        {
            "dev1": {"role": "device", "fleet": "plant"},
            "coord": {"role": "coordinator", "fleet": "plant"},
            "dash": {"role": "integrator", "fleet": "plant"},
        }
    )
    sections = {block.splitlines()[1]: block.splitlines()[2:] for block in acl.split("\n\n")[1:]}
    assert sections == {
        "user coord": ["topic readwrite modelcast/plant/#"],
        "user dev1": [
            "topic readwrite modelcast/plant/devices/dev1/#",
            "topic read modelcast/plant/releases/#",
            "topic read modelcast/plant/chunks/#",
            "topic read modelcast/plant/resends/dev1",
            "topic read modelcast/plant/commands",
            "topic read modelcast/plant/commands/dev1",
        ],
        "user dash": [
            "topic read modelcast/plant/devices/+/status",
            "topic read modelcast/plant/devices/+/telemetry/#",
        ],
    }
    # nothing is granted outside a user section (it would apply to anonymous clients)
    preamble = acl.split("\n\n")[0]
    assert all(line.startswith("#") for line in preamble.splitlines())


@pytest.mark.parametrize(
    "users",
    [
        {"a/b": {"role": "device", "fleet": "f"}},  # a name that would widen the topic
        {"a": {"role": "device", "fleet": "f/#"}},
        {"a": {"role": "root", "fleet": "f"}},
    ],
)
def test_acl_refuses_names_that_would_change_its_meaning(users: dict[str, dict[str, str]]) -> None:
    with pytest.raises(ValueError):
        render_acl(users)


# --- the client side ------------------------------------------------------------------------
def test_client_creds_resolve_a_relative_ca_and_refuse_plain_mqtt(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_text("x")
    path = tmp_path / "d.json"
    path.write_text(
        json.dumps(
            {"username": "d", "password": "p", "ca_file": "ca.crt", "role": "device", "fleet": "f"}
        )
    )
    creds = ClientCreds.load(path)
    assert creds.client_id == "d" and creds.ca_file == tmp_path / "ca.crt" and creds.tls
    assert creds.session_auth("mqtts://h:1") == {
        "username": "d",
        "password": "p",
        "tls_ca": tmp_path / "ca.crt",
    }
    with pytest.raises(ValueError, match="mqtts://"):
        creds.session_auth("mqtt://h:1883")  # the password would travel in clear
    with pytest.raises(ValueError, match="for a device, not a coordinator"):
        creds.check_role("coordinator")
    with pytest.raises(ValueError, match="fleet 'f', not 'g'"):
        creds.check_role("device", "g")
    path.write_text(json.dumps({"username": "d", "password": "p", "ca_file": "missing.crt"}))
    with pytest.raises(ValueError, match="does not exist"):
        ClientCreds.load(path)
    path.write_text(json.dumps({"username": "d"}))
    with pytest.raises(ValueError, match="password"):
        ClientCreds.load(path)


# --- the operator side ----------------------------------------------------------------------
@needs_passwd
def test_add_rotate_revoke_keep_files_private_and_consistent(tmp_path: Path) -> None:
    state = tmp_path / "state"
    store = CredStore(state)
    creds = store.add("device", "dev1", fleet="plant")
    store.add("coordinator", "coord", fleet="plant")
    assert creds["username"] == creds["client_id"] == "dev1" and creds["broker_tls"] is True
    assert json.loads(store.creds_path("dev1").read_text()) == creds
    for private in ("ca.key", "server.key", "passwd", "acl", "creds/dev1.json"):
        assert _mode(state / private) == 0o600, private
    passwd = store.passwd_path.read_text()
    assert passwd.startswith("dev1:$7$") or "\ndev1:$7$" in passwd  # PBKDF2 hash, not the secret
    assert creds["password"] not in passwd
    assert creds["password"] not in store.registry_path.read_text()
    assert "user dev1" in store.acl_path.read_text()
    with pytest.raises(ValueError, match="already exists"):
        store.add("integrator", "dev1")

    rotated = store.rotate("dev1")
    assert rotated["password"] != creds["password"]
    assert store.users()["dev1"]["role"] == "device"

    assert store.revoke("dev1") is False  # no broker running
    assert "dev1:" not in store.passwd_path.read_text()
    assert "user dev1" not in store.acl_path.read_text()
    assert not store.creds_path("dev1").exists()
    assert set(store.users()) == {"coord"}
    with pytest.raises(ValueError, match="no credentials"):
        store.revoke("dev1")


@needs_passwd
def test_a_stale_pid_file_never_signals_another_process(tmp_path: Path) -> None:
    store = CredStore(tmp_path / "state")
    store.add("device", "dev1")
    bystander = subprocess.Popen(["cat"], stdin=subprocess.PIPE)  # SIGHUP would kill it
    try:
        store.pid_path.write_text(f"{bystander.pid}\n")
        assert store.broker_pid() is None
        assert store.reload_broker() is False
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


# --- TLS files ------------------------------------------------------------------------------
def _sans(path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(v) for v in san.get_values_for_type(x509.IPAddress)} | set(
        san.get_values_for_type(x509.DNSName)
    )


def test_tls_files_are_made_once_and_grow_names(tmp_path: Path) -> None:
    files = ensure_tls(tmp_path)
    first = files.server_cert.read_bytes()
    assert _sans(files.server_cert) == {"127.0.0.1", "localhost"}
    assert ensure_tls(tmp_path).server_cert.read_bytes() == first  # idempotent
    ensure_tls(tmp_path, TlsOptions(hosts=("broker.example", "10.1.2.3")))
    assert _sans(files.server_cert) == {"127.0.0.1", "localhost", "broker.example", "10.1.2.3"}
    ensure_tls(tmp_path)  # later calls keep the names
    assert "broker.example" in _sans(files.server_cert)
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    x509.load_pem_x509_certificate(files.server_cert.read_bytes()).verify_directly_issued_by(ca)


def test_operator_server_certificate_is_used_as_given(tmp_path: Path) -> None:
    ca_key, ca = make_ca("operator CA")
    key, cert = issue_server_cert(ca_key, ca, ["mqtt.corp.example"])
    pem = serialization.Encoding.PEM
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(pem))
    (tmp_path / "srv.pem").write_bytes(cert.public_bytes(pem))
    (tmp_path / "srv.key").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    state = tmp_path / "state"
    files = ensure_tls(
        state,
        TlsOptions(
            ca_cert=tmp_path / "ca.pem",
            server_cert=tmp_path / "srv.pem",
            server_key=tmp_path / "srv.key",
        ),
    )
    assert files.ca_key is None and not (state / "ca.key").exists()
    assert files.server_cert.read_bytes() == (tmp_path / "srv.pem").read_bytes()
    assert _mode(files.server_key) == 0o600
    ensure_tls(state, TlsOptions(hosts=("other.example",)))  # cannot reissue: only warns
    assert files.server_cert.read_bytes() == (tmp_path / "srv.pem").read_bytes()

    other_key, other_ca = make_ca("someone else")
    (tmp_path / "other.pem").write_bytes(other_ca.public_bytes(pem))
    with pytest.raises(ValueError, match="not issued by"):
        ensure_tls(
            tmp_path / "state2",
            TlsOptions(
                ca_cert=tmp_path / "other.pem",
                server_cert=tmp_path / "srv.pem",
                server_key=tmp_path / "srv.key",
            ),
        )
    (tmp_path / "wrong.key").write_bytes(
        other_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(ValueError, match="is not the key"):
        ensure_tls(
            tmp_path / "state3",
            TlsOptions(
                ca_cert=tmp_path / "ca.pem",
                server_cert=tmp_path / "srv.pem",
                server_key=tmp_path / "wrong.key",
            ),
        )


def test_production_profile_is_filled_in(tmp_path: Path) -> None:
    text = render_production(tmp_path, user="mqtt")
    assert "$" not in text.replace("$SYS", "")
    lines = {line for line in text.splitlines() if line and not line.startswith("#")}
    for expected in (
        "allow_anonymous false",
        "use_username_as_clientid true",
        "tls_version tlsv1.2",
        "persistence true",
        "max_packet_size 1100000",
        f"password_file {tmp_path.resolve()}/passwd",
        f"acl_file {tmp_path.resolve()}/acl",
        f"certfile {tmp_path.resolve()}/server.crt",
        "user mqtt",
    ):
        assert expected in lines, expected
    assert not any(line.startswith(("listener", "port ")) for line in lines)


# --- the CLI --------------------------------------------------------------------------------
@needs_passwd
def test_cli_creds_add_and_client_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    assert main(["creds", "add", "device", "dev1", "--state", str(state), "--fleet", "f"]) == 0
    printed = json.loads(capsys.readouterr().out)
    creds_file = state / "creds" / "dev1.json"
    assert printed == json.loads(creds_file.read_text())
    assert main(["creds", "add", "coordinator", "c", "--state", str(state)]) == EXIT_OK
    capsys.readouterr()

    edge = ["edge", "--data", str(tmp_path / "d"), "--trust", str(tmp_path / "root.pub")]
    assert main([*edge, "--broker", "mqtt://127.0.0.1:1", "--creds", str(creds_file)]) == 1
    assert "mqtts://" in capsys.readouterr().err
    wrong_id = [*edge, "--broker", "mqtts://127.0.0.1:1", "--creds", str(creds_file)]
    assert main([*wrong_id, "--id", "dev2"]) == EXIT_FAILED
    assert "not the credentials' username" in capsys.readouterr().err
    coordinator = ["coordinator", "--db", str(tmp_path / "c.db"), "--keys", str(tmp_path)]
    assert main([*coordinator, "--broker", "mqtts://h", "--creds", str(creds_file)]) == 1
    assert "for a device, not a coordinator" in capsys.readouterr().err

    assert main(["creds", "list", "--state", str(state), "--json"]) == EXIT_OK
    assert set(json.loads(capsys.readouterr().out)) == {"dev1", "c"}
    assert main(["creds", "revoke", "dev1", "--state", str(state)]) == EXIT_OK
    assert not creds_file.exists()
