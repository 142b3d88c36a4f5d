"""What operators type, read into values: releases (``NAME@VERSION``), ``--tag``, ``--http``,
rollout ``--stages``, and into protocol values: selectors (``--to``), variant rules (``--rule``)
and fleet settings (``KEY=VALUE``). The wire formats themselves live in ``protocol``; this is
command-line text, so a mistake is a ``CommandError`` naming the item (for selectors, rules and
settings a ``MalformedText``, shown ``malformed: ...`` as it always was; ``--stages``, read by
argparse, is a usage error instead)."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any

from protocol import ProtocolError, Selector, VariantRule, check_name
from protocol.fleet_config import check_setting

from ..errors import CommandError, MalformedText


def _name(value: str, what: str) -> str:
    try:
        return check_name(value, what)
    except ProtocolError as exc:
        raise MalformedText(exc.detail) from None


def parse_selector(items: Iterable[str]) -> Selector:
    """``KEY=VALUE`` items are tags, other items device ids, ``all`` nothing. Items may also be
    comma-separated (``--to site=plant-3,class=gateway``)."""
    tags: dict[str, str] = {}
    devices: list[str] = []
    for item in items:
        for part in (p.strip() for p in item.split(",")):
            if not part or part == "all":
                continue
            if "=" in part:
                key, _, value = part.partition("=")
                if not key or not value:
                    raise MalformedText(f"selector item {part!r}: expected KEY=VALUE")
                tags[key] = value
            else:
                devices.append(_name(part, "device id"))
    return Selector(tags or None, tuple(sorted(set(devices))))


def parse_variant_rule(text: str) -> VariantRule:
    """``VARIANT:COND[,COND...]`` where COND is a tag ``KEY=VALUE``, ``ram_mb<N``,
    ``profile.arch=ARCH`` or ``profile.provider=PROVIDER`` (``int8:class=camera``,
    ``int8:ram_mb<2048``, ``fp16:profile.provider=CUDAExecutionProvider``)."""
    variant, sep, conds = text.partition(":")
    if not sep:
        raise MalformedText(f"variant rule {text!r}: expected VARIANT:CONDITION[,...]")
    tags: dict[str, str] = {}
    ram: int | None = None
    facts: dict[str, str | None] = {"arch": None, "provider": None}
    for cond in (c.strip() for c in conds.split(",")):
        key, eq, value = cond.partition("=")
        if cond.startswith("ram_mb<") and cond[7:].isdigit():
            ram = int(cond[7:])
        elif key in ("profile.arch", "profile.provider") and value:
            facts[key.removeprefix("profile.")] = value
        elif eq and key and value:
            tags[key] = value
        else:
            raise MalformedText(
                f"variant rule {text!r}: condition {cond!r} is not KEY=VALUE, ram_mb<N, "
                "profile.arch=ARCH or profile.provider=PROVIDER"
            )
    return VariantRule(
        _name(variant, "variant"),
        tags or None,
        ram,
        arch=facts["arch"],
        provider=facts["provider"],
    )


def parse_setting(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` of ``modelcast config set``, typed and validated as the index carries it."""
    key, sep, raw = text.partition("=")
    if not sep:
        raise MalformedText(f"setting {text!r} is not KEY=VALUE")
    value: Any = raw
    if key == "telemetry_interval":
        try:
            value = float(raw)
        except ValueError:
            raise MalformedText(f"telemetry_interval {raw!r} is not a number") from None
    try:
        return key, check_setting(key, value)
    except ProtocolError as exc:
        raise MalformedText(exc.detail) from None


def parse_release(text: str) -> tuple[str, int]:
    """``NAME@VERSION`` (``minilm@2``)."""
    name, sep, version = text.partition("@")
    if not sep or not version.isdigit():
        raise CommandError(f"expected NAME@VERSION, got {text!r}")
    return name, int(version)


def parse_http(text: str) -> tuple[str, int] | None:
    """``--http HOST:PORT``, or ``off`` (None)."""
    if text.lower() == "off":
        return None
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise CommandError(f"--http expects HOST:PORT or 'off', got {text!r}")
    return host, int(port)


def parse_tags(items: Iterable[str]) -> dict[str, str]:
    """``--tag KEY=VALUE`` items (a later one of the same key wins)."""
    tags: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CommandError(f"--tag expects KEY=VALUE, got {item!r}")
        tags[key] = value
    return tags


def parse_stages(text: str) -> tuple[float, ...]:
    """``--stages 5,25,100``: argparse's ``type=``, so a mistake is a usage error."""
    try:
        return tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected percentages like 5,25,100, got {text!r}"
        ) from None
