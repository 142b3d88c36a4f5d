"""Which online devices will ask for a release (the start hold waits for those only): the pure
rule over the index's targets and each device's profile, the bookkeeping as statuses, states
and indexes arrive, and the chunk server holding for them and no one else."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import protocol
from coordinator.chunk_serving import ChunkServer
from coordinator.devices import DeviceTracker
from coordinator.progress import Progress
from coordinator.registry import Registry
from coordinator.release_askers import DeviceTraits, ReleaseAskers, wanted_releases
from coordinator.release_cache import ReleaseCache
from protocol import RolloutBlock, Selector, Target, VariantRule
from tests.unit.coordinator_fakes import FLEET, FakeLink, add_release, make_keys

FP32, INT8, OLD = b"a" * 32, b"b" * 32, b"c" * 32
#: m@2 in two variants: int8 for cameras, fp32 for the others
VARIANTS = Target(
    2,
    FP32,
    variant="fp32",
    variants={"int8": INT8},
    rules=(VariantRule("int8", {"class": "camera"}),),
)
CAMERA = {"tags": {"class": "camera"}, "ram_mb": 4096, "arch": "x86_64"}
GATEWAY = {"tags": {"class": "gateway"}, "ram_mb": 8192}


def wants(
    device: str, profile: dict[str, object], entries: dict[str, Target], **active: int
) -> set[bytes]:
    return set(wanted_releases(device, DeviceTraits.of(profile, active), entries))


def test_each_device_wants_its_own_variant() -> None:
    assert wants("cam", CAMERA, {"m": VARIANTS}) == {INT8[:16]}
    assert wants("gw", GATEWAY, {"m": VARIANTS}) == {FP32[:16]}


def test_a_device_running_the_version_or_a_newer_one_wants_nothing() -> None:
    assert wants("gw", GATEWAY, {"m": VARIANTS}, m=2) == set()
    assert wants("gw", GATEWAY, {"m": VARIANTS}, m=3) == set()
    assert wants("gw", GATEWAY, {"m": VARIANTS}, m=1) == {FP32[:16]}
    # a rollback below the active version is a switch to the kept file, not a download
    assert wants("gw", GATEWAY, {"m": Target(1, OLD, rollback=True)}, m=2) == set()


def test_outside_a_rollout_stage_a_device_wants_the_base() -> None:
    only_cameras = Target(
        3,
        OLD,
        rollout=RolloutBlock("m@3", protocol.PPM_ALL, Selector({"class": "camera"}), VARIANTS),
    )
    assert wants("cam", CAMERA, {"m": only_cameras}) == {OLD[:16]}
    assert wants("gw", GATEWAY, {"m": only_cameras}) == {FP32[:16]}  # the base, its variant
    assert wants("gw", GATEWAY, {"m": only_cameras}, m=2) == set()
    nobody = Target(3, OLD, rollout=RolloutBlock("m@3", 0))  # no base: nothing for the others
    assert wants("gw", GATEWAY, {"m": nobody}) == set()


def test_a_pinned_device_wants_only_its_pinned_version() -> None:
    pinned = {**GATEWAY, "config": {"pins": {"m": 1}}}
    assert wants("gw", pinned, {"m": VARIANTS}) == set()
    assert wants("gw", {**GATEWAY, "config": {"pins": {"m": 2}}}, {"m": VARIANTS}) == {FP32[:16]}


def test_a_malformed_profile_reads_as_absent() -> None:
    traits = DeviceTraits.of({"tags": "x", "ram_mb": True, "providers": "cpu", "config": 3}, {})
    assert traits == DeviceTraits()


def test_askers_follow_statuses_states_and_the_index() -> None:
    askers = ReleaseAskers()
    askers.on_status("cam", online=True, profile=CAMERA, active={})
    askers.on_status("gw", online=True, profile=GATEWAY, active={"m": 1})
    assert askers.of(FP32) == frozenset()  # no index yet
    askers.on_index({"m": VARIANTS})
    assert askers.of(FP32) == {"gw"} and askers.of(INT8) == {"cam"}
    askers.on_status("gw2", online=True, profile=GATEWAY, active={})
    assert askers.of(FP32) == {"gw", "gw2"}
    askers.on_active("gw", {"m": 2})  # done: it will not ask again
    assert askers.of(FP32) == {"gw2"}
    askers.on_status("gw2", online=False, profile={}, active={})  # the will
    assert askers.of(FP32) == frozenset() and askers.online == 2
    askers.on_index({})  # undeployed
    assert askers.of(INT8) == frozenset()


def test_the_tracker_feeds_the_askers(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "c.db")
    askers = ReleaseAskers()
    askers.on_index({"m": VARIANTS})
    tracker = DeviceTracker(registry, FLEET, askers=askers)
    try:
        tracker.on_status(
            protocol.DeviceStatus("cam", online=True, profile=CAMERA),
            retained=False,
            received_at=time.time(),
        )
        assert askers.of(INT8) == {"cam"}
        state = protocol.DeviceState(
            "cam", protocol.UpdateState.ACTIVE, time.time(), active={"m": 2}
        )
        tracker.on_state(state, retained=False, received_at=time.time())
        assert askers.of(INT8) == frozenset()
    finally:
        registry.close()


def test_the_sender_does_not_hold_for_devices_on_another_variant(tmp_path: Path) -> None:
    """A camera's fresh request is not held for the gateways (another variant), only for
    another camera that has not asked yet."""
    registry = Registry(tmp_path / "c.db")
    record = add_release(registry, make_keys(tmp_path), tmp_path, version=2)
    askers = ReleaseAskers()
    entry = Target(
        2,
        FP32,
        variant="fp32",
        variants={"int8": record.release_id},
        rules=(VariantRule("int8", {"class": "camera"}),),
    )
    askers.on_index({"m": entry})
    for device, profile in (("cam1", CAMERA), ("gw1", GATEWAY), ("gw2", GATEWAY)):
        askers.on_status(device, online=True, profile=profile, active={})
    server = ChunkServer(
        protocol.Topics(FLEET),
        ReleaseCache(registry, FLEET),
        askers.of,
        Progress(),
        threading.Event(),
        max_pending=4,
        fresh_hold=0.5,
    )
    try:
        ask = protocol.ChunkRequest("cam1", "m", 2, record.short_id, ((0, 2),), fresh=True)
        server.on_request(ask)
        started = time.monotonic()
        assert [i for _, i, _ in server.next_batch(FakeLink())] == [0, 1]  # not held
        assert time.monotonic() - started < 0.4
        askers.on_status("cam2", online=True, profile=CAMERA, active={})
        server.on_request(ask)
        started = time.monotonic()
        assert server.next_batch(FakeLink()) == []  # held: cam2 may be about to ask
        assert time.monotonic() - started >= 0.4
        server.on_request(
            protocol.ChunkRequest("cam2", "m", 2, record.short_id, ((0, 2),), fresh=True)
        )
        assert [i for _, i, _ in server.next_batch(FakeLink())] == [0, 1]  # the wave is in
    finally:
        server.close()
        registry.close()
