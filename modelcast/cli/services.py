"""``modelcast coordinator`` and ``modelcast edge``: the two long-running services, each until
SIGTERM or Ctrl-C (exit 130)."""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Callable

from protocol.limits import DEFAULT_CHUNK_SIZE, DEFAULT_WINDOW, MIB
from runtime.broker_kinds import BROKER_KINDS, DEFAULT_BROKER_KIND

from ..errors import CommandError
from .common import EnvFlag, Subcommands, add_flags, load_creds, path_flag
from .exits import EXIT_INTERRUPTED, EXIT_OK
from .parsing import parse_http, parse_tags

# A string default goes through type=, so a bad value in the variable is a usage error.
BROKER_KIND = EnvFlag(
    "--broker-kind",
    "the broker's kind: on rabbitmq (no retained messages through wildcards) the coordinator "
    "also subscribes to each known device's status and state (docs/BROKERS.md)",
    "MODELCAST_BROKER_KIND",
    fallback=DEFAULT_BROKER_KIND,
    choices=BROKER_KINDS,
)
RETENTION_DAYS = EnvFlag(
    "--retention-days",
    "telemetry older than this is deleted (checked once a minute)",
    "MODELCAST_RETENTION_DAYS",
    type=float,
    fallback="30",
)
REQUEST_RATE = EnvFlag(
    "--request-rate",
    "chunk requests a device may send per second (token bucket); more are dropped, "
    "counted and logged",
    "MODELCAST_REQUEST_RATE",
    type=float,
    fallback="2000",
    metavar="PER_S",
)
REQUEST_BURST = EnvFlag(
    "--request-burst",
    "chunk requests a device may send at once before --request-rate applies",
    "MODELCAST_REQUEST_BURST",
    type=float,
    fallback="4000",
    metavar="N",
)
REPORT_RATE = EnvFlag(
    "--report-rate",
    "telemetry, state and status messages a device may send per second (token bucket); more "
    "are dropped before decoding, counted (modelcast status) and logged",
    "MODELCAST_REPORT_RATE",
    type=float,
    fallback="100",
    metavar="PER_S",
)
REPORT_BURST = EnvFlag(
    "--report-burst",
    "telemetry, state and status messages a device may send at once before --report-rate "
    "applies; keep it above twice the edges' --telemetry-queue (an outage's backlog)",
    "MODELCAST_REPORT_BURST",
    type=float,
    fallback="20000",
    metavar="N",
)
DEVICE_ID = EnvFlag(
    "--id",
    "device id, [A-Za-z0-9_-]{1,64}; required unless --creds gives it (its username)",
    "MODELCAST_DEVICE_ID",
)
DATA = path_flag("--data", "the device's data directory", "MODELCAST_DATA", required=True)
TRUST = path_flag("--trust", "root public key (KEYDIR/root.pub)", "MODELCAST_TRUST", required=True)
TELEMETRY_INTERVAL = EnvFlag(
    "--telemetry-interval",
    "seconds between metrics samples",
    "MODELCAST_TELEMETRY_INTERVAL",
    type=float,
    fallback="60",
    eager=True,
)
HTTP = EnvFlag(
    "--http",
    "local inference endpoint HOST:PORT (port 0: any free port), or 'off'",
    "MODELCAST_HTTP",
    fallback="127.0.0.1:8470",
)
DRIFT_EPSILON = EnvFlag(
    "--drift-epsilon",
    "add Laplace noise to the drift samples for epsilon-differential privacy per inference "
    "(docs/DRIFT.md; smaller is more private and noisier; needs larger windows); default: "
    "exact window statistics (never texts or vectors either way)",
    "MODELCAST_DRIFT_EPSILON",
    type=float,
    eager=True,
    metavar="EPSILON",
)
MAINTENANCE_WINDOW = EnvFlag(
    "--maintenance-window",
    "activate new versions only inside this daily UTC window (downloads go on; signed "
    "rollbacks are instant); a pushed fleet config overrides it",
    "MODELCAST_MAINTENANCE_WINDOW",
    metavar="HH:MM-HH:MM",
)


def add_commands(sub: Subcommands) -> None:
    coord = sub.add_parser(
        "coordinator", help="run the coordinator service (publishes releases, serves chunks)"
    )
    add_flags(coord, "broker", "db", "keys", "fleet", "creds")
    for flag in (
        BROKER_KIND,
        RETENTION_DAYS,
        REQUEST_RATE,
        REQUEST_BURST,
        REPORT_RATE,
        REPORT_BURST,
    ):
        flag.add_to(coord)
    coord.set_defaults(func=cmd_coordinator)

    edge = sub.add_parser("edge", help="run an edge agent (downloads, verifies, activates models)")
    add_flags(edge, "broker")
    for flag in (DEVICE_ID, DATA, TRUST):
        flag.add_to(edge)
    add_flags(edge, "fleet", "creds")
    _add_edge_tuning(edge)
    _add_edge_policy(edge)
    edge.set_defaults(func=cmd_edge)


