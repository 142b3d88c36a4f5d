"""``modelcast dashboard`` as an operator starts it: a busy port and an exposed address are
clear errors, a token file must be private and long, a locked database and a lost broker show
as banners over the last data (the page never goes blank), and the broker watch counts the
chunk bytes a real coordinator publishes."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from coordinator.registry import Registry
from modelcast.dashboard import Dashboard, DashboardConfig, load_token
from modelcast.errors import CommandError
from protocol import DeviceState, UpdateState
from testkit.local_broker import LocalBroker
from testkit.synthetic_models import make_model
from tests.support.brokers import Broker
from tests.support.browser import wait_for
from tests.support.env import Env
from tests.support.fleet import REPO, release_and_deploy


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "coord.db"
    registry = Registry(path)
    registry.record_state("default", DeviceState("d1", UpdateState.ACTIVE, ts=1.0), seen=1.0)
    registry.close()
    return path


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelcast.cli", "dashboard", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _page(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as reply:
        return str(reply.read().decode())


def test_a_busy_port_names_it_and_the_way_out(db: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _cli("--db", str(db), "--port", str(port), "--broker", "mqtt://127.0.0.1:1")
    assert result.returncode == 1, result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith(
        f"modelcast dashboard: error: the dashboard cannot listen on 127.0.0.1:{port}"
    )
    assert "already in use" in error and "--port PORT" in error and "Traceback" not in result.stderr


def test_any_other_address_needs_a_token_file(db: Path, tmp_path: Path) -> None:
    result = _cli("--db", str(db), "--bind", "0.0.0.0", "--port", "0")
    assert result.returncode == 1
    assert "refusing to serve the dashboard on 0.0.0.0" in result.stderr
    assert "--token-file" in result.stderr
    token = tmp_path / "token"
    token.write_text("short\n")
    token.chmod(0o600)
    with pytest.raises(CommandError, match="at least 16 characters"):
        load_token(token)
    token.write_text("a" * 32 + "\n")
    token.chmod(0o644)
    with pytest.raises(CommandError, match="chmod 600"):
        load_token(token)
    token.chmod(0o600)
    assert load_token(token) == "a" * 32
    missing = _cli("--db", str(tmp_path / "none.db"))
    assert missing.returncode == 1 and "no coordinator database" in missing.stderr


@pytest.fixture
def broker_of_its_own(tmp_path: Path) -> Iterator[LocalBroker]:
    with LocalBroker(workdir=tmp_path / "broker") as local:
        yield local


def test_a_locked_database_and_a_lost_broker_are_banners_over_the_last_data(
    db: Path, broker_of_its_own: LocalBroker
) -> None:
    config = DashboardConfig(db=db, broker_url=broker_of_its_own.url, port=0, interval=0.2)
    with Dashboard(config) as dashboard:
        url = dashboard.url
        wait_for(lambda: dashboard.broker.state().connected, "the broker watch connected")
        dashboard.reader.wait_for_generation(0, 30.0)
        first = _page(url)
        assert "d1" in first and 'class="banner"' not in first
        lock = sqlite3.connect(db, timeout=30, isolation_level=None)
        lock.execute("PRAGMA locking_mode = EXCLUSIVE")
        lock.execute("BEGIN EXCLUSIVE")
        try:
            locked = wait_for(
                lambda: "has not answered" in (p := _page(url)) and p, "the locked banner", 30
            )
            assert "d1" in locked  # the last data stays
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        wait_for(lambda: "has not answered" not in _page(url), "the banner gone", 60)
        broker_of_its_own.kill()
        lost = wait_for(lambda: "cannot be reached" in (p := _page(url)) and p, "the broker banner")
        assert "d1" in lost and broker_of_its_own.url in lost
        scrape = _page(url + "metrics")
        assert "modelcast_dashboard_broker_up 0.0" in scrape
        assert "modelcast_dashboard_database_up 1.0" in scrape


def test_chunk_bytes_published_are_counted_per_release(env: Env, broker: Broker) -> None:
    coordinator = env.start_coordinator()
    config = DashboardConfig(
        db=env.tmp / "coord.db", broker_url=broker.url, fleet=env.fleet, port=0, interval=0.2
    )
    with Dashboard(config) as dashboard:
        wait_for(lambda: dashboard.broker.state().connected, "the broker watch connected")
        model = make_model(env.tmp / "m1.onnx", 300_000, seed=1)
        release_and_deploy(env.registry, env.keys, model, "m", 1, env.fleet, chunk_size=64 << 10)
        env.edge("e0")
        env.watch.wait_active("e0", "m", 1)

        def published() -> int:
            with urllib.request.urlopen(dashboard.url + "api/releases", timeout=10) as reply:
                [release] = json.loads(reply.read())
            return int(release["published"])

        size = env.registry.release(env.fleet, "m", 1).size  # type: ignore[union-attr]
        # the frames the coordinator published (chunks go out zstd-compressed when that pays,
        # so this may be less than the file's size)
        sent = coordinator.bytes_published
        assert sent > size // 4
        total = wait_for(lambda: published() >= sent and published(), "the chunk bytes")
        assert total < 3 * size  # frames: the file once (and perhaps a resend), not per device
        counted = f'{{model="m",variant="",version="1"}} {float(total)}'
        running = 'modelcast_release_devices{model="m",variant="",version="1"} 1.0'
        scrape = wait_for(
            lambda: running in (text := _page(dashboard.url + "metrics")) and text,
            "e0 counted as running m@1",
        )
        assert f"modelcast_chunk_bytes_published_total{counted}" in scrape
