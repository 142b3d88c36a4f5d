"""A listener whose address is taken says which address, why, and the flags that choose
another (issue 13, item 4): the edge's local endpoint (a second edge on one host) and
``modelcast broker``."""

from __future__ import annotations

import errno
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker_admin.mosquitto import find_mosquitto
from runtime.errors import ListenError
from runtime.listen import check_free, listen_error
from tests.support.fleet import REPO, make_keys


@pytest.fixture
def taken() -> Iterator[int]:
    """A loopback port something listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelcast.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_second_edge_on_the_port_names_it_and_the_way_out(tmp_path: Path, taken: int) -> None:
    keys = make_keys(tmp_path / "keys")
    result = _cli(
        "edge",
        "--broker",
        "mqtt://127.0.0.1:1",
        "--id",
        "e2",
        "--data",
        str(tmp_path / "e2"),
        "--trust",
        str(keys.root_pub),
        "--http",
        f"127.0.0.1:{taken}",
    )
    assert result.returncode == 1, result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("modelcast edge: error: edge e2: the local inference endpoint")
    assert f"127.0.0.1:{taken}" in error and "already in use" in error
    for way_out in ("--http HOST:PORT", "--http 127.0.0.1:0", "--http off"):
        assert way_out in error
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(find_mosquitto() is None, reason="needs the mosquitto binary")
def test_a_broker_on_a_taken_port_names_it_and_the_way_out(tmp_path: Path, taken: int) -> None:
    result = _cli("broker", "--port", str(taken), "--state", str(tmp_path / "state"))
    assert result.returncode == 1, result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith(
        f"modelcast broker: error: the broker cannot listen on 127.0.0.1:{taken}"
    )
    assert "already in use" in error and "--port PORT" in error
    assert not (tmp_path / "state" / "broker.pid").exists()


def test_other_causes_are_named_too() -> None:
    denied = listen_error("x", "0.0.0.0", 80, OSError(errno.EACCES, "Permission denied"), "Fix.")
    assert "0.0.0.0:80: permission denied (ports below 1024 need root). Fix." in str(denied)
    absent = listen_error("x", "10.9.9.9", 1, OSError(errno.EADDRNOTAVAIL, "nope"), "Fix.")
    assert "no interface of this host has that address" in str(absent)
    assert absent.address == ("10.9.9.9", 1) and absent.errno == errno.EADDRNOTAVAIL
    with pytest.raises(ListenError, match="does not resolve"):
        check_free("x", "no-such-host.invalid", 1883, "Fix.")


def test_a_free_port_passes_the_check(taken: int) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free = sock.getsockname()[1]
    check_free("x", "127.0.0.1", free, "Fix.")
    with pytest.raises(ListenError):
        check_free("x", "127.0.0.1", taken, "Fix.")