def _add_edge_tuning(edge: argparse.ArgumentParser) -> None:
    """Flow control, connection and telemetry settings."""
    edge.add_argument(
        "--window",
        type=int,
        default=DEFAULT_WINDOW,
        help="chunks in flight at most (flow control; "
        f"{DEFAULT_WINDOW * DEFAULT_CHUNK_SIZE // MIB} MiB at the default chunk size)",
    )
    edge.add_argument(
        "--stall-timeout",
        type=float,
        default=10.0,
        help="seconds without progress before asking again",
    )
    edge.add_argument("--keepalive", type=int, default=30, help="MQTT keepalive in seconds")
    edge.add_argument(
        "--reconnect-min",
        type=float,
        default=0.5,
        help="first reconnect delay in seconds; doubles per failed attempt (jittered)",
    )
    edge.add_argument(
        "--reconnect-max", type=float, default=30.0, help="reconnect delay cap in seconds"
    )
    TELEMETRY_INTERVAL.add_to(edge)
    DRIFT_EPSILON.add_to(edge)
    edge.add_argument(
        "--telemetry-queue",
        type=int,
        default=10_000,
        help="telemetry messages kept on disk while offline; the oldest go beyond it",
    )


def _add_edge_policy(edge: argparse.ArgumentParser) -> None:
    """The local endpoint, the device's labels, and when and what it may activate."""
    HTTP.add_to(edge)
    edge.add_argument(
        "--tag",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a label reported in the device profile; repeatable",
    )
    MAINTENANCE_WINDOW.add_to(edge)
    edge.add_argument(
        "--pin",
        action="append",
        default=[],
        metavar="NAME@VERSION",
        help="hold this version of a model: no other is downloaded or activated; repeatable; "
        "a pushed fleet config overrides it",
    )


def run_until_signal(run: Callable[[threading.Event], None]) -> int:
    """``run(stop)`` until SIGTERM or SIGINT sets ``stop``; 130 after SIGINT (Ctrl-C)."""
    stop = threading.Event()
    interrupted: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        interrupted.append(signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    run(stop)
    return EXIT_INTERRUPTED if interrupted and interrupted[0] == signal.SIGINT else EXIT_OK


def cmd_coordinator(args: argparse.Namespace) -> int:
    from coordinator.service import Coordinator, CoordinatorConfig

    if args.retention_days <= 0:
        raise CommandError("--retention-days must be positive")
    for kind in ("request", "report"):
        if getattr(args, f"{kind}_rate") <= 0 or getattr(args, f"{kind}_burst") < 1:
            raise CommandError(f"need --{kind}-rate > 0 and --{kind}-burst >= 1")
    creds = load_creds(args, "coordinator")
    config = CoordinatorConfig(
        broker_url=args.broker,
        db_path=args.db,
        keydir=args.keys,
        fleet=args.fleet,
        retention_days=args.retention_days,
        creds=creds,
        request_rate=args.request_rate,
        request_burst=args.request_burst,
        report_rate=args.report_rate,
        report_burst=args.report_burst,
        broker_kind=args.broker_kind,
    )
    return run_until_signal(Coordinator(config).run_forever)


def cmd_edge(args: argparse.Namespace) -> int:
    from edge_node import EdgeAgent, EdgeConfig
    from protocol import MaintenanceWindow, parse_pins

    if not 0 < args.reconnect_min <= args.reconnect_max:
        raise CommandError("need 0 < --reconnect-min <= --reconnect-max")
    if args.telemetry_interval <= 0:
        raise CommandError("--telemetry-interval must be positive")
    if args.drift_epsilon is not None and not args.drift_epsilon > 0:
        raise CommandError("--drift-epsilon must be positive")
    creds = load_creds(args, "device")
    device = args.id or (creds.username if creds is not None else None)
    if device is None:
        raise CommandError("--id is required (or --creds: a device's username is its id)")
    if creds is not None and device != creds.username:
        raise CommandError(
            f"--id {device} is not the credentials' username {creds.username}: the broker "
            f"lets them publish only under devices/{creds.username}/"
        )
    config = EdgeConfig(
        broker_url=args.broker,
        device_id=device,
        data_dir=args.data,
        trust_path=args.trust,
        fleet=args.fleet,
        window=args.window,
        stall_timeout=args.stall_timeout,
        keepalive=args.keepalive,
        reconnect_min=args.reconnect_min,
        reconnect_max=args.reconnect_max,
        telemetry_interval=args.telemetry_interval,
        telemetry_queue=args.telemetry_queue,
        drift_epsilon=args.drift_epsilon,
        http=parse_http(args.http),
        tags=parse_tags(args.tag),
        creds=creds,
        maintenance_window=str(MaintenanceWindow.parse(args.maintenance_window))
        if args.maintenance_window
        else None,
        pins=parse_pins(",".join(args.pin)),
    )
    agent = EdgeAgent(config)
    return run_until_signal(agent.run_forever)
