"""What operators type, read into protocol values: selectors (``--to``), variant rules
(``--rule``) and fleet settings (``KEY=VALUE``). The wire formats themselves live in
``protocol``; this is command-line text, so a mistake is a ``CommandError`` naming the item."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from protocol import ProtocolError, Selector, VariantRule, check_name
from protocol.fleet_config import check_setting

from .errors import CommandError


def _name(value: str, what: str) -> str:
    try:
        return check_name(value, what)
    except ProtocolError as exc:
        raise CommandError(exc.detail) from None


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
                    raise CommandError(f"selector item {part!r}: expected KEY=VALUE")
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
        raise CommandError(f"variant rule {text!r}: expected VARIANT:CONDITION[,...]")
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
            raise CommandError(
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
        raise CommandError(f"setting {text!r} is not KEY=VALUE")
    value: Any = raw
    if key == "telemetry_interval":
        try:
            value = float(raw)
        except ValueError:
            raise CommandError(f"telemetry_interval {raw!r} is not a number") from None
    try:
        return key, check_setting(key, value)
    except ProtocolError as exc:
        raise CommandError(exc.detail) from None
