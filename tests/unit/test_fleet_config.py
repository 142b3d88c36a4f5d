"""Fleet configuration in the index, and the edge policy it becomes (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_node.policy import Policy, effective_policy, load_pushed, save_pushed
from protocol import (
    ConfigEntry,
    DeploymentIndex,
    MaintenanceWindow,
    MalformedMessage,
    Selector,
    parse_pins,
    settings_for,
)
from protocol.codec import pack
from protocol.fleet_config import check_setting

H = 3600.0


def test_maintenance_windows_contain_their_minutes_and_may_wrap_midnight() -> None:
    night = MaintenanceWindow.parse("23:30-01:00")
    assert night.contains(23.5 * H) and night.contains(0.5 * H) and not night.contains(1 * H)
    day = MaintenanceWindow.parse("02:00-04:00")
    assert day.contains(86400 * 5 + 3 * H) and not day.contains(4 * H)
    assert str(day) == "02:00-04:00"
    for bad in ("2-4", "24:00-01:00", "02:00-02:00", "02:00"):
        with pytest.raises(MalformedMessage):
            MaintenanceWindow.parse(bad)


def test_settings_are_checked_and_unknown_keys_are_refused() -> None:
    assert check_setting("telemetry_interval", 5) == 5.0
    assert check_setting("pin", "m@3,n@1") == "m@3,n@1"
    assert parse_pins("m@3,n@1") == {"m": 3, "n": 1} and parse_pins("") == {}
    assert check_setting("maintenance_window", "") == ""
    for key, bad in (
        ("colour", "red"),
        ("telemetry_interval", 0),
        ("telemetry_interval", "5"),
        ("pin", "m"),
        ("maintenance_window", "x"),
    ):
        with pytest.raises(MalformedMessage):
            check_setting(key, bad)


def test_entries_apply_in_order_to_the_devices_they_select() -> None:
    entries = (
        ConfigEntry(Selector(), {"telemetry_interval": 60.0, "pin": ""}),
        ConfigEntry(Selector({"class": "camera"}), {"telemetry_interval": 5.0}),
    )
    assert settings_for(entries, "d", {"class": "camera"}) == {
        "telemetry_interval": 5.0,
        "pin": "",
    }
    assert settings_for(entries, "d", {})["telemetry_interval"] == 60.0
    index = DeploymentIndex("f", 1, 0.0, 9.0, {}, entries)
    assert DeploymentIndex.decode(index.encode()) == index
    assert b"config" not in DeploymentIndex("f", 1, 0.0, 9.0).encode()


def test_an_index_with_a_bad_setting_is_refused() -> None:
    body = pack(
        {
            "v": 1,
            "fleet": "f",
            "seq": 1,
            "issued": 0.0,
            "expires": 9.0,
            "targets": {},
            "config": [{"settings": {"shell": "rm -rf /"}}],
        }
    )
    with pytest.raises(MalformedMessage):
        DeploymentIndex.decode(body)


def test_the_pushed_config_overrides_local_policy_and_persists(tmp_path: Path) -> None:
    local = Policy(60.0, MaintenanceWindow.parse("02:00-04:00"), {"m": 3})
    policy = effective_policy(local, {"telemetry_interval": 5.0, "maintenance_window": ""})
    assert policy == Policy(5.0, None, {"m": 3})
    assert effective_policy(local, {"pin": ""}).pins == {}
    assert not local.may_activate(5 * H) and policy.may_activate(5 * H)
    save_pushed(tmp_path, {"pin": "m@4", "telemetry_interval": 2.0})
    (tmp_path / "junk").write_text("")
    assert load_pushed(tmp_path) == {"pin": "m@4", "telemetry_interval": 2.0}
    (tmp_path / "config.json").write_text('{"pin": "nonsense", "telemetry_interval": 2}')
    assert load_pushed(tmp_path) == {"telemetry_interval": 2.0}
