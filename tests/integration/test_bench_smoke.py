"""The benchmark harness works (not how fast anything is): ``python -m bench`` runs its smallest
case, a 4 MB delivery against plain paho on its own Mosquitto, and writes the JSON figure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from broker_admin.mosquitto import find_mosquitto

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(120)
def test_quick_delivery_writes_a_positive_ratio(tmp_path: Path) -> None:
    if find_mosquitto() is None:
        pytest.skip("the harness starts its own mosquitto: needs the binary")
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--only",
            "delivery",
            "--size-mb",
            "4",
            "--json",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(out.read_text())
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
    out = tmp_path / "bench.json"
    args = ["--quick", "--only", "fleet", "--size-mb", "1", "--json", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=REPO,
        env={**os.environ, "MODELCAST_BENCH_FLEET_DEVICES": "20"},
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(out.read_text())
    assert doc["errors"] == {}
    assert doc["fleet_devices"] == 20
    assert doc["fleet_delivery_ratio"] > 0
    assert doc["fleet_publish_ratio"] >= 1.0
    assert 0 <= doc["fleet_telemetry_loss"] <= 1
    assert doc["fleet_status_ms"] > 0
    assert doc["fleet_broker_rss_mb"] > 0
    delivery = doc["details"]["fleet"]["delivery"]
    for r in delivery["rounds"]:
        assert r["devices_received_bytes"] >= 20 * delivery["size_bytes"]
        assert set(r["timeline_s"]) == {"began", "first_chunk", "verified"}
    assert delivery["stage"]["selected"] == delivery["stage"]["hash_expected"]
    assert "fleet_idle_10k_status_ms" not in doc  # full run only
