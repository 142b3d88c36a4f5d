"""The ``modelcast`` parser, assembled from the command groups, and ``main``."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from protocol import ProtocolError
from runtime import __version__

from . import broker, demo, fleet, keys, models, releases, rollouts, services, telemetry
from .common import CommandParser, EnvFlag
from .exits import EXIT_FAILED, EXIT_INTERRUPTED

#: the command groups, in the order ``modelcast --help`` lists their commands
COMMAND_GROUPS = (keys, services, releases, rollouts, fleet, telemetry, broker, models, demo)

LOG_LEVEL = EnvFlag(
    "--log-level",
    "log verbosity",
    "MODELCAST_LOG_LEVEL",
    fallback="INFO",
    choices=("DEBUG", "INFO", "WARNING", "ERROR"),
)


def build_parser() -> CommandParser:
    parser = CommandParser(
        prog="modelcast",
        description="Ship signed ONNX models to edge fleets over MQTT, resumably.",
        epilog="exit codes: 0 ok, 1 failed, 2 bad usage, 130 interrupted",
    )
    parser.add_argument("--version", action="version", version=f"modelcast {__version__}")
    LOG_LEVEL.add_to(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except (ValueError, ProtocolError, OSError) as exc:
        print(f"modelcast {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
