"""What operators type: releases, tags, endpoints, stages, selectors, variant rules and settings,
read into values."""

from __future__ import annotations

import argparse

import pytest

from modelcast.cli.parsing import (
    parse_http,
    parse_release,
    parse_selector,
    parse_setting,
    parse_stages,
    parse_tags,
    parse_variant_rule,
)
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


def test_releases_are_name_at_version() -> None:
    assert parse_release("minilm@2") == ("minilm", 2)
    for bad in ("minilm", "minilm@", "minilm@x", "minilm@-1", "minilm@1.5", "a@b@1"):
        with pytest.raises(CommandError, match="expected NAME@VERSION"):
            parse_release(bad)


def test_http_endpoints_and_tags() -> None:
    assert parse_http("off") is None and parse_http("OFF") is None
    assert parse_http("127.0.0.1:8470") == ("127.0.0.1", 8470)
    assert parse_http("[::1]:0") == ("[::1]", 0)
    for bad in ("8470", ":8470", "host:", "host:x"):
        with pytest.raises(CommandError, match="--http expects HOST:PORT"):
            parse_http(bad)
    assert parse_tags(["class=big", "site=", "class=small"]) == {"class": "small", "site": ""}
    for bad_tag in ("class", "=big"):
        with pytest.raises(CommandError, match="--tag expects KEY=VALUE"):
            parse_tags([bad_tag])


def test_stages_are_percentages_or_a_usage_error() -> None:
    assert parse_stages("5,25,100") == (5.0, 25.0, 100.0)
    assert parse_stages("10, 50,") == (10.0, 50.0)
    with pytest.raises(argparse.ArgumentTypeError, match="expected percentages"):
        parse_stages("5,x")


def test_text_errors_read_as_they_always_did() -> None:
    with pytest.raises(CommandError) as caught:
        parse_setting("bogus")
    assert str(caught.value) == "malformed: setting 'bogus' is not KEY=VALUE"
