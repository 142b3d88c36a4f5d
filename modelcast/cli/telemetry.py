"""``modelcast telemetry tail``: the fleet's status and telemetry messages, decoded, as they
arrive (``coordinator.telemetry_tail`` subscribes and prints)."""

from __future__ import annotations

import argparse

from .common import Subcommands, add_flags, add_group, load_creds
from .exits import EXIT_OK


def add_commands(sub: Subcommands) -> None:
    tele_sub = add_group(sub, "telemetry", help="watch the fleet's status and telemetry")
    tail = tele_sub.add_parser(
        "tail",
        help="print status and telemetry messages as they arrive, decoded",
        description="Subscribes (own connection, clean session) to the fleet's "
        "devices/+/status and devices/+/telemetry/+ topics, or one device's, and prints one "
        "line per message: retained status first, then live messages. Undecodable messages "
        "are printed as ERROR lines (with --json: an 'error' object and the payload in hex). "
        "Runs until --count messages were printed, or Ctrl-C.",
    )
    add_flags(tail, "broker", "fleet", "creds")
    tail.add_argument("--device", default=None, metavar="ID", help="only this device")
    tail.add_argument(
        "--kind",
        choices=["metrics", "events", "drift", "status", "all"],
        default="all",
        help="which messages",
    )
    tail.add_argument("--count", type=int, default=None, metavar="N", help="exit after N messages")
    tail.add_argument("--json", action="store_true", help="one JSON object per line (bytes as hex)")
    tail.set_defaults(func=cmd_telemetry_tail)


def cmd_telemetry_tail(args: argparse.Namespace) -> int:
    from coordinator.telemetry_tail import run_tail

    run_tail(
        args.broker,
        args.fleet,
        device=args.device,
        kind=args.kind,
        count=args.count,
        as_json=args.json,
        creds=load_creds(args, "integrator"),
    )
    return EXIT_OK
