"""The ``modelcast`` parser, assembled from the command groups, and ``main``: parse, run the
command, and end it through the exit-code table (``exits``)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from runtime import __version__
from runtime.display import PrintableFormatter

from . import (
    broker,
    dashboard,
    demo,
    drift,
    fleet,
    keys,
    models,
    releases,
    rollouts,
    services,
    simulate,
    telemetry,
)
from .common import CommandParser, EnvFlag
from .exits import exit_rule

#: the command groups, in the order ``modelcast --help`` lists their commands
COMMAND_GROUPS = (
    keys,
    services,
    releases,
    rollouts,
    fleet,
    drift,
    telemetry,
    dashboard,
    broker,
    models,
    demo,
    simulate,
)

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


LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit code. ``--help`` and ``--version`` end with ``SystemExit(0)``
    as argparse has them."""
    parser = build_parser()
    command = "?"
    try:
        args = parser.parse_args(argv)
        command = args.command
        _configure_logging(args.log_level)
        return int(args.func(args))
    except BaseException as exc:
        rule = exit_rule(exc)
        if rule is None:
            raise
        sys.stderr.write(rule.say(exc, command))
        return rule.code


def _configure_logging(level: str) -> None:
    """Log lines to stderr, their messages escaped: what they quote may come from devices."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(PrintableFormatter(LOG_FORMAT))
    logging.basicConfig(level=getattr(logging, level), handlers=[handler])
