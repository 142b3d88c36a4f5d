"""The demo's watch on its fleet and its child processes, without a broker: messages are fed
to the watch as its MQTT network thread would."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import pytest

from modelcast.demo_fleet import DemoProcesses, DemoWatch
from modelcast.progress import ProgressBoard
from protocol import DeviceState, DeviceStatus, UpdateState
from runtime import __version__


def _watch() -> DemoWatch:
    # the session is made but never started: nothing connects
    return DemoWatch("mqtt://127.0.0.1:1", "f", ProgressBoard(io.StringIO(), live=False), "m")


def _active(device: str, version: int) -> DeviceState:
    return DeviceState(device, UpdateState.ACTIVE, ts=1.0, active={"m": version})


def test_status_gives_port_and_variant_and_state_gives_progress() -> None:
    watch = _watch()
    topics = watch.topics
    watch.on_message(topics.state("e1"), _active("e1", 1).encode(), True)
    assert not watch.all_active(["e1"], 1)  # no endpoint yet
    profile = {"http_port": 8123, "variants": {"m": "int8", "other": "fp32"}}
    watch.on_message(topics.status("e1"), DeviceStatus("e1", True, profile=profile).encode(), True)
    assert watch.ports == {"e1": 8123} and watch.variants == {"e1": "int8"}
    assert watch.all_active(["e1"], 1)
    assert not watch.all_active(["e1"], 2) and not watch.all_active(["e1", "e2"], 1)
    watch.on_message(topics.status("e2"), b"\x00not msgpack", True)  # ignored
    watch.on_message(topics.state("e2"), b"", True)
    assert "e2" not in watch.ports and "e2" not in watch.board.states()


def test_wait_until_returns_on_a_message_or_fails_at_the_deadline() -> None:
    watch = _watch()
    topics = watch.topics
    watch.on_message(
        topics.status("e1"), DeviceStatus("e1", True, profile={"http_port": 1}).encode(), True
    )
    feeder = threading.Thread(
        target=watch.on_message, args=(topics.state("e1"), _active("e1", 2).encode(), True)
    )
    feeder.start()
    watch.wait_until(lambda: watch.all_active(["e1"], 2), time.monotonic() + 30, lambda: None)
    feeder.join()
    with pytest.raises(TimeoutError, match="did not finish in time"):
        watch.wait_until(lambda: False, time.monotonic() - 1, lambda: None)

    def child_died() -> None:
        raise RuntimeError("edge-1 exited with 1")

    with pytest.raises(RuntimeError, match="edge-1 exited"):
        watch.wait_until(lambda: False, time.monotonic() + 30, child_died)


def test_processes_run_the_cli_and_report_one_that_exited(tmp_path: Path) -> None:
    procs = DemoProcesses(tmp_path)
    procs.start("v", "--version")
    try:
        procs.procs["v"].wait(timeout=60)
        assert procs.check_alive() == f"v exited with 0; see {tmp_path / 'v'}.log"
        assert (tmp_path / "v.log").read_text().strip() == f"modelcast {__version__}"
    finally:
        procs.stop_all()
