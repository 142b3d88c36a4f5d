"""What operators type: selectors, variant rules and settings, read into protocol values."""

from __future__ import annotations

import pytest

from modelcast.cli_parsing import parse_selector, parse_setting, parse_variant_rule
from modelcast.errors import CommandError
from protocol import Selector, VariantRule


def test_selector_items_are_tags_or_device_ids() -> None:
    assert parse_selector(["site=plant-3,class=gateway"]) == Selector(
        {"site": "plant-3", "class": "gateway"}
    )
    assert parse_selector(["d2,d1", "d1"]) == Selector(devices=("d1", "d2"))
    assert parse_selector(["all"]).is_all and parse_selector([]).is_all
    for bad in (["bad/name"], ["site="], ["=x"]):
        with pytest.raises(CommandError):
            parse_selector(bad)


def test_variant_rules_read_tags_ram_arch_and_providers() -> None:
    assert parse_variant_rule("int8:class=camera,ram_mb<512") == VariantRule(
        "int8", {"class": "camera"}, 512
    )
    assert parse_variant_rule("fp16:profile.provider=CUDAExecutionProvider") == VariantRule(
        "fp16", provider="CUDAExecutionProvider"
    )
    assert parse_variant_rule("int8:profile.arch=aarch64,class=camera") == VariantRule(
        "int8", {"class": "camera"}, arch="aarch64"
    )
    rule = parse_variant_rule("int8:class=camera,ram_mb<512,profile.arch=aarch64")
    assert parse_variant_rule(rule.describe()) == rule
    for bad in ("int8", "int8:", "int8:ram_mb<x", "bad/name:class=a", "int8:class="):
        with pytest.raises(CommandError):
            parse_variant_rule(bad)


def test_settings_are_typed_and_unknown_keys_are_refused() -> None:
    assert parse_setting("telemetry_interval=5") == ("telemetry_interval", 5.0)
    assert parse_setting("pin=m@3,n@1") == ("pin", "m@3,n@1")
    assert parse_setting("maintenance_window=") == ("maintenance_window", "")
    for bad in ("colour=red", "telemetry_interval=0", "telemetry_interval=x", "pin=m", "x"):
        with pytest.raises(CommandError):
            parse_setting(bad)
