"""The benchmark harness works (not how fast anything is): ``python -m bench`` runs its smallest
case, a 4 MB delivery against plain paho on its own Mosquitto, and writes the JSON figure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from broker_admin.mosquitto import find_mosquitto

REPO = Path(__file__).resolve().parents[2]


def run_bench(
    tmp_path: Path, figure: str, size_mb: str, *, timeout: float, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """``python -m bench --quick --only FIGURE --size-mb SIZE_MB``: the process (exit 0
    checked) and the JSON it wrote."""
    out = tmp_path / "bench.json"
    args = ["--quick", "--only", figure, "--size-mb", size_mb, "--json", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc, json.loads(out.read_text())


@pytest.mark.timeout(120)
def test_quick_delivery_writes_a_positive_ratio(tmp_path: Path) -> None:
    if find_mosquitto() is None:
        pytest.skip("the harness starts its own mosquitto: needs the binary")
    proc, doc = run_bench(tmp_path, "delivery", "4", timeout=110)
    assert doc["errors"] == {}
    assert doc["figures"] == ["delivery"]
    assert doc["delivery_ratio"] > 0
    detail = doc["details"]["delivery"]
    assert detail["size_bytes"] >= 4 << 20
    assert detail["chunks_published"] >= detail["size_bytes"] // detail["chunk_size"]
    assert "delivery_ratio" in proc.stdout  # the console table


@pytest.mark.timeout(180)
def test_quick_fleet_writes_every_figure_of_a_small_fleet(tmp_path: Path) -> None:
    """The fleet figure's harness at 20 devices (the figure itself runs 1000: bench only)."""
    if find_mosquitto() is None:
        pytest.skip("the harness starts its own mosquitto: needs the binary")
    env = {**os.environ, "MODELCAST_BENCH_FLEET_DEVICES": "20"}
    _, doc = run_bench(tmp_path, "fleet", "1", timeout=170, env=env)
    assert doc["errors"] == {}
    assert doc["fleet_devices"] == 20
    assert doc["fleet_delivery_ratio"] > 0
    assert doc["fleet_publish_ratio"] >= 1.0
    assert 0 <= doc["fleet_telemetry_loss"] <= 1
    assert doc["fleet_status_ms"] > 0
    assert 0 < doc["fleet_dashboard_ms"] < 60_000  # the fleet page was served, with its timing
    assert doc["fleet_broker_rss_mb"] > 0
    delivery = doc["details"]["fleet"]["delivery"]
    for r in delivery["rounds"]:
        assert r["devices_received_bytes"] >= 20 * delivery["size_bytes"]
        assert set(r["timeline_s"]) == {"began", "first_chunk", "verified"}
    assert delivery["stage"]["selected"] == delivery["stage"]["hash_expected"]
    assert "fleet_idle_10k_status_ms" not in doc  # full run only


@pytest.mark.timeout(300)
def test_updates_figure_measures_each_kind_of_new_version(tmp_path: Path) -> None:
    """The update figures on the real MiniLM: bytes, not speed (the byte counts are fixed by
    the seeds; only the apply ratio and the RSS depend on the machine)."""
    from modelcast.textmodels.sources import minilm_available

    if find_mosquitto() is None or not minilm_available():
        pytest.skip("needs the mosquitto binary and the MiniLM weights (make setup)")
    out = tmp_path / "bench.json"
    args = [sys.executable, "-m", "bench", "--quick", "--only", "updates", "--json", str(out)]
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(out.read_text())
    assert doc["errors"] == {}
    # the whole model, nothing to start from: its chunks compressed on the wire
    assert 0.5 < doc["update_bytes_first"] <= 1.0
    assert doc["update_bytes_same"] <= 0.02
    assert doc["update_bytes_head"] <= 0.05
    assert doc["update_bytes_full"] <= 0.65
    assert doc["update_apply_ratio"] > 0 and doc["update_apply_rss_growth_mb"] > 0
    kinds = [v["key"] for v in doc["details"]["updates"]["versions"]]
    assert kinds == [f"update_bytes_{k}" for k in ("first", "same", "head", "full")]
