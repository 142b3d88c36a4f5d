"""What the fleet is told and how it is doing: ``modelcast config set|show`` (signed settings),
``modelcast variants set`` (which device takes which build), ``modelcast acceptance make``
(the vectors a release carries) and ``modelcast status``."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CommandError
from .common import (
    Subcommands,
    add_flags,
    add_group,
    add_json_flag,
    add_selector_flag,
    open_db,
    require_db,
)
from .exits import EXIT_OK
from .parsing import parse_release, parse_selector, parse_setting, parse_variant_rule

if TYPE_CHECKING:
    from coordinator.status_filter import DeviceFilter


def add_commands(sub: Subcommands) -> None:
    _add_config(sub)
    acc_sub = add_group(sub, "acceptance", help="acceptance vectors for a release")
    amake = acc_sub.add_parser(
        "make",
        help="run a model on seeded random inputs here and save inputs and outputs (.npz)",
    )
    amake.add_argument("model", type=Path, help="the ONNX file")
    amake.add_argument("--out", type=Path, required=True, help="the .npz to write")
    amake.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    amake.set_defaults(func=cmd_acceptance_make)
    _add_variants(sub)
    st = sub.add_parser("status", help="show the fleet")
    add_flags(st, "db", "fleet")
    add_json_flag(st)
    st.add_argument(
        "--window",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="health over the telemetry of the last SECONDS (device clock); 0: all retained",
    )
    _add_status_filters(st)
    st.set_defaults(func=cmd_status)


def _add_status_filters(st: argparse.ArgumentParser) -> None:
    """Which devices to list; the summary line counts the whole fleet whatever they say."""
    from protocol import UpdateState

    st.add_argument(
        "--state",
        action="append",
        default=[],
        choices=[*(s.value for s in UpdateState), "unknown"],  # status_filter.UNKNOWN_STATE
        help="only devices in this state (repeat for several; unknown: none reported yet)",
    )
    st.add_argument(
        "--model",
        metavar="NAME[@VERSION]",
        help="only devices running that model (version), or whose state is about it "
        "(downloading it, failed on it)",
    )
    st.add_argument(
        "--device-prefix", default="", metavar="PREFIX", help="only device ids starting so"
    )
    st.add_argument(
        "--limit", type=int, default=None, metavar="N", help="list at most N devices (by id)"
    )


def _add_config(sub: Subcommands) -> None:
    cfg_sub = add_group(
        sub,
        "config",
        help="push signed settings to selected devices",
        description=(
            "Settings travel in the signed deployment index (retained: a device offline now "
            "gets them when it reconnects); each device applies the entries that select it, "
            "in order, persists them and reports them in its profile ('modelcast status "
            "--json'). Keys: telemetry_interval=SECONDS, maintenance_window=HH:MM-HH:MM (UTC; "
            "empty clears), pin=NAME@VERSION[,...] (empty unpins)."
        ),
    )
    cset = cfg_sub.add_parser("set", help="set KEY=VALUE settings")
    cset.add_argument("settings", nargs="+", metavar="KEY=VALUE")
    add_selector_flag(cset)
    add_flags(cset, "db", "fleet")
    cset.set_defaults(func=cmd_config_set)
    cshow = cfg_sub.add_parser("show", help="the configuration entries")
    add_json_flag(cshow)
    add_flags(cshow, "db", "fleet")
    cshow.set_defaults(func=cmd_config_show)


def _add_variants(sub: Subcommands) -> None:
    va_sub = add_group(
        sub, "variants", help="which devices take which variant of a model's releases"
    )
    vset = va_sub.add_parser(
        "set",
        help="set the rules; the first that holds on a device picks its variant",
        description=(
            "Rules are VARIANT:CONDITION[,CONDITION...], a condition KEY=VALUE (a device tag), "
            "ram_mb<N (the RAM the device reports), profile.arch=ARCH (its CPU architecture) "
            "or profile.provider=PROVIDER (an onnxruntime execution provider it has). The "
            "first rule whose conditions all "
            "hold picks the variant; otherwise --default. The rules go into the signed index "
            "and each device applies them itself, downloading only its variant."
        ),
    )
    vset.add_argument("name", help="model name")
    vset.add_argument(
        "--rule", action="append", default=[], metavar="RULE", help="e.g. int8:class=camera"
    )
    vset.add_argument("--default", default=None, help="variant when no rule holds")
    add_flags(vset, "db", "fleet")
    vset.set_defaults(func=cmd_variants_set)


def cmd_config_set(args: argparse.Namespace) -> int:
    registry, _store = open_db(args.db)
    settings = dict(parse_setting(text) for text in args.settings)
    select = parse_selector(args.to)
    registry.set_config(args.fleet, select, settings)
    shown = " ".join(f"{k}={v}" for k, v in sorted(settings.items()))
    print(
        f"config {shown} for {select.describe()} in fleet {args.fleet}; a running coordinator "
        "signs it into the index within a second"
    )
    return EXIT_OK


def cmd_config_show(args: argparse.Namespace) -> int:
    from protocol import Selector

    registry, _store = open_db(args.db)
    entries = [e.to_dict() for e in registry.config_entries(args.fleet)]
    if args.json:
        print(json.dumps(entries, indent=2, sort_keys=True))
        return EXIT_OK
    if not entries:
        print(f"no configuration in fleet {args.fleet}")
    for e in entries:
        who = Selector.from_dict(e.get("select", {}), "config").describe()
        print(f"{who}: " + " ".join(f"{k}={v}" for k, v in e["settings"].items()))
    return EXIT_OK


def cmd_acceptance_make(args: argparse.Namespace) -> int:
    from ..acceptance import make_vectors

    make_vectors(args.model, args.out, seed=args.seed)
    print(f"wrote {args.out}: release with --acceptance {args.out} --tolerance T")
    return EXIT_OK


def cmd_variants_set(args: argparse.Namespace) -> int:
    from protocol import check_name

    registry, _store = open_db(args.db)
    rules = [parse_variant_rule(text) for text in args.rule]
    check_name(args.name, "model name")
    if args.default is not None:
        check_name(args.default, "variant")
    registry.set_variant_rules(args.fleet, args.name, rules, args.default)
    shown = ", ".join(r.describe() for r in rules) or "no rules"
    print(
        f"variants of {args.name} in fleet {args.fleet}: {shown}; default "
        f"{args.default or 'the first by name'} (published with the next index)"
    )
    return EXIT_OK


def _device_filter(args: argparse.Namespace) -> DeviceFilter:
    from coordinator.status_filter import DeviceFilter
    from protocol import check_name

    if args.limit is not None and args.limit < 0:
        raise CommandError("--limit must be >= 0")
    model, version = args.model, None
    if model is not None and "@" in model:
        model, version = parse_release(model)
    if model is not None:
        check_name(model, "model name")
    return DeviceFilter(
        states=frozenset(args.state),
        model=model,
        version=version,
        prefix=args.device_prefix,
        limit=args.limit,
    )


def cmd_status(args: argparse.Namespace) -> int:
    from coordinator.status import fleet_status, format_status

    require_db(args.db)
    if args.window < 0:
        raise CommandError("--window must be >= 0")
    since = time.time() - args.window if args.window > 0 else None
    status = fleet_status(args.db, args.fleet, since=since, devices=_device_filter(args))
    # compact: indented, the pure-Python encoder took 250 ms at 10,000 devices
    print(json.dumps(status, sort_keys=True) if args.json else format_status(status))
    return EXIT_OK
