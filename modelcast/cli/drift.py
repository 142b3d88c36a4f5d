"""``modelcast drift``: how far the inputs each device's model sees have moved from the
reference its release was built for (coordinator.drift scores the devices' drift samples)."""

from __future__ import annotations

import argparse
import json
import time

from ..errors import CommandError
from .common import Subcommands, add_flags, add_json_flag, require_db
from .exits import EXIT_OK


def add_commands(sub: Subcommands) -> None:
    drift = sub.add_parser(
        "drift",
        help="show input drift per device and model version, and over the fleet",
        description="Scores the drift samples devices sent (window statistics of their "
        "model's outputs: never texts or vectors) against the reference profile signed into "
        "each release ('modelcast release --reference'). A score of 1 or more means drifted: "
        "thresholds are calibrated on held-out reference data (docs/DRIFT.md). Exit 0 "
        "whatever the scores are.",
    )
    add_flags(drift, "db", "fleet")
    add_json_flag(drift)
    drift.add_argument("--device", default=None, metavar="ID", help="only this device")
    drift.add_argument(
        "--since",
        type=float,
        default=3600.0,
        metavar="S",
        help="the samples of the last S seconds (device clock); 0: all retained",
    )
    drift.set_defaults(func=cmd_drift)


def cmd_drift(args: argparse.Namespace) -> int:
    from coordinator.drift import drift_report, format_drift

    require_db(args.db)
    if args.since < 0:
        raise CommandError("--since must be >= 0")
    since = time.time() - args.since if args.since > 0 else 0.0
    report = drift_report(args.db, args.fleet, since=since, device=args.device)
    print(json.dumps(report, indent=2, sort_keys=True) if args.json else format_drift(report))
    return EXIT_OK
