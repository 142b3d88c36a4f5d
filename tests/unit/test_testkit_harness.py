"""The process harness of testkit, without a broker: the command lines it runs (the benchmarks'
figures depend on them staying exactly what they were), /proc readings, cut-point draws."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest

from testkit.cli_process import REPO, CliProcess
from testkit.edge_process import EdgeFlags, EdgeProcess
from testkit.errors import ProcessExited, TestkitError
from testkit.procfs import proc_cpu_s, proc_status_kb
from testkit.proxy_link import draw

IDENTITY = ["--broker", "mqtt://127.0.0.1:1883", "--id", "d1", "--data", "/data/d1"]
TRUST = ["--trust", "/keys/root.pub", "--fleet", "f1"]


def edge(tmp_path: Path, **kwargs: object) -> EdgeProcess:
    return EdgeProcess(
        "d1",
        broker_url="mqtt://127.0.0.1:1883",
        data=Path("/data/d1"),
        trust=Path("/keys/root.pub"),
        fleet="f1",
        log_dir=tmp_path,
        **kwargs,  # type: ignore[arg-type]
    )


def test_a_test_edge_logs_everything_serves_on_a_free_port_and_reports_every_second(
    tmp_path: Path,
) -> None:
    e = edge(tmp_path, extra=("--window", "8"))
    assert e.args == [
        sys.executable,
        *("-m", "modelcast.cli", "--log-level", "DEBUG", "edge", *IDENTITY, *TRUST),
        *("--http", "127.0.0.1:0", "--telemetry-interval", "1", "--window", "8"),
    ]
    assert e.log_path == tmp_path / "d1.log"
    assert e.model_path("m", 3) == Path("/data/d1/models/m/3/model.onnx")


def test_a_bench_edge_runs_with_the_flags_the_figures_were_measured_with(tmp_path: Path) -> None:
    flags = EdgeFlags(log_level="INFO", http="off", telemetry_interval=None)
    e = edge(tmp_path, extra=("--keepalive", "2"), flags=flags)
    assert e.args == [
        sys.executable,
        *("-m", "modelcast.cli", "--log-level", "INFO", "edge", *IDENTITY, *TRUST),
        *("--http", "off", "--keepalive", "2"),
    ]


def test_a_fractional_telemetry_interval_is_passed_as_given(tmp_path: Path) -> None:
    e = edge(tmp_path, flags=EdgeFlags(telemetry_interval=0.25))
    assert e.args[-2:] == ["--telemetry-interval", "0.25"]


def test_a_process_that_was_never_started(tmp_path: Path) -> None:
    p = CliProcess(["status"], log_path=tmp_path / "x.log", name="status")
    assert not p.alive
    assert p.log() == ""
    assert p.stop() is None
    with pytest.raises(TestkitError, match="status was never started"):
        p.check_alive()


def test_children_run_from_the_checkout() -> None:
    assert (REPO / "modelcast" / "cli" / "__main__.py").is_file()


def test_proc_readings_of_this_process() -> None:
    rss = proc_status_kb(os.getpid(), "VmRSS")
    assert 1024 < rss <= proc_status_kb(os.getpid(), "VmHWM")
    before = proc_cpu_s(os.getpid())
    sum(i * i for i in range(300_000))  # some CPU time
    assert proc_cpu_s(os.getpid()) > before


def test_a_missing_proc_field_says_the_process_is_gone() -> None:
    with pytest.raises(ProcessExited, match="NoSuchField"):
        proc_status_kb(os.getpid(), "NoSuchField")


def test_cut_points() -> None:
    assert draw(None, random.Random(0).uniform) is None
    assert draw(lambda: 7, random.Random(0).randint) == 7
    first = [draw((0.5, 3.0), rng.uniform) for rng in [random.Random(3)] for _ in range(5)]
    again = [draw((0.5, 3.0), rng.uniform) for rng in [random.Random(3)] for _ in range(5)]
    assert first == again  # a seeded scenario repeats
    assert all(v is not None and 0.5 <= v <= 3.0 for v in first)
    assert len(set(first)) == 5
    assert all(10 <= (draw((10, 12), random.Random(s).randint) or 0) <= 12 for s in range(20))
