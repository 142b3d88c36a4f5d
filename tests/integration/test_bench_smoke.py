"""The benchmark harness works (not how fast anything is): ``python -m bench`` runs its smallest
case, a 4 MB delivery against plain paho on its own Mosquitto, and writes the JSON figure."""

from __future__ import annotations

import json
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
    assert doc["update_bytes_first"] >= 1.0  # the whole model: nothing to start from
    assert doc["update_bytes_same"] <= 0.02
    assert doc["update_bytes_head"] <= 0.05
    assert doc["update_bytes_full"] <= 0.65
    assert doc["update_apply_ratio"] > 0 and doc["update_apply_rss_growth_mb"] > 0
    kinds = [v["key"] for v in doc["details"]["updates"]["versions"]]
    assert kinds == [f"update_bytes_{k}" for k in ("first", "same", "head", "full")]
