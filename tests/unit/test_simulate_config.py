"""A simulation's settings: what it refuses before it starts, how it splits the fleet over its
processes, and what it says when the broker refuses devices."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelcast.simulate.config import REFUSED_AFTER, SimConfig
from modelcast.simulate.errors import SimulationError
from modelcast.simulate.fdlimit import OVERHEAD, check_per_process
from modelcast.simulate.report import FleetSnapshot, WorkerReport
from modelcast.simulate.runner import refusal_message
from modelcast.simulate.spec import Active, DeviceProfile
from modelcast.simulate.worker import Worker
from tests.support.download_release import ROOT


@pytest.fixture
def trust(tmp_path: Path) -> Path:
    path = tmp_path / "root.pub"
    path.write_bytes(ROOT.verify_key.to_pem())
    return path


def config(trust: Path, **kw: object) -> SimConfig:
    return SimConfig("mqtt://127.0.0.1:1883", trust_path=trust, **kw)  # type: ignore[arg-type]


def test_no_devices_and_a_missing_or_wrong_trust_file_are_refused(
    tmp_path: Path, trust: Path
) -> None:
    with pytest.raises(SimulationError, match="at least 1"):
        config(trust, devices=0)
    with pytest.raises(SimulationError, match="cannot read the trust file"):
        config(tmp_path / "missing.pub", devices=3)
    (tmp_path / "bad.pub").write_text("not a key")
    with pytest.raises(SimulationError, match="not a root public key"):
        config(tmp_path / "bad.pub", devices=3)
    with pytest.raises(SimulationError, match="device id"):
        config(trust, devices=3, prefix="no/slashes-")


def test_the_fleet_is_dealt_to_the_processes_in_consecutive_runs(trust: Path) -> None:
    c = config(trust, devices=10, processes=3)
    plans = c.plans()
    assert [(p.first, p.count) for p in plans] == [(0, 4), (4, 4), (8, 2)]
    assert [s.device for s in plans[2].specs()] == ["sim-8", "sim-9"]
    assert sum(p.connect_rate for p in plans) == pytest.approx(c.connect_rate)
    assert len(config(trust, devices=2, processes=8).plans()) == 2


def test_profiles_are_dealt_to_the_devices_in_turn(trust: Path) -> None:
    small, big = DeviceProfile(tags={"class": "small"}), DeviceProfile(tags={"class": "big"})
    c = config(trust, devices=4, profiles=(small, big))
    assert [c.spec(i).tags["class"] for i in range(4)] == ["small", "big", "small", "big"]


def test_a_split_beyond_the_descriptor_limit_is_refused_with_what_fits() -> None:
    check_per_process(1000, 2, disk=False, limit=500 + OVERHEAD)
    with pytest.raises(SimulationError, match=r"--processes 4 or more") as info:
        check_per_process(1000, 2, disk=True, limit=500 + OVERHEAD)
    assert "RLIMIT_NOFILE" in str(info.value)


def test_a_refusing_broker_is_named_with_the_limit_it_hit() -> None:
    report = WorkerReport(
        0,
        1,
        10,
        ever_online=5,
        refused={"closed-before-connack": 25},
        refused_devices=5,
    )
    snap = FleetSnapshot(10, 3.0, (report,))
    text = refusal_message(snap, 5, "mqtt://h:1")
    assert text.startswith("5 of 10 devices could not connect to mqtt://h:1")
    assert "max_connections" in text and "ulimit -n" in text
    refused = WorkerReport(0, 1, 10, refused={"refused": 50}, refused_devices=10)
    assert "is the broker running" in refusal_message(FleetSnapshot(10, 3.0, (refused,)), 10, "u")


def test_the_timeline_spans_the_first_and_last_device_of_every_worker() -> None:
    def worker(i: int, began: tuple[float, float], verified: tuple[float, float]) -> WorkerReport:
        spans = {"began": began, "verified": verified}
        return WorkerReport(worker=i, pid=i, devices=10, timeline={"m@1": spans})

    snap = FleetSnapshot.of(
        20,
        0.0,
        [worker(0, (100.5, 101.0), (103.0, 104.0)), worker(1, (100.2, 100.9), (103.5, 105.0))],
    )
    assert snap.timeline("m@1", since=100.0) == {"began": (0.2, 1.0), "verified": (3.0, 5.0)}
    assert snap.timeline("m@2", since=100.0) == {}


def test_a_worker_reports_the_sums_over_its_devices(trust: Path) -> None:
    worker = Worker(config(trust, devices=5, processes=2).plans()[1])  # sim-3 and sim-4
    link, device = worker.devices[0]
    link.failures["refused"] = REFUSED_AFTER  # never connected: the broker refuses it
    device.verified_at["m@2"] = 100.0
    device.downloader.began_at["m@2"] = 90.0
    device.memory.active["m"] = Active(2, "ab", None, None)
    device.reporter.rejections["bad-signature"] = 2
    worker.devices[1][1].reporter.rejections["bad-signature"] = 1
    report = worker.report()
    assert (report.worker, report.devices, report.online, report.ever_online) == (1, 2, 0, 0)
    assert report.active == {"m@2": 1} and report.verified == {"m@2": 1}
    assert report.states == {"idle": 2}
    assert report.timeline == {"m@2": {"began": (90.0, 90.0), "verified": (100.0, 100.0)}}
    assert report.failures == {"bad-signature": 3}
    assert report.refused_devices == 1 and report.refused == {"refused": REFUSED_AFTER}
    assert report.connect_failures == {"refused": REFUSED_AFTER}
