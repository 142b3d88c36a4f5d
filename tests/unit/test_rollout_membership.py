"""Rollout membership and the index's rollout fields: pure, on bytes."""

from __future__ import annotations

import pytest

from protocol import (
    PPM_ALL,
    DeploymentIndex,
    MalformedMessage,
    OversizedMessage,
    RolloutBlock,
    Selector,
    Target,
    membership_point,
    stage_ppm,
)

DEVICES = [f"d{i}" for i in range(2000)]
M1 = bytes(range(32))
M2 = bytes(range(1, 33))


def test_membership_points_are_deterministic_spread_and_rollout_specific() -> None:
    points = [membership_point("m@2", d) for d in DEVICES]
    assert points == [membership_point("m@2", d) for d in DEVICES]
    assert all(0 <= p < PPM_ALL for p in points)
    share = sum(1 for p in points if p < stage_ppm(25)) / len(points)
    assert 0.2 < share < 0.3
    other = [membership_point("m@3", d) for d in DEVICES]
    assert points != other


def test_raising_ppm_keeps_earlier_members() -> None:
    block5 = RolloutBlock("m@2", stage_ppm(5))
    block25 = RolloutBlock("m@2", stage_ppm(25))
    early = {d for d in DEVICES if block5.includes(d, {})}
    later = {d for d in DEVICES if block25.includes(d, {})}
    assert early and early < later
    assert stage_ppm(100) == PPM_ALL and stage_ppm(5) == 50_000


def test_selector_matches_tags_and_device_lists() -> None:
    sel = Selector({"site": "plant-3", "class": "gateway"})
    assert sel.matches("x", {"site": "plant-3", "class": "gateway", "extra": "1"})
    assert not sel.matches("x", {"site": "plant-3"})
    listed = Selector(devices=("d1", "d2"))
    assert listed.matches("d1", {}) and not listed.matches("d3", {})
    assert Selector().is_all
    with pytest.raises(MalformedMessage):
        Selector.from_dict({"devices": ["bad/name"]}, "test")


def test_for_device_picks_the_target_or_the_base() -> None:
    base = Target(1, M1)
    entry = Target(2, M2, rollout=RolloutBlock("m@2", PPM_ALL, Selector({"site": "a"}), base))
    assert entry.for_device("d1", {"site": "a"}) == Target(2, M2)
    assert entry.for_device("d1", {"site": "b"}) == base
    assert Target(2, M2, rollout=RolloutBlock("m@2", 0)).for_device("d1", {}) is None
    assert Target(1, M1, rollback=True).for_device("d1", {}) == Target(1, M1, rollback=True)


def test_index_rollout_fields_round_trip_and_plain_targets_are_unchanged() -> None:
    plain = DeploymentIndex("f", 1, 0.0, 10.0, {"m": Target(1, M1)})
    assert b"rollout" not in plain.encode() and b"rollback" not in plain.encode()
    entry = Target(
        2,
        M2,
        rollout=RolloutBlock(
            "m@2", 123_456, Selector({"site": "a"}, ("d1", "d2")), Target(1, M1, rollback=True)
        ),
    )
    index = DeploymentIndex("f", 2, 0.0, 10.0, {"m": entry, "n": Target(3, M1, rollback=True)})
    assert DeploymentIndex.decode(index.encode()) == index


@pytest.mark.parametrize(
    "rollout",
    [
        {"id": "x", "ppm": PPM_ALL + 1},
        {"id": "", "ppm": 5},
        {"id": "x", "ppm": 5, "select": {"devices": ["a/b"]}},
        {"id": "x", "ppm": 5, "select": {"tags": {"k": 1}}},
        {"id": "x", "ppm": 5, "select": {"devices": [f"d{i}" for i in range(2000)]}},
        {
            "id": "x",
            "ppm": 5,
            "base": {"version": 1, "manifest": M1, "rollout": {"id": "y", "ppm": 1}},
        },
        {"id": "x", "ppm": True},
    ],
)
def test_malformed_rollout_blocks_are_refused(rollout: dict[str, object]) -> None:
    from protocol.codec import pack

    body = pack(
        {
            "v": 1,
            "fleet": "f",
            "seq": 1,
            "issued": 0.0,
            "expires": 10.0,
            "targets": {"m": {"version": 2, "manifest": M2, "rollout": rollout}},
        }
    )
    with pytest.raises((MalformedMessage, OversizedMessage)):
        DeploymentIndex.decode(body)


def test_golden_membership_points_and_rollout_block_bytes() -> None:
    """Pinned values: another implementation of the device side must compute these."""
    from protocol.codec import pack

    assert membership_point("m@2", "d1") == 275795
    assert membership_point("m@2", "edge-17") == 150839
    entry = Target(
        2,
        bytes(range(32)),
        rollout=RolloutBlock(
            "m@2", 250_000, Selector({"site": "a"}), Target(1, bytes(32), rollback=True)
        ),
    )
    assert pack(entry.to_dict()).hex() == (
        "83a776657273696f6e02a86d616e6966657374c420000102030405060708090a0b0c0d0e0f1011121314"
        "15161718191a1b1c1d1e1fa7726f6c6c6f757484a26964a36d4032a370706dce0003d090a673656c6563"
        "7481a47461677381a473697465a161a46261736583a776657273696f6e01a86d616e6966657374c42000"
        "00000000000000000000000000000000000000000000000000000000000000a8726f6c6c6261636bc3"
    )
