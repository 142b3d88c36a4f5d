"""``modelcast rollout start|status|pause|resume|abort`` and ``modelcast rollback``.

These write the coordinator database; a running coordinator (``modelcast coordinator``) steps
the rollout and publishes the signed index within a poll interval.
"""

from __future__ import annotations

import argparse
import json

from .common import Subcommands, add_flags, add_group, add_json_flag, add_selector_flag, open_db
from .exits import EXIT_OK
from .parsing import parse_release, parse_selector, parse_stages

#: the actions that change a rollout's state, and their help
_CHANGES = (
    ("pause", "stop admitting devices and stop advancing stages"),
    ("resume", "continue a paused rollout"),
    ("abort", "stop it and send its devices back to the previous version"),
)


def add_commands(sub: Subcommands) -> None:
    actions = add_group(
        sub,
        "rollout",
        help="staged rollouts that halt and roll back by themselves",
        description=(
            "A staged rollout sends NAME@V to a growing share of the selected devices "
            "(--stages), waits --soak seconds after each stage and reads the gates from "
            "telemetry: activation failures, error rate and p95 latency of the new version "
            "against the one it replaces. A failed gate halts the rollout and every device of "
            "the stage goes back to the previous version. See docs/ROLLOUTS.md."
        ),
    )
    _add_start(actions)
    status = actions.add_parser("status", help="show a rollout")
    status.add_argument("release", nargs="?", help="NAME@VERSION; omitted: every rollout")
    add_json_flag(status)
    status.set_defaults(func=cmd_rollout_status)
    add_flags(status, "db", "fleet")
    for action, text in _CHANGES:
        change = actions.add_parser(action, help=text)
        change.add_argument("release", help="NAME@VERSION")
        change.set_defaults(func=cmd_rollout_change, action=action)
        add_flags(change, "db", "fleet")

    rb = sub.add_parser(
        "rollback",
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
    add_selector_flag(rb)
    add_flags(rb, "db", "fleet")
    rb.set_defaults(func=cmd_rollback)


def _add_start(actions: Subcommands) -> None:
    start = actions.add_parser("start", help="start a staged rollout")
    start.add_argument("release", help="NAME@VERSION (released with 'modelcast release')")
    add_selector_flag(start)
    start.add_argument(
        "--stages",
        type=parse_stages,
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
    _add_gates(start)
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
    add_flags(start, "db", "fleet")


def _add_gates(start: argparse.ArgumentParser) -> None:
    """The health gates read after each stage's soak."""
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
        "--max-drift",
        type=float,
        default=None,
        metavar="D",
        help="input drift score (modelcast drift) the new version's devices may have above "
        "the old version's over the same soak; no figures for the old version count as 1 "
        "(the drifted line); needs releases made with --reference; unset: not gated",
    )


def cmd_rollout_start(args: argparse.Namespace) -> int:
    from coordinator.rollout_plan import Gates
    from coordinator.rollouts import start_rollout

    name, version = parse_release(args.release)
    registry, store = open_db(args.db)
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
            args.max_failure_rate,
            args.max_error_rate,
            args.max_p95_ms,
            args.max_p95_ratio,
            args.max_drift,
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

    name, version = parse_release(args.release) if args.release else (None, None)
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

    name, version = parse_release(args.release)
    _registry, store = open_db(args.db)
    rollout = change_rollout(
        store, fleet=args.fleet, name=name, version=version, action=args.action
    )
    print(f"rollout of {rollout.release} in fleet {args.fleet}: {rollout.state}")
    return EXIT_OK


def cmd_rollback(args: argparse.Namespace) -> int:
    from coordinator.rollouts import rollback

    name, version = parse_release(args.release)
    registry, store = open_db(args.db)
    select = parse_selector(args.to)
    rollback(registry, store, fleet=args.fleet, name=name, version=version, select=select)
    print(
        f"rollback of {select.describe()} in fleet {args.fleet} to {name}@{version} "
        "published by the running coordinator within a second"
    )
    return EXIT_OK
