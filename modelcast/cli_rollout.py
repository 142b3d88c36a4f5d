"""``modelcast rollout start|status|pause|resume|abort`` and ``modelcast rollback``.

These write the coordinator database; a running coordinator (``modelcast coordinator``) steps
the rollout and publishes the signed index within a poll interval.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .cli_parsing import parse_selector, parse_setting, parse_variant_rule

EXIT_OK = 0


def _stages(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected percentages like 5,25,100, got {text!r}"
        ) from None


def add_rollout_commands(sub: Any, common: Any) -> None:
    """Register the commands on ``sub``; ``common`` is the cli module (shared flag helpers)."""
    help_fmt = common._Help
    ro = sub.add_parser(
        "rollout",
        formatter_class=help_fmt,
        help="staged rollouts that halt and roll back by themselves",
        description=(
            "A staged rollout sends NAME@V to a growing share of the selected devices "
            "(--stages), waits --soak seconds after each stage and reads the gates from "
            "telemetry: activation failures, error rate and p95 latency of the new version "
            "against the one it replaces. A failed gate halts the rollout and every device of "
            "the stage goes back to the previous version. See docs/ROLLOUTS.md."
        ),
    )
    ro_sub = ro.add_subparsers(dest="rollout_command", required=True, metavar="ACTION")
    start = ro_sub.add_parser("start", formatter_class=help_fmt, help="start a staged rollout")
    start.add_argument("release", help="NAME@VERSION (released with 'modelcast release')")
    _add_to(start)
    start.add_argument(
        "--stages",
        type=_stages,
        default=(5.0, 25.0, 100.0),
        help="cumulative percentages of the selected devices; 100 is added if missing",
    )
    start.add_argument(
        "--soak",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="wait this long after a stage's devices settled before reading the gates",
    )
    start.add_argument(
        "--max-failure-rate",
        type=float,
        default=0.0,
        metavar="R",
        help="share of a stage's devices that may fail to activate (0: any failure halts)",
    )
    start.add_argument(
        "--max-error-rate",
        type=float,
        default=None,
        metavar="R",
        help="inference error rate the new version may have above the old one (0.01 = 1 "
        "point); unset: not gated",
    )
    start.add_argument(
        "--max-p95-ms",
        type=float,
        default=None,
        metavar="MS",
        help="p95 inference latency the new version may not exceed; unset: not gated",
    )
    start.add_argument(
        "--max-p95-ratio",
        type=float,
        default=None,
        metavar="X",
        help="p95 inference latency the new version may have, as a multiple of the old "
        "version's over the same soak (needs traffic on both); unset: not gated",
    )
    start.add_argument(
        "--rate",
        type=float,
        default=None,
        metavar="DEVICES_PER_MIN",
        help="admit at most this many devices per minute within a stage; unset: all at once",
    )
    start.add_argument(
        "--stage-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="gate a stage with what was reported if its online devices have not all "
        "activated (or failed) by then (default 1800)",
    )
    start.set_defaults(func=cmd_rollout_start)

    status = ro_sub.add_parser("status", formatter_class=help_fmt, help="show a rollout")
    status.add_argument("release", nargs="?", help="NAME@VERSION; omitted: every rollout")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_rollout_status)

    for action, text in (
        ("pause", "stop admitting devices and stop advancing stages"),
        ("resume", "continue a paused rollout"),
        ("abort", "stop it and send its devices back to the previous version"),
    ):
        p = ro_sub.add_parser(action, formatter_class=help_fmt, help=text)
        p.add_argument("release", help="NAME@VERSION")
        p.set_defaults(func=cmd_rollout_change, action=action)

    for p in (start, status, *[ro_sub.choices[a] for a in ("pause", "resume", "abort")]):
        common._add_db(p)
        common._add_fleet(p)

    rb = sub.add_parser(
        "rollback",
        formatter_class=help_fmt,
        help="send devices back to NAME@VERSION (instant where they kept it)",
        description=(
            "Publish NAME@VERSION as a signed rollback target: every selected device that "
            "runs a newer version and kept VERSION as its previous one switches back at once "
            "and will not take the version it left again (release a newer one). Devices that "
            "did not keep it report rollback-failed and stay. A rollout of NAME under way is "
            "aborted."
        ),
    )
    rb.add_argument("release", help="NAME@VERSION to go back to")
    _add_to(rb)
    common._add_db(rb)
    common._add_fleet(rb)
    rb.set_defaults(func=cmd_rollback)

    cfg = sub.add_parser(
        "config",
        formatter_class=help_fmt,
        help="push signed settings to selected devices",
        description=(
            "Settings travel in the signed deployment index (retained: a device offline now "
            "gets them when it reconnects); each device applies the entries that select it, "
            "in order, persists them and reports them in its profile ('modelcast status "
            "--json'). Keys: telemetry_interval=SECONDS, maintenance_window=HH:MM-HH:MM (UTC; "
            "empty clears), pin=NAME@VERSION[,...] (empty unpins)."
        ),
    )
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    cset = cfg_sub.add_parser("set", formatter_class=help_fmt, help="set KEY=VALUE settings")
    cset.add_argument("settings", nargs="+", metavar="KEY=VALUE")
    _add_to(cset)
    cset.set_defaults(func=cmd_config_set)
    cshow = cfg_sub.add_parser("show", formatter_class=help_fmt, help="the configuration entries")
    cshow.add_argument("--json", action="store_true", help="machine-readable output")
    cshow.set_defaults(func=cmd_config_show)
    for p in (cset, cshow):
        common._add_db(p)
        common._add_fleet(p)

    acc = sub.add_parser(
        "acceptance", formatter_class=help_fmt, help="acceptance vectors for a release"
    )
    acc_sub = acc.add_subparsers(dest="acceptance_command", required=True, metavar="ACTION")
    amake = acc_sub.add_parser(
        "make",
        formatter_class=help_fmt,
        help="run a model on seeded random inputs here and save inputs and outputs (.npz)",
    )
    amake.add_argument("model", type=Path, help="the ONNX file")
    amake.add_argument("--out", type=Path, required=True, help="the .npz to write")
    amake.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    amake.set_defaults(func=cmd_acceptance_make)

    va = sub.add_parser(
        "variants",
        formatter_class=help_fmt,
        help="which devices take which variant of a model's releases",
    )
    va_sub = va.add_subparsers(dest="variants_command", required=True, metavar="ACTION")
    vset = va_sub.add_parser(
        "set",
        formatter_class=help_fmt,
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
    common._add_db(vset)
    common._add_fleet(vset)
    vset.set_defaults(func=cmd_variants_set)


def _add_to(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--to",
        action="append",
        default=[],
        metavar="SELECTOR",
        help="which devices: KEY=VALUE tags (all must match) and/or device ids, "
        "comma-separated or repeated; default all devices (the set is dynamic: a device that "
        "joins later and matches is included)",
    )


def _release(text: str) -> tuple[str, int]:
    from .cli import _parse_release

    return _parse_release(text)


def _open(db: Path) -> tuple[Any, Any]:
    from coordinator.registry import Registry
    from coordinator.rollouts import RolloutStore

    if not Path(db).exists():
        raise FileNotFoundError(f"no coordinator database at {db}")
    return Registry(db), RolloutStore(db)


def cmd_rollout_start(args: argparse.Namespace) -> int:
    from coordinator.rollout_plan import Gates
    from coordinator.rollouts import start_rollout


    name, version = _release(args.release)
    registry, store = _open(args.db)
    rollout = start_rollout(
        registry,
        store,
        fleet=args.fleet,
        name=name,
        version=version,
        select=parse_selector(args.to),
        stages=args.stages,
        soak=args.soak,
        gates=Gates(
            args.max_failure_rate, args.max_error_rate, args.max_p95_ms, args.max_p95_ratio
        ),
        rate=args.rate,
        stage_timeout=args.stage_timeout,
    )
    base = f"{name}@{rollout.base}" if rollout.base is not None else "nothing"
    print(
        f"rollout of {rollout.release} to {rollout.select.describe()} in fleet {args.fleet} "
        f"started (stages {','.join(f'{s:g}%' for s in rollout.stages)}, soak {rollout.soak:g}s, "
        f"replacing {base}); a running coordinator steps it: "
        f"'modelcast rollout status {rollout.release}'"
    )
    return EXIT_OK


def cmd_rollout_status(args: argparse.Namespace) -> int:
    from coordinator.rollout_status import format_rollout, rollout_reports

    name, version = _release(args.release) if args.release else (None, None)
    reports = rollout_reports(args.db, args.fleet, name, version)
    if args.json:
        print(json.dumps(reports[0] if args.release else reports, indent=2, sort_keys=True))
    elif not reports:
        print(f"no rollouts in fleet {args.fleet}")
    else:
        print("\n\n".join(format_rollout(r) for r in reports))
    return EXIT_OK


def cmd_rollout_change(args: argparse.Namespace) -> int:
    from coordinator.rollouts import change_rollout

    name, version = _release(args.release)
    _registry, store = _open(args.db)
    rollout = change_rollout(
        store, fleet=args.fleet, name=name, version=version, action=args.action
    )
    print(f"rollout of {rollout.release} in fleet {args.fleet}: {rollout.state}")
    return EXIT_OK


def cmd_rollback(args: argparse.Namespace) -> int:
    from coordinator.rollouts import rollback


    name, version = _release(args.release)
    registry, store = _open(args.db)
    select = parse_selector(args.to)
    rollback(registry, store, fleet=args.fleet, name=name, version=version, select=select)
    print(
        f"rollback of {select.describe()} in fleet {args.fleet} to {name}@{version} "
        "published by the running coordinator within a second"
    )
    return EXIT_OK


def cmd_acceptance_make(args: argparse.Namespace) -> int:
    from .acceptance import make_vectors

    make_vectors(args.model, args.out, seed=args.seed)
    print(f"wrote {args.out}: release with --acceptance {args.out} --tolerance T")
    return EXIT_OK


def cmd_config_set(args: argparse.Namespace) -> int:
    registry, _store = _open(args.db)
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
    registry, _store = _open(args.db)
    entries = [e.to_dict() for e in registry.config_entries(args.fleet)]
    if args.json:
        print(json.dumps(entries, indent=2, sort_keys=True))
        return EXIT_OK
    if not entries:
        print(f"no configuration in fleet {args.fleet}")
    for e in entries:
        from protocol import Selector

        who = Selector.from_dict(e.get("select", {}), "config").describe()
        print(f"{who}: " + " ".join(f"{k}={v}" for k, v in e["settings"].items()))
    return EXIT_OK


def cmd_variants_set(args: argparse.Namespace) -> int:
    from protocol import check_name

    registry, _store = _open(args.db)
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


def refuse_deploy_during_rollout(db: Path, fleet: str, name: str) -> None:
    """``modelcast deploy`` would be overwritten by a rollout's next step: say so instead."""
    from coordinator.rollout_plan import ACTIVE_STATES
    from coordinator.rollouts import RolloutStore

    store = RolloutStore(db)
    try:
        for stored in store.all(fleet):
            r = stored.rollout
            if r.name == name and r.state in ACTIVE_STATES:
                raise ValueError(
                    f"rollout of {r.release} is {r.state}: abort it first "
                    f"('modelcast rollout abort {r.release}')"
                )
    finally:
        store.close()
